"""TrainableModel: save/load through archives, the default checkpoint, the per-process
cache, receive_config, handle validation and unsafe archives; archives in every store."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming.errors import InvalidRequestError, NotFoundError
from streaming.plugin import (
    InvocableResponse,
    PluginRequest,
    TrainableModel,
    TrainPluginInput,
    TrainPluginOutput,
)
from streaming.plugin.trainable_model import archive_key, check_handle, clear_model_cache
from streaming.stores.archives import MemoryArchives, archives_for, check_archive_key
from streaming.stores.memory import MemoryStore
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


class Counter(TrainableModel[dict[str, Any]]):
    """A model whose whole state is one number."""

    loads = 0

    def __init__(self) -> None:
        self.value = 0

    def save_to_folder(self, checkpoint_path: Path) -> None:
        (checkpoint_path / "sub").mkdir()
        (checkpoint_path / "sub" / "value.txt").write_text(str(self.value))

    def load_from_folder(self, checkpoint_path: Path) -> None:
        type(self).loads += 1
        self.value = int((checkpoint_path / "sub" / "value.txt").read_text())

    def train(self, input: PluginRequest[TrainPluginInput]) -> InvocableResponse[TrainPluginOutput]:
        assert input.data is not None
        for epoch in range(input.data.training_epochs or 1):
            self.value += 1
            self.report_progress({"epoch": epoch + 1})
        return InvocableResponse(data=TrainPluginOutput(training_results={"value": self.value}))


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_model_cache()
    yield
    clear_model_cache()


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", ".hidden", "-x", "a\\b", "x" * 129, "a b", "é"])
def test_bad_handles_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_handle(bad)
    with pytest.raises(InvalidRequestError):
        archive_key("inst", bad)
    with pytest.raises(InvalidRequestError):
        archive_key(bad, "default")


@pytest.mark.parametrize("bad", ["", "/abs.zip", "a/../b.zip", "a//b.zip", "a/./b", "../b.zip"])
def test_bad_archive_keys_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_archive_key(bad)


async def test_save_and_load_remote_with_default_and_cache() -> None:
    archives = MemoryArchives()
    model = Counter()
    progress: list[dict[str, Any]] = []
    model.progress_hook = progress.append
    model.train(PluginRequest[TrainPluginInput](data=TrainPluginInput(training_epochs=3)))
    assert progress == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]

    assert await model.save_remote(archives, "inst", "v1") == "inst/v1.zip"
    assert await archives.get_archive("inst/default.zip") == await archives.get_archive("inst/v1.zip")

    # Another process (an empty cache) loads it from the archive, with the instance config.
    clear_model_cache()
    Counter.loads = 0
    loaded = await Counter.load_remote(archives, "inst", plugin_instance_config={"k": 1})
    assert loaded.value == 3 and loaded.config == {"k": 1} and Counter.loads == 1
    again = await Counter.load_remote(archives, "inst", "default", plugin_instance_config={"k": 2})
    assert again is loaded and again.config == {"k": 2} and Counter.loads == 1  # cached
    uncached = await Counter.load_remote(archives, "inst", use_cache=False)
    assert uncached is not loaded and Counter.loads == 2

    # A checkpoint saved aside leaves the default alone.
    model.value = 10
    await model.save_remote(archives, "inst", "v2", set_as_default=False)
    assert (await Counter.load_remote(archives, "inst")).value == 3
    assert (await Counter.load_remote(archives, "inst", "v2")).value == 10

    # A new default written elsewhere (another process) is noticed by its digest.
    other = Counter()
    other.value = 42
    digest = await archives.put_archive("inst/default.zip", await _zip_of(other))
    assert digest == await archives.archive_digest("inst/default.zip")
    assert (await Counter.load_remote(archives, "inst")).value == 42

    # Instances never share checkpoints.
    with pytest.raises(NotFoundError) as info:
        await Counter.load_remote(archives, "other-instance")
    assert info.value.code == "no_checkpoint"


async def _zip_of(model: Counter) -> bytes:
    scratch = MemoryArchives()
    await model.save_remote(scratch, "tmp", set_as_default=False)
    data = await scratch.get_archive("tmp/default.zip")
    assert data is not None
    return data


def _exists(path: Path) -> bool:
    return os.path.exists(path)


async def test_unsafe_archives_are_refused(tmp_path: Path) -> None:
    archives = MemoryArchives()
    for name in ("../escaped.txt", "/abs/escaped.txt", "sub/../../escaped.txt"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr(name, "gotcha")
        await archives.put_archive("inst/default.zip", buffer.getvalue())
        with pytest.raises(InvalidRequestError):
            await Counter.load_remote(archives, "inst", model_parent_directory=tmp_path)
    assert not _exists(tmp_path.parent / "escaped.txt") and not _exists(tmp_path / "escaped.txt")
    await archives.put_archive("inst/default.zip", b"not a zip")
    with pytest.raises(InvalidRequestError):
        await Counter.load_remote(archives, "inst")


async def test_archives_survive_a_sqlite_restart(tmp_path: Path) -> None:
    from streaming.stores.sqlite import SqliteStore

    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = SqliteStore(url)
    await store.open()
    model = Counter()
    model.value = 7
    await model.save_remote(archives_for(store), "inst")
    await store.close()
    clear_model_cache()

    reopened = SqliteStore(url)
    await reopened.open()
    try:
        assert (await Counter.load_remote(archives_for(reopened), "inst")).value == 7
    finally:
        await reopened.close()


async def test_archives_are_shared_through_redis(tmp_path: Path) -> None:
    from streaming.stores.redis import RedisStore

    redis = RedisServer(tmp_path / "redis").start()
    a, b = RedisStore(redis.url + "?prefix=arch:"), RedisStore(redis.url + "?prefix=arch:")
    await a.open()
    await b.open()
    try:
        model = Counter()
        model.value = 5
        await model.save_remote(archives_for(a), "inst")
        clear_model_cache()
        assert (await Counter.load_remote(archives_for(b), "inst")).value == 5
        assert await archives_for(b).get_archive("inst/nothing.zip") is None
    finally:
        await a.close()
        await b.close()
        redis.stop()


def test_archives_for_memory_store_is_one_per_store() -> None:
    one, two = MemoryStore(), MemoryStore()
    assert archives_for(one) is archives_for(one)
    assert archives_for(one) is not archives_for(two)


@pytest.mark.parametrize("percent", [None, 0.0, 0.1, 0.5, 0.9, 0.999])
def test_the_split_always_trains_on_something(percent: float | None) -> None:
    for n in range(1, 25):
        data = TrainPluginInput(testing_holdout_percent=percent, test_split_seed=n)
        train, held = data.split(n, default_percent=0.2)
        assert train and sorted(train + held) == list(range(n))
        if n >= 2 and (percent is None or percent > 0):
            assert held
        assert data.split(n, default_percent=0.2) == (train, held)  # the seed decides it
    with pytest.raises(InvalidRequestError):
        TrainPluginInput().split(0)


@pytest.mark.parametrize("bad", [1.0, 50, -0.01, float("nan")])
def test_a_holdout_is_a_fraction_below_one(bad: float) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="0.2 holds out 20%"):
        TrainPluginInput.model_validate({"testingHoldoutPercent": bad})
