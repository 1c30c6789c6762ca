"""``TrainablePluginService``: a plugin whose work needs a trained :class:`TrainableModel`.

A trainable plugin implements :meth:`~TrainablePluginService.run_with_model` instead of
``run``: ``run`` loads the instance's ``default`` checkpoint (through the per-process model
cache) and hands it over. ``train`` builds a fresh model, gives it the instance's config,
trains it (in a worker thread) and saves it with ``save_remote``; a request with
``isStatusCheck`` goes to ``train_status`` instead.

Where checkpoints are kept is :attr:`TrainablePluginService.archives`: the host sets it to
the store's archives; on its own a plugin keeps them in memory.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, TypeVar

import anyio.to_thread

from streaming.errors import PluginError
from streaming.plugin.inputs import CheckpointParams, TrainingParameterPluginInput, TrainPluginInput
from streaming.plugin.outputs import TrainingParameterPluginOutput, TrainPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest, Task, TaskState
from streaming.plugin.service import PluginService
from streaming.plugin.trainable_model import DEFAULT_CHECKPOINT, TrainableModel, archive_key
from streaming.stores.archives import ArchiveStore, MemoryArchives

__all__ = ["TrainablePluginService"]

IN = TypeVar("IN")
OUT = TypeVar("OUT")


class TrainablePluginService(PluginService[IN, OUT], ABC):
    """Base of ``TrainableGenerator`` and ``TrainableTagger`` (and any trainable plugin)."""

    _archives: ArchiveStore | None = None

    @property
    def archives(self) -> ArchiveStore:
        """Where this plugin's checkpoints are kept (memory unless a host set the store's)."""
        if self._archives is None:
            self._archives = MemoryArchives()
        return self._archives

    @archives.setter
    def archives(self, value: ArchiveStore) -> None:
        self._archives = value

    @abstractmethod
    def model_cls(self) -> type[TrainableModel[Any]]:
        """The class of this plugin's model."""

    def instance_id(self, request: PluginRequest[Any] | None = None) -> str:
        """The plugin instance whose checkpoints this request reads and writes.

        The configured context wins over the request's: a request never reaches another
        instance's checkpoints.
        """
        for ctx in (self.context, request.context if request is not None else None):
            if ctx is not None:
                found = ctx.plugin_instance_id or ctx.plugin_instance_handle
                if found:
                    return found
        return "default"

    async def chat_unavailable_reason(self) -> str | None:
        """None once the instance has a ``default`` checkpoint; else how to train it."""
        name = self.instance_id()
        if await self.archives.archive_digest(archive_key(name, DEFAULT_CHECKPOINT)) is None:
            return f"not trained yet: train it first (POST /plugins/{name}/train, or the {name}.train generator)"
        return None

    async def load_model(
        self, request: PluginRequest[Any] | None = None, checkpoint_handle: str | None = None
    ) -> TrainableModel[Any]:
        """The instance's checkpoint (``default`` if None), cached per process.

        Raises:
            NotFoundError: code ``no_checkpoint``: it was never trained.
        """
        return await self.model_cls().load_remote(
            self.archives,
            self.instance_id(request),
            checkpoint_handle,
            use_cache=True,
            plugin_instance_config=self.config,
        )

    def new_model(self) -> TrainableModel[Any]:
        """A fresh, untrained model that has received this instance's config."""
        model = self.model_cls()()
        model.receive_config(self.config)
        return model

    async def run(self, request: PluginRequest[IN]) -> Any:
        """Load the default checkpoint and call :meth:`run_with_model`."""
        model = await self.load_model(request)
        result = self.run_with_model(request, model)
        if inspect.isawaitable(result):
            result = await result
        return result

    @abstractmethod
    def run_with_model(self, request: PluginRequest[IN], model: TrainableModel[Any]) -> Any:
        """Rather than ``run(request)``, a trainable plugin implements this."""

    @abstractmethod
    def get_training_parameters(
        self, request: PluginRequest[TrainingParameterPluginInput]
    ) -> InvocableResponse[TrainingParameterPluginOutput]:
        """The parameters a training run of this plugin should use."""

    def get_training_parameters_endpoint(self, **kwargs: Any) -> InvocableResponse[TrainingParameterPluginOutput]:
        """``POST /getTrainingParameters``."""
        request = PluginRequest[TrainingParameterPluginInput].model_validate(kwargs)
        return self.get_training_parameters(request)

    async def train(
        self, request: PluginRequest[TrainPluginInput], model: TrainableModel[Any]
    ) -> InvocableResponse[TrainPluginOutput]:
        """Train ``model`` (in a worker thread), save it as the instance's checkpoint
        (``training_params["checkpoint_handle"]``, default ``default``), and report.

        Nothing is saved unless the training succeeded: a training that raises or reports
        a failure leaves every checkpoint as it was.

        Raises:
            PluginError: the model's training reported a failure.
            ValueError: the checkpoint parameters are bad (as :meth:`TrainPluginInput.checkpoint`).
        """
        # Where it will be saved is checked before any training (a bad handle: no run).
        checkpoint = request.data.checkpoint() if request.data is not None else CheckpointParams()
        response = await anyio.to_thread.run_sync(model.train, request)
        if response.status is not None and response.status.state == TaskState.FAILED:
            raise PluginError(
                response.status.status_message or "training failed",
                code=response.status.status_code or "training_failed",
                suggestion=response.status.status_suggestion,
            )
        output = response.data or TrainPluginOutput()
        output.archive_path = await model.save_remote(
            self.archives,
            self.instance_id(request),
            checkpoint.checkpoint_handle,
            set_as_default=checkpoint.set_as_default,
        )
        return InvocableResponse(data=output, status=Task(state=TaskState.SUCCEEDED))

    def train_status(
        self, request: PluginRequest[TrainPluginInput], model: TrainableModel[Any]
    ) -> InvocableResponse[TrainPluginOutput]:
        """The status of a training job running outside this process (asks the model)."""
        return model.train_status(request)

    async def train_endpoint(self, **kwargs: Any) -> InvocableResponse[TrainPluginOutput]:
        """``POST /train`` for a plugin served on its own: trains to the end, then replies."""
        request = PluginRequest[TrainPluginInput].model_validate(kwargs)
        model = self.new_model()
        if request.is_status_check:
            return self.train_status(request, model)
        return await self.train(request, model)
