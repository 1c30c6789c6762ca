"""Hosting plugin instances: the seed's ``POST /plugins/{instance}/{path}`` calls, transport-free.

A :class:`PluginHost` holds named plugin instances of every kind (generators, streaming
generators, taggers, embedders, file importers, trainable plugins), binds them to a
:class:`~streaming.runtime.Runtime` and answers :meth:`PluginHost.call` with an
:class:`~streaming.plugin.request.InvocableResponse`:

==========================  ==========================================================
path                        what
==========================  ==========================================================
``generate``                any generator: runs as a generation (events streamed, stored),
                            replies with its output blocks once it ends
``determineOutputBlockTypes``  a streaming generator's block types
``streamResultToBlocks``    starts a generation; replies ``running`` with its id and
                            ``events_url`` at once
``tag``                     a tagger (tags written back to a stored file) or an embedder
``import``                  a file importer; the bytes become a stored file
``getTrainingParameters``   a trainable plugin's parameters
``train``                   starts a training generation (progress events); with
                            ``isStatusCheck`` and ``status.taskId``, its status
==========================  ==========================================================

Training runs as a generation of the adapter :class:`TrainingRun` (registered as
``<instance>.train``): its first block streams progress as JSON lines, its second holds
the final ``TrainPluginOutput``. So the same SSE/WebSocket machinery streams it, and
cancel works on it.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from streaming.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PluginError,
    StreamingError,
)
from streaming.model import Block, File, Generation, GenerationState, MimeTypes, OnDisconnect, Tag
from streaming.plugin.embedder import Embedder
from streaming.plugin.file_importer import FileImporter
from streaming.plugin.generator import Generator
from streaming.plugin.inputs import (
    BlockAndTagPluginInput,
    FileImportPluginInput,
    RawBlockAndTagPluginInput,
    TrainingParameterPluginInput,
    TrainPluginInput,
)
from streaming.plugin.outputs import (
    BlockAndTagPluginOutput,
    EmbeddedItemsPluginOutput,
    RawBlockAndTagPluginOutput,
    RawDataPluginOutput,
    StreamCompletePluginOutput,
    TrainPluginOutput,
)
from streaming.plugin.request import (
    InvocableResponse,
    PluginRequest,
    PluginRequestContext,
    Task,
    TaskState,
)
from streaming.plugin.service import PluginService, instantiate
from streaming.plugin.streaming_generator import StreamingGenerator
from streaming.plugin.tagger import Tagger, TrainableTagger
from streaming.plugin.trainable_model import check_handle
from streaming.plugin.trainable_service import TrainablePluginService
from streaming.requests import BlockInput, GenerateRequest
from streaming.runtime import Runtime
from streaming.stores.archives import archives_for

__all__ = ["PATHS", "PROGRESS_MIME", "PluginHost", "TrainingRun"]

#: the seed's plugin paths
PATHS = (
    "generate",
    "determineOutputBlockTypes",
    "streamResultToBlocks",
    "tag",
    "import",
    "getTrainingParameters",
    "train",
)

#: the MIME type of a training generation's progress block (one JSON object a line)
PROGRESS_MIME = "application/x-ndjson"


def _kinds(plugin: PluginService[Any, Any]) -> list[str]:
    out = []
    if isinstance(plugin, (Generator, StreamingGenerator)):
        out.append("generate")
    if isinstance(plugin, StreamingGenerator):
        out += ["determineOutputBlockTypes", "streamResultToBlocks"]
    if isinstance(plugin, (Tagger, TrainableTagger, Embedder)):
        out.append("tag")
    if isinstance(plugin, FileImporter):
        out.append("import")
    if isinstance(plugin, TrainablePluginService):
        out += ["getTrainingParameters", "train"]
    return out


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _call_plugin(fn: Any, *args: Any) -> Any:
    """Call a plugin method: a coroutine is awaited, blocking code runs in a worker thread."""
    import anyio.to_thread

    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await _maybe_await(await anyio.to_thread.run_sync(fn, *args))


def _unwrap(response: Any, expected: type[BaseModel]) -> Any:
    """The ``data`` of a plugin's reply, checked; a failed task becomes a PluginError."""
    if isinstance(response, InvocableResponse):
        response = response.checked_data()
    if isinstance(response, expected):
        return response
    if isinstance(response, dict):
        try:
            return expected.model_validate(response)
        except ValidationError as exc:
            raise PluginError(f"the plugin returned a bad {expected.__name__}: {exc.error_count()} errors") from exc
    raise PluginError(f"the plugin returned {type(response).__name__}, not {expected.__name__}")


def _invalid(what: str, exc: ValidationError) -> InvalidRequestError:
    problems = "; ".join(".".join(str(p) for p in e.get("loc", ())) + ": " + e["msg"] for e in exc.errors()[:5])
    return InvalidRequestError(
        f"invalid {what}: {problems}", suggestion="send {\"data\": {...}} shaped as the seed's " + what
    )


class TrainingRun(StreamingGenerator):
    """The adapter that runs a trainable plugin's training as a generation.

    Options: ``train_input`` (a ``TrainPluginInput`` as JSON). Writes progress JSON lines
    to its first block and the final ``TrainPluginOutput`` JSON to its second.
    """

    def __init__(self, plugin: TrainablePluginService[Any, Any], name: str) -> None:
        super().__init__(context=PluginRequestContext(plugin_handle=f"{name}.train", plugin_instance_handle=name))
        self.plugin = plugin
        self.name = name

    @property
    def description(self) -> str:
        return f"trains {self.name} from the text you send (progress as JSON lines, then the result)"

    def chat_unavailable_reason(self) -> str:
        return f"a training run: it trains {self.name} from your text and reports progress, it does not reply"

    def determine_output_block_types(self, request: Any) -> list[str]:  # type: ignore[override]
        return [PROGRESS_MIME, MimeTypes.JSON]

    async def run(self, request: Any) -> None:
        progress_block, result_block = request.data.output_blocks[:2]
        raw = request.data.options.get("train_input") or {}
        try:
            train_input = TrainPluginInput.model_validate(raw)
        except ValidationError as exc:
            raise InvalidRequestError(f"bad train_input: {exc.error_count()} errors") from exc
        if train_input.training_file is None and request.data.blocks:
            # Started through POST /generations: the input blocks are the training data.
            train_input.training_file = File(blocks=[b for b in request.data.blocks if b.is_text])
        plugin = self.plugin
        preq = PluginRequest[TrainPluginInput](data=train_input, context=plugin.context)
        model = plugin.new_model()

        def progress(item: dict[str, Any]) -> None:
            progress_block.append_stream(json.dumps(item, separators=(",", ":")) + "\n")

        model.progress_hook = progress
        progress({"event": "started", "plugin": self.name})
        response = await plugin.train(preq, model)
        output = _unwrap(response, TrainPluginOutput)
        progress({"event": "finished", "archive_path": output.archive_path})
        progress_block.finish_stream()
        result_block.append_stream(output.model_dump_json())
        result_block.finish_stream()


class PluginHost:
    """Named plugin instances, bound to a runtime, called by path."""

    def __init__(self, *, max_import_bytes: int = 10 << 20, max_blocks: int = 10_000) -> None:
        self.plugins: dict[str, PluginService[Any, Any]] = {}
        self.max_import_bytes = max_import_bytes
        self.max_blocks = max_blocks
        self.runtime: Runtime | None = None

    def register(
        self,
        name: str,
        plugin: PluginService[Any, Any] | type[PluginService[Any, Any]] | str,
        config: Mapping[str, Any] | None = None,
    ) -> PluginService[Any, Any]:
        """Add an instance named ``name`` (an instance, a class, or ``"module:Class"``).

        Raises:
            InvalidRequestError: a bad name, or ``plugin`` is not a plugin of a known kind.
        """
        check_handle(name, "plugin instance name")
        instance = instantiate(name, plugin, config, (PluginService,))
        if not _kinds(instance):
            raise InvalidRequestError(f"{type(instance).__name__} is not a plugin kind this host serves")
        self.plugins[name] = instance
        if self.runtime is not None:
            self._bind_one(name, instance)
        return instance

    def bind(self, runtime: Runtime) -> None:
        """Host the generators (and training runs) in ``runtime``; keep checkpoints in its store."""
        self.runtime = runtime
        for name, plugin in self.plugins.items():
            self._bind_one(name, plugin)

    def _bind_one(self, name: str, plugin: PluginService[Any, Any]) -> None:
        runtime = self.runtime
        assert runtime is not None
        if isinstance(plugin, TrainablePluginService):
            plugin.archives = archives_for(runtime.store)
            runtime.generators.register(f"{name}.train", TrainingRun(plugin, name))
        if isinstance(plugin, (Generator, StreamingGenerator)):
            runtime.generators.register(name, plugin)

    def describe(self) -> dict[str, Any]:
        """Each instance: its class and the paths it answers."""
        return {
            name: {"class": f"{type(p).__module__}:{type(p).__name__}", "paths": _kinds(p)}
            for name, p in sorted(self.plugins.items())
        }

    def get(self, name: str) -> PluginService[Any, Any]:
        """Raises NotFoundError (code ``unknown_plugin``)."""
        try:
            return self.plugins[name]
        except KeyError:
            raise NotFoundError(
                f"no plugin instance named {name!r}",
                code="unknown_plugin",
                suggestion="hosted instances: " + (", ".join(sorted(self.plugins)) or "none"),
            ) from None

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise StreamingError("the plugin host is not bound to a runtime", code="not_ready")
        return self.runtime

    # -- calls --

    async def call(self, name: str, path: str, body: Any, *, owner: str | None = None) -> InvocableResponse[Any]:
        """Answer ``POST /plugins/{name}/{path}`` with ``body`` (a ``PluginRequest`` as JSON).

        Raises:
            NotFoundError: unknown instance (``unknown_plugin``) or path
                (``unsupported_path``), or a file / task that is not there.
            InvalidRequestError: the body does not fit the path's input.
            PayloadTooLargeError: too many blocks, or imported data over the limit.
            PluginError: the plugin failed.
        """
        plugin = self.get(name)
        if path not in PATHS:
            raise NotFoundError(
                f"no plugin path {path!r}", code="unsupported_path", suggestion="paths: " + ", ".join(PATHS)
            )
        if path not in _kinds(plugin):
            raise NotFoundError(
                f"plugin {name!r} ({type(plugin).__name__}) does not answer {path!r}",
                code="unsupported_path",
                suggestion="it answers: " + ", ".join(_kinds(plugin)),
            )
        if not isinstance(body, dict):
            raise InvalidRequestError("the body must be a PluginRequest object: {data, context, isStatusCheck}")
        handler = getattr(self, "_" + path)
        result: InvocableResponse[Any] = await handler(name, plugin, body, owner)
        return result

    @staticmethod
    def _request(model: type[BaseModel], body: dict[str, Any], plugin: PluginService[Any, Any]) -> PluginRequest[Any]:
        try:
            request: PluginRequest[Any] = PluginRequest[model].model_validate(body)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise _invalid(model.__name__, exc) from exc
        if request.data is None:
            raise InvalidRequestError(f"'data' is required: a {model.__name__}")
        # The hosted instance is who answers: its context, not the caller's.
        request.context = plugin.context
        return request

    def _check_blocks(self, blocks: list[Block]) -> None:
        if len(blocks) > self.max_blocks:
            raise PayloadTooLargeError(f"more than {self.max_blocks} blocks")

    async def _generation_request(
        self, name: str, body: dict[str, Any], plugin: PluginService[Any, Any]
    ) -> GenerateRequest:
        req = self._request(RawBlockAndTagPluginInput, body, plugin)
        data = req.data
        assert isinstance(data, RawBlockAndTagPluginInput)
        self._check_blocks(data.blocks)
        try:
            # Its capability blocks become the generation's requested capabilities here.
            return GenerateRequest(
                generator=name,
                blocks=[BlockInput(text=b.text, mime_type=b.mime_type, tags=b.tags) for b in data.blocks],
                options=data.options,
            )
        except ValidationError as exc:
            raise _invalid(RawBlockAndTagPluginInput.__name__, exc) from exc

    async def _generate(
        self, name: str, plugin: PluginService[Any, Any], body: dict[str, Any], owner: str | None
    ) -> InvocableResponse[Any]:
        runtime = self._runtime()
        gen = await runtime.start(await self._generation_request(name, body, plugin), subscribed=True, owner=owner)
        async for batch in runtime.subscribe(gen.id):
            if batch and batch[-1].terminal:
                break
        final = await runtime.get_generation(gen.id)
        if final.state is not GenerationState.SUCCEEDED:
            err = final.error
            code = err.code if err else final.state.value
            message = err.message if err else f"the generation ended {final.state.value}"
            suggestion = err.suggestion if err else None
            # A failure of the caller's making keeps its status (an untrained model: 404).
            cls: type[StreamingError] = PluginError
            if code in ("no_checkpoint", "not_found"):
                cls = NotFoundError
            elif code in ("invalid_request", "unsupported_capability"):
                cls = InvalidRequestError
            raise cls(message, code=code, suggestion=suggestion)
        blocks = await runtime.get_generation_blocks(final)
        return InvocableResponse(
            data=RawBlockAndTagPluginOutput(blocks=blocks, usage=final.usage),
            status=Task(task_id=gen.id, state=TaskState.SUCCEEDED),
        )

    async def _determineOutputBlockTypes(  # noqa: N802 - the seed's path
        self, name: str, plugin: PluginService[Any, Any], body: dict[str, Any], owner: str | None
    ) -> InvocableResponse[Any]:
        assert isinstance(plugin, StreamingGenerator)
        req = self._request(RawBlockAndTagPluginInput, body, plugin)
        assert isinstance(req.data, RawBlockAndTagPluginInput)
        # Capabilities are checked before the plugin is asked anything, as for a generation.
        plugin.requested_capabilities(req.data.blocks)
        from streaming.plugin.outputs import BlockTypePluginOutput

        response = await _maybe_await(plugin.determine_output_block_types(req))
        if isinstance(response, list):
            response = BlockTypePluginOutput(block_types_to_create=response)
        return InvocableResponse(data=_unwrap(response, BlockTypePluginOutput), status=Task())

    async def _streamResultToBlocks(  # noqa: N802 - the seed's path
        self, name: str, plugin: PluginService[Any, Any], body: dict[str, Any], owner: str | None
    ) -> InvocableResponse[Any]:
        runtime = self._runtime()
        gen = await runtime.start(await self._generation_request(name, body, plugin), owner=owner)
        return self._running(gen)

    @staticmethod
    def _running(gen: Generation) -> InvocableResponse[Any]:
        return InvocableResponse(
            data=StreamCompletePluginOutput(),
            status=Task(
                task_id=gen.id,
                state=TaskState.RUNNING,
                status_message="started",
                remote_status_input={
                    "generation_id": gen.id,
                    "events_url": f"/generations/{gen.id}/events",
                    "output_block_ids": list(gen.output_block_ids),
                },
            ),
        )

    async def _file(self, file_id: str, owner: str | None) -> File:
        runtime = self._runtime()
        file = await runtime.store.get_file(file_id)
        if file is None or file.owner != owner:
            raise NotFoundError(f"no file {file_id!r}")
        return file

    async def _tag(
        self, name: str, plugin: PluginService[Any, Any], body: dict[str, Any], owner: str | None
    ) -> InvocableResponse[Any]:
        data = body.get("data")
        stored: File | None = None
        if isinstance(data, dict) and "file" not in data and isinstance(data.get("file_id", data.get("fileId")), str):
            # An extension of the seed: tag a file the runtime keeps, by id.
            stored = await self._file(str(data.get("file_id", data.get("fileId"))), owner)
            body = {**body, "data": {"file": stored.model_dump(mode="json")}}
        req = self._request(BlockAndTagPluginInput, body, plugin)
        assert isinstance(req.data, BlockAndTagPluginInput)
        self._check_blocks(req.data.file.blocks)
        response = await _call_plugin(plugin.run, req)
        if isinstance(plugin, Embedder):
            out = _unwrap(response, EmbeddedItemsPluginOutput)
            return InvocableResponse(data=out, status=Task())
        tagged = _unwrap(response, BlockAndTagPluginOutput)
        if stored is not None:
            await self._write_tags(stored, tagged.file)
            tagged.file.id = stored.id
        return InvocableResponse(data=tagged, status=Task())

    async def _write_tags(self, stored: File, tagged: File) -> None:
        """Keep the tags a tagger added on the stored file's blocks (matched by id)."""
        by_id = {b.id: b for b in tagged.blocks}
        for block in stored.blocks:
            new = by_id.get(block.id)
            if new is not None:
                block.tags = [Tag.model_validate(t.model_dump()) for t in new.tags]
        stored.tags = list(tagged.tags) or stored.tags
        await self._runtime().store.put_file(stored)

    async def _import(
        self, name: str, plugin: PluginService[Any, Any], body: dict[str, Any], owner: str | None
    ) -> InvocableResponse[Any]:
        req = self._request(FileImportPluginInput, body, plugin)
        data = req.data
        assert isinstance(data, FileImportPluginInput)
        given = [k for k in ("value", "data", "url") if getattr(data, k) is not None]
        if len(given) != 1:
            raise InvalidRequestError("give exactly one of 'value', 'data' (base64) or 'url'")
        if data.data is not None:
            if len(data.data) > self.max_import_bytes * 4 // 3 + 4:
                raise PayloadTooLargeError(f"the data is over {self.max_import_bytes} bytes")
            try:
                base64.b64decode(data.data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidRequestError(
                    f"'data' is not valid base64: {exc}", suggestion="send the bytes base64-encoded"
                ) from exc
        if data.value is not None and len(data.value.encode()) > self.max_import_bytes:
            raise PayloadTooLargeError(f"the value is over {self.max_import_bytes} bytes")
        response = await _call_plugin(plugin.run, req)
        out: RawDataPluginOutput = _unwrap(response, RawDataPluginOutput)
        try:
            raw = base64.b64decode(out.data or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PluginError(f"the importer returned data that is not base64: {exc}") from exc
        if len(raw) > self.max_import_bytes:
            raise PayloadTooLargeError(f"the imported data is over {self.max_import_bytes} bytes")
        out.file_id = await self._store_import(raw, out, data.blockify, owner)
        return InvocableResponse(data=out, status=Task())

    async def _store_import(self, raw: bytes, out: RawDataPluginOutput, split: str, owner: str | None) -> str:
        mime = out.mime_type or "application/octet-stream"
        file = File(mime_type=mime, tags=list(out.tags), owner=owner)
        textual = mime.startswith("text/") or mime.endswith(("json", "xml"))
        if textual:
            text = raw.decode("utf-8", errors="replace")
            if split == "lines":
                pieces = [p.strip() for p in text.splitlines()]
            elif split == "none":
                pieces = [text]
            else:
                pieces = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
            pieces = [p for p in pieces if p]
            if len(pieces) > self.max_blocks:
                raise PayloadTooLargeError(f"the import would make more than {self.max_blocks} blocks")
            for i, piece in enumerate(pieces):
                file.blocks.append(Block(file_id=file.id, index=i, text=piece, mime_type=mime))
        await self._runtime().store.put_file(file)
        return file.id

    async def _getTrainingParameters(  # noqa: N802 - the seed's path
        self, name: str, plugin: PluginService[Any, Any], body: dict[str, Any], owner: str | None
    ) -> InvocableResponse[Any]:
        assert isinstance(plugin, TrainablePluginService)
        body = {"data": {}, **body} if body.get("data") is None else body
        req = self._request(TrainingParameterPluginInput, body, plugin)
        from streaming.plugin.outputs import TrainingParameterPluginOutput

        response = await _call_plugin(plugin.get_training_parameters, req)
        return InvocableResponse(data=_unwrap(response, TrainingParameterPluginOutput), status=Task())

    async def _train(
        self, name: str, plugin: PluginService[Any, Any], body: dict[str, Any], owner: str | None
    ) -> InvocableResponse[Any]:
        assert isinstance(plugin, TrainablePluginService)
        runtime = self._runtime()
        body = {"data": {}, **body} if body.get("data") is None else body
        req = self._request(TrainPluginInput, body, plugin)
        if req.is_status_check:
            task_id = req.status.task_id if req.status is not None else None
            if task_id:
                return await self.train_status(name, task_id, owner)
            return await _call_plugin(plugin.train_status, req, plugin.new_model())  # type: ignore[no-any-return]
        data = req.data
        assert isinstance(data, TrainPluginInput)
        if data.file_id is not None:
            data.training_file = await self._file(data.file_id, owner)
        elif data.training_file is not None:
            self._check_blocks(data.training_file.blocks)
        else:
            raise InvalidRequestError(
                "no training data", suggestion="give data.file_id (a file from /plugins/{importer}/import)"
            )
        gen = await runtime.start(
            GenerateRequest(
                generator=f"{name}.train",
                blocks=[],
                options={"train_input": data.model_dump(mode="json")},
                on_disconnect=OnDisconnect.CONTINUE,
            ),
            owner=owner,
        )
        return self._running(gen)

    async def train_status(self, name: str, task_id: str, owner: str | None) -> InvocableResponse[Any]:
        """The state of training generation ``task_id`` of instance ``name``.

        Raises:
            NotFoundError: no such training generation (of this instance, for this owner).
        """
        runtime = self._runtime()
        try:
            gen = await runtime.get_generation(task_id)
        except NotFoundError:
            gen = None
        if gen is None or gen.generator != f"{name}.train" or gen.owner != owner:
            raise NotFoundError(f"no training task {task_id!r} of plugin {name!r}")
        blocks = await runtime.get_generation_blocks(gen)
        progress: dict[str, Any] = {}
        if blocks:
            lines = [ln for ln in blocks[0].text.splitlines() if ln.strip()]
            if lines:
                try:
                    progress = json.loads(lines[-1])
                except json.JSONDecodeError:
                    progress = {}
        if gen.state is GenerationState.SUCCEEDED and len(blocks) > 1:
            output = TrainPluginOutput.model_validate_json(blocks[1].text)
            output.training_progress = output.training_progress or progress
            return InvocableResponse(data=output, status=Task(task_id=gen.id, state=TaskState.SUCCEEDED))
        if gen.state.finished:
            err = gen.error
            return InvocableResponse(
                data=TrainPluginOutput(training_progress=progress),
                status=Task(
                    task_id=gen.id,
                    state=TaskState.FAILED if gen.state is not GenerationState.CANCELLED else TaskState.CANCELLED,
                    status_code=err.code if err else gen.state.value,
                    status_message=err.message if err else f"training {gen.state.value}",
                    status_suggestion=err.suggestion if err else None,
                ),
            )
        return InvocableResponse(
            data=TrainPluginOutput(training_progress=progress),
            status=Task(
                task_id=gen.id,
                state=TaskState.RUNNING,
                status_message=json.dumps(progress) if progress else "running",
                remote_status_input={"generation_id": gen.id, "events_url": f"/generations/{gen.id}/events"},
            ),
        )
