"""The seed's plugin surface end to end over real uvicorn: POST /plugins/{name}/{path}.

Import a file, tag it, embed it; train each trainable plugin and watch its progress
events; check held-out accuracy; restart on the same sqlite file and use the checkpoints;
every bad input answers a clear JSON error.
"""

from __future__ import annotations

import base64
import inspect
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streaming.client.client import StreamingClient
from streaming.server.app import ServerSettings, create_app

from streaming.builtins.text import words
from streaming.events import Event
from streaming.model import Block, Usage
from streaming.plugin import (
    Generator,
    InvocableResponse,
    PluginRequest,
    PluginRequestContext,
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginOutput,
)
from streaming.plugin.trainable_model import clear_model_cache
from streaming.runtime import RuntimeSettings
from tests.conftest import LiveServer
from tests.invariants import check_invariants
from tests.procs import ServeProcess

pytestmark = pytest.mark.anyio


def labelled_docstrings(per_label: int = 60) -> list[tuple[str, str]]:
    """A real labelled set: the first paragraphs of the docstrings of ``math``
    functions, ``str`` methods and ``os`` functions, labelled by where they come from."""
    out: list[tuple[str, str]] = []
    for obj, label in ((math, "math"), (str, "str"), (os, "os")):
        found = []
        for name in sorted(dir(obj)):
            fn = getattr(obj, name)
            if name.startswith("_") or not callable(fn) or inspect.isclass(fn):
                continue
            doc = inspect.getdoc(fn)
            if not doc:
                continue
            paras = [p for p in doc.strip().split("\n\n") if not p.startswith(name + "(")]
            text = " ".join(paras[:2]).replace("\n", " ")
            if len(text) > 20:
                found.append((text, label))
        out += found[:per_label]
    return out


TEXT = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.fixture
def make_plugin_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(store_url: str = "memory://", **settings: Any) -> LiveServer:
        cfg = ServerSettings(
            store_url=store_url,
            plugin_config={"file-importer": {"allowed_dirs": [str(tmp_path / "allowed")], "max_bytes": 200_000}},
            runtime=RuntimeSettings(live_retention_s=0.5),
            **settings,
        )
        live = LiveServer(create_app(cfg)).start()
        servers.append(live)
        return live

    (tmp_path / "allowed").mkdir()
    yield make
    for live in servers:
        live.stop()


async def call(http: httpx.AsyncClient, name: str, path: str, data: Any = None, **extra: Any) -> httpx.Response:
    body = {"data": data, "context": {"pluginInstanceId": "ignored"}, **extra}
    return await http.post(f"/plugins/{name}/{path}", json=body)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["status"]["state"] == "failed" and body["status"]["statusCode"] == code
    return body


async def follow(base: str, generation_id: str) -> list[Event]:
    async with StreamingClient(base) as client:
        return [ev async for ev in client.iter_events(generation_id)]


async def train(base: str, http: httpx.AsyncClient, name: str, data: dict[str, Any]) -> tuple[dict[str, Any], list[Event]]:
    r = await call(http, name, "train", data)
    assert r.status_code == 202, r.text
    status = r.json()["status"]
    assert status["state"] == "running" and status["taskId"]
    events = await follow(base, status["taskId"])
    check_invariants(events)
    assert events[-1].type == "generation.completed", events[-1].data
    r = await call(http, name, "train", {}, isStatusCheck=True, status={"taskId": status["taskId"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"]["state"] == "succeeded"
    return r.json()["data"], events


def progress_lines(events: list[Event]) -> list[str]:
    started = next(e for e in events if e.type == "generation.started")
    progress_id = started.data["blocks"][0]["id"]
    assert started.data["blocks"][0]["mime_type"] == "application/x-ndjson"
    text = "".join(e.data["text"] for e in events if e.type == "block.delta" and e.data["block_id"] == progress_id)
    return [ln for ln in text.splitlines() if ln]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_import_tag_and_embed(make_plugin_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    server = make_plugin_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        listing = (await http.get("/plugins")).json()["plugins"]
        assert set(listing) >= {"ngram", "ngram-blocks", "bayes-tagger", "hash-embedder", "file-importer"}
        assert "train" in listing["bayes-tagger"]["paths"]

        # Import text as a file of paragraphs.
        text = "Cats purr and nap in the sun.\n\nDogs bark and chase the ball.\n\nKittens purr and nap all day."
        r = await call(http, "file-importer", "import", {"value": text})
        assert r.status_code == 200, r.text
        out = r.json()["data"]
        assert base64.b64decode(out["data"]).decode() == text and out["mimeType"] == "text/plain"
        file_id = out["file_id"]
        file = (await http.get(f"/files/{file_id}")).json()
        assert [b["text"] for b in file["blocks"]] == text.split("\n\n")

        # Import a local file from the allowed directory (by relative path and file: URL).
        (tmp_path / "allowed" / "notes.md").write_text("# Notes\n\nline one\nline two\n")
        for url in ("notes.md", (tmp_path / "allowed" / "notes.md").as_uri()):
            r = await call(http, "file-importer", "import", {"url": url, "blockify": "lines"})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["mimeType"] == "text/markdown"
            lines = (await http.get(f"/files/{r.json()['data']['file_id']}")).json()["blocks"]
            assert [b["text"] for b in lines] == ["# Notes", "line one", "line two"]

        # Base64 bytes.
        r = await call(http, "file-importer", "import", {"data": base64.b64encode(b"hello bytes").decode(), "mimeType": "text/plain"})
        assert r.status_code == 200 and r.json()["data"]["mimeType"] == "text/plain"

        # Embed the stored file by id: one unit vector per block; like texts are closer.
        r = await call(http, "hash-embedder", "tag", {"file_id": file_id})
        assert r.status_code == 200, r.text
        vectors = r.json()["data"]["embeddings"]
        assert len(vectors) == 3 and all(len(v) == 256 for v in vectors)
        assert all(abs(cosine(v, v) - 1) < 1e-9 for v in vectors)
        assert cosine(vectors[0], vectors[2]) > cosine(vectors[0], vectors[1])
        # ... or a file given inline, as in the seed.
        r = await call(http, "hash-embedder", "tag", {"file": {"blocks": [{"text": "purring cats"}]}})
        assert len(r.json()["data"]["embeddings"]) == 1


async def test_bad_inputs_get_clear_json_errors(make_plugin_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    server = make_plugin_server()
    (tmp_path / "secret.txt").write_text("not yours")
    (tmp_path / "allowed" / "big.txt").write_text("x" * 300_000)
    os.symlink(tmp_path / "secret.txt", tmp_path / "allowed" / "link.txt")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        error_of(await call(http, "nope", "tag", {}), 404, "unknown_plugin")
        error_of(await call(http, "hash-embedder", "import", {"value": "x"}), 404, "unsupported_path")
        error_of(await call(http, "hash-embedder", "fly", {}), 404, "unsupported_path")
        # Wrong shapes.
        error_of(await call(http, "hash-embedder", "tag", "a string"), 422, "invalid_request")
        error_of(await call(http, "hash-embedder", "tag", {"file": {"blocks": "no"}}), 422, "invalid_request")
        error_of(await call(http, "file-importer", "import", {}), 422, "invalid_request")
        error_of(await call(http, "file-importer", "import", {"value": "a", "url": "b"}), 422, "invalid_request")
        r = await http.post("/plugins/hash-embedder/tag", json=[1, 2])
        error_of(r, 422, "invalid_request")
        r = await http.post("/plugins/hash-embedder/tag", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_request"
        # Not base64.
        body = error_of(await call(http, "file-importer", "import", {"data": "%%% not base64 %%%"}), 422, "invalid_request")
        assert "base64" in body["error"]["message"]
        # Too large: the body, and a local file over the importer's limit.
        r = await http.post("/plugins/file-importer/import", json={"data": {"value": "x" * (2 << 20)}})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        error_of(await call(http, "file-importer", "import", {"url": "big.txt"}), 413, "payload_too_large")
        # Never a path outside the allowed directory: traversal, absolute, symlink, other schemes.
        for url in ("../secret.txt", str(tmp_path / "secret.txt"), (tmp_path / "secret.txt").as_uri(), "link.txt"):
            error_of(await call(http, "file-importer", "import", {"url": url}), 403, "forbidden")
        error_of(await call(http, "file-importer", "import", {"url": "/etc/passwd"}), 403, "forbidden")
        error_of(await call(http, "file-importer", "import", {"url": "http://127.0.0.1:1/x"}), 422, "invalid_request")
        error_of(await call(http, "file-importer", "import", {"url": "missing.txt"}), 404, "not_found")
        # An untrained model, an unknown file, an unknown training task.
        error_of(await call(http, "bayes-tagger", "tag", {"file": {"blocks": [{"text": "x"}]}}), 404, "no_checkpoint")
        error_of(await call(http, "ngram", "generate", {"blocks": [{"text": "x"}]}), 404, "no_checkpoint")
        error_of(await call(http, "hash-embedder", "tag", {"file_id": "file_nope"}), 404, "not_found")
        error_of(await call(http, "bayes-tagger", "train", {"file_id": "file_nope"}), 404, "not_found")
        error_of(await call(http, "bayes-tagger", "train", {}), 422, "invalid_request")
        error_of(
            await call(http, "bayes-tagger", "train", {}, isStatusCheck=True, status={"taskId": "gen_nope"}),
            404, "not_found",
        )
        # A checkpoint handle that would escape the instance's archives.
        error_of(
            await call(http, "ngram", "train", {"training_file": {"blocks": [{"text": "a b c"}]},
                                                "training_params": {"checkpoint_handle": "../bayes-tagger/default"}}),
            422, "invalid_request",
        )


async def test_train_tagger_then_tag_an_imported_file(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server()
    examples = labelled_docstrings()
    training_file = {"blocks": [{"text": t, "tags": [{"kind": "label", "name": lb}]} for t, lb in examples]}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        r = await call(http, "bayes-tagger", "getTrainingParameters", {})
        assert r.status_code == 200 and r.json()["data"]["training_params"]["label_kind"] == "label"

        output, events = await train(
            server.url, http, "bayes-tagger",
            {"training_file": training_file, "testing_holdout_percent": 0.25, "test_split_seed": 7},
        )
        lines = progress_lines(events)
        assert sum('"event":"progress"' in ln for ln in lines) >= 2  # it streamed as it went
        assert '"event":"evaluated"' in lines[-2] and '"event":"finished"' in lines[-1]
        results = output["training_results"]
        assert results["labels"] == ["math", "os", "str"]
        assert results["heldout_examples"] >= 30
        assert results["accuracy"] > results["majority_baseline"] and results["accuracy"] > results["chance"] + 0.2
        assert output["archive_path"] == "bayes-tagger/default.zip"

        # Import a file and tag it: the tags are kept on the stored file.
        text = "Return the cosine of x (measured in radians).\n\nReturn a copy of the string converted to uppercase."
        file_id = (await call(http, "file-importer", "import", {"value": text})).json()["data"]["file_id"]
        r = await call(http, "bayes-tagger", "tag", {"file_id": file_id})
        assert r.status_code == 200, r.text
        labels = [b["tags"][-1]["name"] for b in r.json()["data"]["file"]["blocks"]]
        assert labels == ["math", "str"]
        stored = (await http.get(f"/files/{file_id}")).json()
        assert [b["tags"][-1]["name"] for b in stored["blocks"]] == ["math", "str"]
        assert 0 < stored["blocks"][0]["tags"][-1]["value"]["score"] <= 1


async def test_train_generators_restart_and_generate(make_plugin_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'plugins.db'}"
    first = make_plugin_server(store)
    examples = labelled_docstrings()
    async with httpx.AsyncClient(base_url=first.url, timeout=60) as http:
        file_id = (await call(http, "file-importer", "import", {"value": TEXT})).json()["data"]["file_id"]
        # Before training, the demo page and the chat are told why ngram cannot answer.
        details = {d["name"]: d for d in (await http.get("/generators")).json()["details"]}
        assert details["ngram"]["chat"] is False and "not trained yet" in details["ngram"]["reason"]
        assert details["ngram.train"]["chat"] is False and "does not reply" in details["ngram.train"]["reason"]
        for name in ("ngram", "ngram-blocks"):
            output, events = await train(first.url, http, name, {"file_id": file_id, "training_params": {"order": 3}})
            results = output["training_results"]
            assert results["heldout_tokens"] > 0
            assert results["heldout_next_word_accuracy"] > results["baseline_accuracy"]
            assert any('"event":"progress"' in ln for ln in progress_lines(events))
        details = {d["name"]: d for d in (await http.get("/generators")).json()["details"]}
        assert details["ngram"]["chat"] is True and details["ngram-blocks"]["chat"] is True
        # A named checkpoint that does not replace the default one.
        r = await call(http, "ngram", "train", {"file_id": file_id, "training_params": {"order": 1, "checkpoint_handle": "unigram", "set_as_default": False}})
        assert r.status_code == 202
        await follow(first.url, r.json()["status"]["taskId"])
        training_file = {"blocks": [{"text": t, "tags": [{"kind": "label", "name": lb}]} for t, lb in examples]}
        await train(first.url, http, "bayes-tagger", {"training_file": training_file})
    first.stop()
    clear_model_cache()  # what follows must come from the store, not from this process's cache

    second = make_plugin_server(store)
    async with httpx.AsyncClient(base_url=second.url, timeout=60) as http, StreamingClient(second.url) as client:
        # The streaming generator, through POST /generations like any other.
        stream = await client.generate("ngram", prompt="The runtime", options={"max_tokens": 30, "seed": 3})
        events = [ev async for ev in stream]
        final = check_invariants(events)
        text = "".join(final.values())
        assert events[-1].type == "generation.completed"
        assert sum(e.type == "block.delta" for e in events) >= 2 and len(text.split()) >= 10
        # Every word it writes is a word of the text it learnt from.
        assert set(words(text)) <= set(words(TEXT))

        # The non-streaming TrainableGenerator, through the seed's generate path.
        r = await call(http, "ngram-blocks", "generate", {"blocks": [{"text": "The runtime"}], "options": {"max_tokens": 20, "seed": 1}})
        assert r.status_code == 200, r.text
        blocks = r.json()["data"]["blocks"]
        assert len(blocks) == 1 and len(blocks[0]["text"].split()) >= 5
        gen = (await http.get(f"/generations/{r.json()['status']['taskId']}")).json()
        assert gen["generation"]["state"] == "succeeded" and gen["blocks"][0]["text"] == blocks[0]["text"]

        # streamResultToBlocks starts a generation and answers at once.
        r = await call(http, "ngram", "streamResultToBlocks", {"blocks": [{"text": "A"}], "options": {"max_tokens": 5}})
        assert r.status_code == 202 and r.json()["status"]["state"] == "running"
        events = await follow(second.url, r.json()["status"]["remoteStatusInput"]["generation_id"])
        check_invariants(events)
        r = await call(http, "ngram", "determineOutputBlockTypes", {"blocks": []})
        assert r.json()["data"]["blockTypesToCreate"] == ["text/plain"]

        # The tagger from its checkpoint.
        r = await call(http, "bayes-tagger", "tag", {"file": {"blocks": [{"text": "Return the square root of x."}]}})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["file"]["blocks"][0]["tags"][-1]["name"] == "math"


async def test_training_can_be_cancelled(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server()
    blocks = [{"text": f"block {i} " + "word " * 50} for i in range(3000)]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        r = await call(http, "ngram", "train", {"training_file": {"blocks": blocks}, "training_epochs": 100})
        task = r.json()["status"]["taskId"]
        async with StreamingClient(server.url) as client:
            seen = []
            async for ev in client.iter_events(task):
                seen.append(ev)
                if ev.type == "block.delta" and '"event":"progress"' in ev.data["text"] and len(seen) < 10_000:
                    await client.cancel(task)
        check_invariants(seen)
        assert seen[-1].type == "generation.cancelled"
        r = await call(http, "ngram", "train", {}, isStatusCheck=True, status={"taskId": task})
        assert r.json()["status"]["state"] == "cancelled"
        error_of(await call(http, "ngram", "generate", {"blocks": [{"text": "x"}]}), 404, "no_checkpoint")


async def test_checkpoints_are_shared_by_servers_on_one_redis(
    make_plugin_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    from tests.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis").start()
    url = redis.url + "?prefix=plug:"
    a, b = make_plugin_server(url), make_plugin_server(url)
    try:
        examples = labelled_docstrings()
        training_file = {"blocks": [{"text": t, "tags": [{"kind": "label", "name": lb}]} for t, lb in examples]}
        async with httpx.AsyncClient(base_url=a.url, timeout=60) as ha, httpx.AsyncClient(base_url=b.url, timeout=60) as hb:
            r = await call(ha, "bayes-tagger", "train", {"training_file": training_file})
            task = r.json()["status"]["taskId"]
            # Followed, and polled, through the other server.
            events = await follow(b.url, task)
            check_invariants(events)
            assert any('"event":"progress"' in ln for ln in progress_lines(events))
            r = await call(hb, "bayes-tagger", "train", {}, isStatusCheck=True, status={"taskId": task})
            assert r.json()["status"]["state"] == "succeeded", r.text
            assert r.json()["data"]["training_results"]["accuracy"] > r.json()["data"]["training_results"]["chance"]
            clear_model_cache()
            r = await call(hb, "bayes-tagger", "tag", {"file": {"blocks": [{"text": "Return the sine of x."}]}})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["file"]["blocks"][0]["tags"][-1]["name"] == "math"
    finally:
        a.stop()
        b.stop()
        redis.stop()


class WholeAnswer(Generator):
    """A non-streaming Generator: two whole blocks (one with multi-byte text)."""

    def run(self, request: PluginRequest[RawBlockAndTagPluginInput]) -> InvocableResponse[RawBlockAndTagPluginOutput]:
        assert request.data is not None
        prompt = request.data.blocks[-1].text
        return InvocableResponse(
            data=RawBlockAndTagPluginOutput(
                blocks=[Block(text=f"héllo ✓ {prompt}"), Block(text='{"n": 1}', mime_type="application/json")],
                usage=[Usage(operation_amount=len(prompt))],
            )
        )


async def test_a_generator_is_hosted_like_a_streaming_one(tmp_path: Path) -> None:
    proc = ServeProcess(
        "--store", f"sqlite:///{tmp_path / 'g.db'}",
        "--plugin", "whole=tests.test_plugins_http:WholeAnswer",
        "--plugin-config", "file-importer=" + json.dumps({"allowed_dirs": [str(tmp_path)]}),
    )
    try:
        (tmp_path / "a.txt").write_text("from the CLI config")
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http, StreamingClient(proc.url) as client:
            # Over SSE, each whole block is created, filled by one delta, and completed.
            stream = await client.generate("whole", prompt="there")
            events = [ev async for ev in stream]
            final = check_invariants(events)
            assert sorted(final.values()) == sorted(["héllo ✓ there", '{"n": 1}'])
            assert [e.type for e in events[1:-1]] == ["block.created", "block.delta", "block.completed"] * 2
            assert events[-1].type == "generation.completed" and events[-1].data["usage"][0]["operation_amount"] == 5
            # The seed's generate path gives the same blocks.
            r = await call(http, "whole", "generate", {"blocks": [{"text": "there"}]})
            assert [b["text"] for b in r.json()["data"]["blocks"]] == ["héllo ✓ there", '{"n": 1}']
            raw = await http.get(f"/blocks/{r.json()['data']['blocks'][1]['id']}/raw")
            assert raw.headers["content-type"].startswith("application/json") and raw.json() == {"n": 1}
            # --plugin-config reached the importer.
            r = await call(http, "file-importer", "import", {"url": "a.txt"})
            assert r.status_code == 200 and base64.b64decode(r.json()["data"]["data"]) == b"from the CLI config"
    finally:
        proc.stop()


async def test_each_plugin_class_can_be_served_on_its_own() -> None:
    """``run_endpoint`` (and the trainable endpoints) from raw keyword arguments."""
    from streaming.builtins.bayes import NaiveBayesTagger
    from streaming.builtins.hashed import HashedNgramEmbedder
    from streaming.builtins.importer import LocalFileImporter

    embedded = HashedNgramEmbedder(config={"dimensions": 16}).run_endpoint(
        data={"file": {"blocks": [{"text": "a b"}]}}
    )
    assert len(embedded.data.embeddings[0]) == 16
    imported = LocalFileImporter().run_endpoint(data={"value": "hi", "mimeType": "text/markdown"})
    assert imported.data.mime_type == "text/markdown"
    whole = WholeAnswer().run_endpoint(data={"blocks": [{"text": "x"}]}, isStatusCheck=False)
    assert whole.data.blocks[0].text == "héllo ✓ x"

    tagger = NaiveBayesTagger(context=PluginRequestContext(plugin_instance_id="solo"))
    examples = labelled_docstrings(30)
    trained = await tagger.train_endpoint(
        data={"training_file": {"blocks": [{"text": t, "tags": [{"kind": "label", "name": lb}]} for t, lb in examples]}},
        context={"pluginInstanceId": "solo"},
    )
    assert trained.data.archive_path == "solo/default.zip"
    params = tagger.get_training_parameters_endpoint(data={})
    assert params.data.testing_holdout_percent == 0.2
    tagged = await tagger.run_endpoint(data={"file": {"blocks": [{"text": "Return the tangent of x."}]}})
    assert tagged.data.file.blocks[0].tags[-1].name == "math"


async def test_plugins_with_api_keys(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server(api_keys=["key-a", "key-b"])
    a = httpx.AsyncClient(base_url=server.url, timeout=30, headers={"Authorization": "Bearer key-a"})
    b = httpx.AsyncClient(base_url=server.url, timeout=30, headers={"Authorization": "Bearer key-b"})
    async with a, b, httpx.AsyncClient(base_url=server.url, timeout=30) as anonymous:
        r = await call(anonymous, "hash-embedder", "tag", {"file": {"blocks": []}})
        assert r.status_code == 401
        file_id = (await call(a, "file-importer", "import", {"value": "mine"})).json()["data"]["file_id"]
        assert (await call(a, "hash-embedder", "tag", {"file_id": file_id})).status_code == 200
        # Another key's files and training tasks are not there for it.
        error_of(await call(b, "hash-embedder", "tag", {"file_id": file_id}), 404, "not_found")
        error_of(await call(b, "ngram", "train", {"file_id": file_id}), 404, "not_found")
        r = await call(a, "ngram", "train", {"file_id": file_id})
        status = r.json()["status"]
        assert r.status_code == 202 and status["remoteStatusInput"]["read_token"].startswith("rt_")
        error_of(await call(b, "ngram", "train", {}, isStatusCheck=True, status={"taskId": status["taskId"]}), 404, "not_found")
        # A read token follows its one training generation, and calls no plugin.
        token = status["remoteStatusInput"]["read_token"]
        async with StreamingClient(server.url, headers={"Authorization": f"Bearer {token}"}) as reader:
            events = [ev async for ev in reader.iter_events(status["taskId"])]
        check_invariants(events)
        r = await anonymous.post("/plugins/ngram/generate", json={"data": {"blocks": []}},
                                 headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


class Picture(Generator):
    """A Generator whose output is an image: its bytes are kept once and served by URL."""

    def run(self, request: PluginRequest[RawBlockAndTagPluginInput]) -> InvocableResponse[RawBlockAndTagPluginOutput]:
        image = self.upload_block_content_to_signed_url(Block(mime_type="image/png"), PNG)
        return InvocableResponse(data=RawBlockAndTagPluginOutput(blocks=[Block(text="a red dot:"), image]))


async def test_binary_output_blocks_are_served_by_url(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server(plugins={"picture": "tests.test_plugins_http:Picture"}, api_keys=["k"])
    headers = {"Authorization": "Bearer k"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers) as http:
        r = await http.post("/generations", json={"generator": "picture", "prompt": "draw"})
        gen_id, token = r.json()["generation"]["id"], r.json()["read_token"]
        async with StreamingClient(server.url, headers=headers) as client:
            events = [ev async for ev in client.iter_events(gen_id)]
        check_invariants(events)
        image = next(e.data["block"] for e in events if e.type == "block.created" and e.data["block"]["mime_type"] == "image/png")
        raw = await http.get(f"/blocks/{image['id']}/raw")
        assert raw.status_code == 200 and raw.headers["content-type"] == "image/png" and raw.content == PNG
        # A browser <img> reaches it with the generation's read token, and nothing else does.
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as browser:
            ok = await browser.get(f"/blocks/{image['id']}/raw", params={"access_token": token})
            assert ok.content == PNG
            assert (await browser.get(f"/blocks/{image['id']}/raw")).status_code == 401
        text = next(e.data["block"] for e in events if e.type == "block.created" and e.data["block"]["mime_type"] == "text/plain")
        assert (await http.get(f"/blocks/{text['id']}/raw")).text == "a red dot:"
