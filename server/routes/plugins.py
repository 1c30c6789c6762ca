"""``POST /plugins/{name}/{path}``: the seed's plugin HTTP surface; ``GET /plugins``.

Bodies are ``PluginRequest`` JSON (``data``, camelCase ``context``, ``isStatusCheck``,
``status``); replies are ``InvocableResponse`` JSON (``data``, ``status`` as a task with
``state``, ``statusMessage``...). An error is both: ``status.state = "failed"`` with the
code and message, and the usual ``{"error": {code, message, suggestion}}`` with a fitting
HTTP status. The work is done by :class:`streaming.plugin_host.PluginHost`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.auth import AuthConfig, new_owner, require_key
from streaming.server.context import read_json
from streaming.server.errors import JSONResponse
from streaming.server.settings import ServerSettings
from streaming.server.watch import ClientGone, ClientWatch

from streaming.errors import StreamingError
from streaming.plugin.request import TaskState
from streaming.plugin_host import PluginHost
from streaming.runtime import Runtime

__all__ = ["ROUTES", "build_host"]


def build_host(settings: ServerSettings, runtime: Runtime) -> PluginHost:
    """The built-in plugin instances plus ``settings.plugins``, bound to ``runtime``.

    Raises:
        InvalidRequestError: a configured plugin cannot be loaded.
    """
    from streaming.builtins import BUILTIN_PLUGINS

    host = PluginHost(max_import_bytes=settings.max_body_bytes)
    for name, spec in {**BUILTIN_PLUGINS, **settings.plugins}.items():
        host.register(name, spec, settings.plugin_config.get(name))
    host.bind(runtime)
    return host


def host_of(request: Request) -> PluginHost:
    host: PluginHost = request.app.state.plugins
    return host


def _failed(exc: StreamingError) -> JSONResponse:
    body: dict[str, Any] = {
        "data": None,
        "status": {
            "state": TaskState.FAILED.value,
            "statusCode": exc.code,
            "statusMessage": exc.message,
            "statusSuggestion": exc.suggestion,
        },
        "error": exc.to_dict(),
    }
    return JSONResponse(body, status_code=exc.status)


async def call(request: Request) -> Response:
    require_key(request)
    owner = new_owner(request)
    body = await read_json(request)
    name, path = request.path_params["name"], request.path_params["path"]
    try:
        # A call that waits for a generation (``generate``) notices a client that left.
        response = await ClientWatch().watch(request.receive, host_of(request).call(name, path, body, owner=owner))
    except StreamingError as exc:
        return _failed(exc)
    except ClientGone:
        return Response(status_code=499)  # nobody reads it
    out = response.model_dump(mode="json", by_alias=True, exclude={"http"})
    status = out.get("status") or {}
    remote = status.get("remoteStatusInput")
    auth: AuthConfig = request.app.state.auth
    if isinstance(remote, dict) and remote.get("generation_id") and auth.enabled:
        remote["read_token"] = auth.read_token(str(remote["generation_id"]))
    code = 202 if status.get("state") == TaskState.RUNNING.value else 200
    return JSONResponse(out, status_code=code)


async def listing(request: Request) -> Response:
    require_key(request)
    return JSONResponse({"plugins": host_of(request).describe()})


ROUTES = [
    Route("/plugins", listing, methods=["GET"]),
    Route("/plugins/{name}/{path}", call, methods=["POST"]),
]
