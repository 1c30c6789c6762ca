"""The envelope every plugin call travels in: ``PluginRequest`` and ``InvocableResponse``.

Field names are snake_case in Python; the seed's camelCase names (``pluginInstanceId``,
``isStatusCheck``) are accepted on input and used by ``model_dump(by_alias=True)``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "Http",
    "InvocableResponse",
    "PluginRequest",
    "PluginRequestContext",
    "Task",
    "TaskState",
]

T = TypeVar("T")


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class PluginRequestContext(CamelModel):
    """Which plugin, version and instance a request is for."""

    plugin_id: str | None = None
    plugin_handle: str | None = None
    plugin_version_id: str | None = None
    plugin_version_handle: str | None = None
    plugin_instance_id: str | None = None
    plugin_instance_handle: str | None = None


class TaskState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Task(CamelModel):
    """The status of an invocation (the seed's Task)."""

    task_id: str | None = None
    state: TaskState = TaskState.SUCCEEDED
    status_message: str | None = None
    status_suggestion: str | None = None
    status_code: str | None = None
    remote_status_input: dict[str, Any] | None = None


# pydantic keeps parametrized generics (``PluginRequest[X]``) only weakly, so a hot path
# that writes ``PluginRequest[X](...)`` would rebuild the class and its schema each time.
_PARAMETRIZED: dict[tuple[type, Any], Any] = {}


def _memoized(cls: Any, params: Any, build: Any) -> Any:
    key = (cls, params)
    found = _PARAMETRIZED.get(key)
    if found is None:
        found = _PARAMETRIZED[key] = build(params)
    return found


class PluginRequest(BaseModel, Generic[T]):
    """A request to a plugin: its ``data``, the ``context``, and a status check flag."""

    def __class_getitem__(cls, params: Any) -> Any:
        return _memoized(cls, params, super().__class_getitem__)

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    data: T | None = None
    context: PluginRequestContext | None = None
    status: Task | None = None
    is_status_check: bool = Field(
        default=False,
        validation_alias=AliasChoices("is_status_check", "isStatusCheck"),
        serialization_alias="isStatusCheck",
    )


class Http(BaseModel):
    status: int = 200
    headers: dict[str, str] = Field(default_factory=dict)


class InvocableResponse(BaseModel, Generic[T]):
    """A plugin's reply: ``data``, plus a ``status`` task (failed carries the error)."""

    def __class_getitem__(cls, params: Any) -> Any:
        return _memoized(cls, params, super().__class_getitem__)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    data: T | None = None
    status: Task | None = None
    http: Http | None = None

    def checked_data(self, what: str = "the plugin failed") -> T | None:
        """``data``, unless the status says the call failed.

        Raises:
            PluginError: the status is ``failed`` (its code, message and suggestion).
        """
        status = self.status
        if status is not None and status.state == TaskState.FAILED:
            from streaming.errors import PluginError

            raise PluginError(
                status.status_message or what,
                code=status.status_code or "plugin_error",
                suggestion=status.status_suggestion,
            )
        return self.data

    @classmethod
    def error(
        cls, code: str, message: str, suggestion: str | None = None, http_status: int = 500
    ) -> InvocableResponse[T]:
        return cls(
            status=Task(
                state=TaskState.FAILED,
                status_code=code,
                status_message=message,
                status_suggestion=suggestion,
            ),
            http=Http(status=http_status),
        )
