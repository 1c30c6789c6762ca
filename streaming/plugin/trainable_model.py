"""``TrainableModel``: the state of a trainable plugin, saved to and loaded from archives.

All of a model's state goes through a folder (:meth:`TrainableModel.save_to_folder`,
:meth:`TrainableModel.load_from_folder`). :meth:`TrainableModel.save_remote` zips that
folder and keeps it in an :class:`~streaming.stores.archives.ArchiveStore` (the store's, so
it survives restarts and, with Redis, is shared by every process) as
``<plugin_instance_id>/<handle>.zip``, and unless ``set_as_default=False`` also as
``<plugin_instance_id>/default.zip``. :meth:`TrainableModel.load_remote` downloads, unzips
and loads one, through a per-process cache keyed by class, instance and handle (a cached
model is reused only while the stored archive's digest is unchanged).

Progress: a model's :meth:`~TrainableModel.train` may call :meth:`report_progress` with a
small JSON-able dict (epoch, loss…); whoever runs the training (the runtime, through a
training generation) streams those as it goes.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import anyio.to_thread

from streaming.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from streaming.plugin.inputs import TrainPluginInput
from streaming.plugin.outputs import TrainPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest, Task, TaskState
from streaming.stores.archives import ArchiveStore, check_handle

__all__ = ["DEFAULT_CHECKPOINT", "TrainableModel", "archive_key", "check_handle", "clear_model_cache"]

ConfigType = TypeVar("ConfigType")
M = TypeVar("M", bound="TrainableModel[Any]")

#: the checkpoint loaded when none is named, and saved every time unless told otherwise
DEFAULT_CHECKPOINT = "default"

def archive_key(plugin_instance_id: str, checkpoint_handle: str) -> str:
    """``<plugin_instance_id>/<handle>.zip`` (both checked). Raises InvalidRequestError."""
    return f"{check_handle(plugin_instance_id, 'plugin instance id')}/{check_handle(checkpoint_handle)}.zip"


# (class, instance id, handle) -> (archive digest, model)
_CACHE: dict[tuple[type[Any], str, str], tuple[str, Any]] = {}
_CACHE_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Forget every cached model of this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def zip_folder(folder: Path) -> bytes:
    """The folder's files as a zip archive (paths relative to ``folder``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for root, _dirs, files in os.walk(folder):
            for name in sorted(files):
                path = Path(root) / name
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def unzip_to(data: bytes, folder: Path, max_bytes: int) -> None:
    """Unpack ``data`` into ``folder``, refusing any member that would land outside it.

    Raises:
        InvalidRequestError: not a zip, or a member with an absolute or ``..`` path.
        PayloadTooLargeError: it unpacks to more than ``max_bytes``.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InvalidRequestError(f"the checkpoint is not a zip archive: {exc}") from exc
    with archive:
        infos = archive.infolist()
        if sum(i.file_size for i in infos) > max_bytes:
            raise PayloadTooLargeError(f"the checkpoint unpacks to more than {max_bytes} bytes")
        root = folder.resolve()
        for info in infos:
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            target = (root / name).resolve()
            if name.startswith(("/", "\\")) or ".." in parts or not target.is_relative_to(root):
                raise InvalidRequestError(f"the checkpoint holds an unsafe path {name!r}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


class TrainableModel(ABC, Generic[ConfigType]):
    """Base class of trainable models (not plugins: the state a trainable plugin uses).

    Subclasses implement :meth:`save_to_folder`, :meth:`load_from_folder` and
    :meth:`train` (called in a worker thread: plain blocking code is fine).
    """

    #: largest archive a checkpoint may unpack to
    max_unpacked_bytes: ClassVar[int] = 1 << 30

    config: ConfigType | None = None
    #: set by whoever runs the training; receives each :meth:`report_progress` dict
    progress_hook: Callable[[dict[str, Any]], None] | None = None

    def receive_config(self, config: ConfigType | None) -> None:
        """Stores the plugin instance's config, so the model can use it on load or train."""
        self.config = config

    def report_progress(self, progress: dict[str, Any]) -> None:
        """Report training progress (streamed as it happens when run by the runtime).

        Raises:
            GenerationCancelledError: the training was cancelled; stop training.
        """
        if self.progress_hook is not None:
            self.progress_hook(progress)

    @abstractmethod
    def save_to_folder(self, checkpoint_path: Path) -> None:
        """Save 100% of the model's state into ``checkpoint_path`` (an existing folder)."""

    @abstractmethod
    def load_from_folder(self, checkpoint_path: Path) -> None:
        """Load 100% of the model's state from ``checkpoint_path``."""

    @abstractmethod
    def train(self, input: PluginRequest[TrainPluginInput]) -> InvocableResponse[TrainPluginOutput]:
        """Train or fine-tune, as ``input`` says; report results in the output."""

    def train_status(self, input: PluginRequest[TrainPluginInput]) -> InvocableResponse[TrainPluginOutput]:
        """The status of a training job running elsewhere (an external service).

        The default knows of no such job: in-process training is followed through its
        training generation instead.
        """
        return InvocableResponse(
            data=TrainPluginOutput(),
            status=Task(
                state=TaskState.SUCCEEDED,
                status_message="no external training job; follow the training generation's events",
            ),
        )

    # -- local checkpoints --

    @classmethod
    def load_from_local_checkpoint(cls: type[M], checkpoint_path: Path, config: Any = None) -> M:
        """A new model loaded from a folder, after :meth:`receive_config`."""
        model = cls()
        model.receive_config(config)
        model.load_from_folder(Path(checkpoint_path))
        return model

    # -- archives --

    async def save_remote(
        self,
        archives: ArchiveStore,
        plugin_instance_id: str,
        checkpoint_handle: str | None = None,
        model_parent_directory: Path | None = None,
        set_as_default: bool = True,
    ) -> str:
        """Save into ``parent/handle/``, zip it, keep it as ``<instance>/<handle>.zip`` (and
        as ``<instance>/default.zip`` unless ``set_as_default=False``); return the key.

        Raises:
            InvalidRequestError: the instance id or handle is not a safe name.
            StoreError: the archive could not be written.
        """
        handle = check_handle(checkpoint_handle or DEFAULT_CHECKPOINT)
        key = archive_key(plugin_instance_id, handle)

        def pack() -> bytes:
            with tempfile.TemporaryDirectory(dir=model_parent_directory) as parent:
                folder = Path(parent) / handle
                folder.mkdir()
                self.save_to_folder(folder)
                return zip_folder(folder)

        data = await anyio.to_thread.run_sync(pack)
        digest = await archives.put_archive(key, data)
        self._remember(plugin_instance_id, handle, digest)
        if set_as_default and handle != DEFAULT_CHECKPOINT:
            default_digest = await archives.put_archive(archive_key(plugin_instance_id, DEFAULT_CHECKPOINT), data)
            self._remember(plugin_instance_id, DEFAULT_CHECKPOINT, default_digest)
        return key

    def _remember(self, instance: str, handle: str, digest: str) -> None:
        with _CACHE_LOCK:
            _CACHE[(type(self), instance, handle)] = (digest, self)

    @classmethod
    async def load_remote(
        cls: type[M],
        archives: ArchiveStore,
        plugin_instance_id: str,
        checkpoint_handle: str | None = None,
        use_cache: bool = True,
        model_parent_directory: Path | None = None,
        plugin_instance_config: Any = None,
    ) -> M:
        """The model saved as ``<instance>/<handle>.zip`` (handle ``default`` if None).

        Raises:
            InvalidRequestError: a bad instance id or handle, or a corrupt archive.
            NotFoundError: no such checkpoint (code ``no_checkpoint``).
            StoreError: the archive could not be read.
        """
        handle = check_handle(checkpoint_handle or DEFAULT_CHECKPOINT)
        key = archive_key(plugin_instance_id, handle)
        cache_key = (cls, plugin_instance_id, handle)
        if use_cache:
            with _CACHE_LOCK:
                cached = _CACHE.get(cache_key)
            if cached is not None and cached[0] == await archives.archive_digest(key):
                model: M = cached[1]
                model.receive_config(plugin_instance_config)
                return model
        data = await archives.get_archive(key)
        if data is None:
            raise NotFoundError(
                f"plugin instance {plugin_instance_id!r} has no checkpoint {handle!r}",
                code="no_checkpoint",
                suggestion=f"train it first: POST /plugins/{plugin_instance_id}/train",
            )

        def unpack() -> M:
            with tempfile.TemporaryDirectory(dir=model_parent_directory) as parent:
                folder = Path(parent) / handle
                folder.mkdir()
                unzip_to(data, folder, cls.max_unpacked_bytes)
                return cls.load_from_local_checkpoint(folder, plugin_instance_config)

        loaded = await anyio.to_thread.run_sync(unpack)
        if use_cache:
            import hashlib

            loaded._remember(plugin_instance_id, handle, hashlib.sha256(data).hexdigest())
        return loaded
