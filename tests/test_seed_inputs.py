"""The seed's own ways of asking, over real uvicorn: capability blocks among the input
blocks, camelCase fields, holdout fractions, blockify modes.

A client that knows only the Steamship plugin API puts its capability request in a block
of MIME ``application/vnd.steamship-block.plugin-capabilities-request+json``, spells fields
``trainingParams`` or ``mimeType``, and may read ``testing_holdout_percent`` as a percent.
Each is either honoured exactly as the documented form is, or refused with a JSON error
before anything is trained, stored or generated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient
from streaming.client.ws import ws_url_of
from websockets.asyncio.client import connect

from streaming.capabilities import ConversationSupport, FunctionCallingSupport
from streaming.model import MimeTypes
from tests.conftest import LiveServer
from tests.invariants import check_invariants
from tests.test_plugins_http import TEXT, call, error_of, follow, make_plugin_server, train

pytestmark = pytest.mark.anyio

__all__ = ["make_plugin_server"]  # the fixture, shared with test_plugins_http

REQUEST_MIME = MimeTypes.STEAMSHIP_PLUGIN_CAPABILITIES_REQUEST


def capability_block(name: str, level: str, *, camel: bool = False, **fields: Any) -> dict[str, Any]:
    """A capabilities-request block as the seed writes it (``camel``: camelCase names)."""
    if camel:
        text = {"requestedCapabilities": [{"name": name, "requestLevel": level, **fields}]}
        return {"text": json.dumps(text), "mimeType": REQUEST_MIME}
    text = {"requested_capabilities": [{"name": name, "request_level": level, **fields}]}
    return {"text": json.dumps(text), "mime_type": REQUEST_MIME}


FC_NATIVE = capability_block(FunctionCallingSupport.NAME, "native", functions=[])


async def generated(http: httpx.AsyncClient, prompt: str = "The runtime") -> str:
    r = await call(http, "ngram-blocks", "generate", {"blocks": [{"text": prompt}], "options": {"max_tokens": 25, "seed": 5}})
    assert r.status_code == 200, r.text
    text: str = r.json()["data"]["blocks"][0]["text"]
    return text


async def test_capability_blocks_are_checked_on_every_path(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        # Refused before any work: ngram is not even trained, yet the answer is the
        # capability refusal, not "no checkpoint", and no generation is started.
        for block in (FC_NATIVE, capability_block(FunctionCallingSupport.NAME, "native", camel=True)):
            for path in ("generate", "streamResultToBlocks", "determineOutputBlockTypes"):
                body = error_of(
                    await call(http, "ngram", path, {"blocks": [{"text": "The runtime"}, block]}),
                    422, "unsupported_capability",
                )
                refused = body["error"]["unsupported_capabilities"]
                assert refused == [{"name": FunctionCallingSupport.NAME, "request_level": "native"}]
            r = await http.post("/generations", json={"generator": "ngram", "blocks": [block, {"text": "hi"}]})
            assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_capability", r.text
        # And a WebSocket generate frame.
        async with connect(ws_url_of(server.url)) as ws:
            await ws.send(json.dumps({"type": "generate", "ref": "r1", "generator": "ngram", "blocks": [FC_NATIVE, {"text": "hi"}]}))
            with anyio.fail_after(10):
                frame = json.loads(await ws.recv())
            assert frame["type"] == "error" and frame["ref"] == "r1", frame
            assert frame["error"]["code"] == "unsupported_capability"
        # The same as through the documented field.
        r = await http.post("/generations", json={
            "generator": "ngram", "prompt": "hi",
            "capabilities": [{"name": FunctionCallingSupport.NAME, "request_level": "native"}],
        })
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_capability"

        # A block that is not a capabilities request, or asks for one capability twice.
        bad = {"text": "{not json", "mime_type": REQUEST_MIME}
        error_of(await call(http, "ngram", "generate", {"blocks": [bad]}), 422, "invalid_request")
        r = await http.post("/generations", json={"generator": "echo", "blocks": [bad]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        twice = capability_block(ConversationSupport.NAME, "native")
        r = await http.post("/generations", json={
            "generator": "echo", "blocks": [twice, {"text": "hi"}],
            "capabilities": [{"name": ConversationSupport.NAME, "request_level": "optional"}],
        })
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        assert ConversationSupport.NAME in r.json()["error"]["message"]

        # A capability the plugin supports: served, and reported exactly as for the field.
        served = []
        for body in (
            {"blocks": [capability_block(ConversationSupport.NAME, "native", camel=True), {"text": "hello seed"}]},
            {"blocks": [{"text": "hello seed"}], "capabilities": [{"name": ConversationSupport.NAME, "request_level": "native"}]},
        ):
            r = await http.post("/generations", headers={"accept": "text/event-stream"}, json={"generator": "echo", **body})
            assert r.status_code == 201, r.text
            gen_id = r.headers["location"].rsplit("/", 1)[1]
            events = await follow(server.url, gen_id)
            final = check_invariants(events)
            assert events[-1].type == "generation.completed"
            assert "".join(final.values()).split() == ["hello", "seed"]
            served.append(next(e for e in events if e.type == "generation.started").data["capabilities"])
            # The request block is not part of the conversation: only the prompt is.
            gen = (await http.get(f"/generations/{gen_id}")).json()["generation"]
            conversation = (await http.get(f"/files/{gen['file_id']}")).json()
            assert REQUEST_MIME not in [b["mime_type"] for b in conversation["blocks"]]
        assert served[0] == served[1] == {"capability_responses": [{"name": ConversationSupport.NAME, "fulfilled_at": 1}]}

        # An optional request ngram cannot serve does not stand in its way.
        file_id = (await call(http, "file-importer", "import", {"value": TEXT})).json()["data"]["file_id"]
        await train(server.url, http, "ngram", {"file_id": file_id})
        optional = capability_block(FunctionCallingSupport.NAME, "optional", functions=[])
        r = await call(http, "ngram", "generate", {"blocks": [optional, {"text": "The runtime"}], "options": {"seed": 1}})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["blocks"][0]["text"].strip()
        r = await call(http, "ngram", "determineOutputBlockTypes", {"blocks": [optional]})
        assert r.status_code == 200 and r.json()["data"]["blockTypesToCreate"] == ["text/plain"]


async def test_training_never_replaces_a_model_with_nothing(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        file_id = (await call(http, "file-importer", "import", {"value": TEXT})).json()["data"]["file_id"]
        await train(server.url, http, "ngram-blocks", {"file_id": file_id})
        before = await generated(http)
        assert len(before.split()) >= 10

        # A holdout of everything, or a percent read as a percent: refused, nothing started.
        for holdout in ({"testing_holdout_percent": 1.0}, {"testing_holdout_percent": 50},
                        {"testingHoldoutPercent": 50}, {"testing_holdout_percent": -0.1}):
            body = error_of(await call(http, "ngram-blocks", "train", {"file_id": file_id, **holdout}), 422, "invalid_request")
            assert "testing_holdout_percent" in body["error"]["message"] and "0.2 holds out 20%" in body["error"]["message"]
        error_of(await call(http, "ngram-blocks", "getTrainingParameters", {"testing_holdout_percent": 50}), 422, "invalid_request")

        # The training generation started directly: it fails, and saves nothing.
        async with StreamingClient(server.url) as client:
            stream = await client.generate(
                "ngram-blocks.train", blocks=[{"text": "one two three"}],
                options={"train_input": {"testing_holdout_percent": 1.0}},
            )
            events = [ev async for ev in stream]
        check_invariants(events)
        assert events[-1].type == "generation.failed" and events[-1].data["error"]["code"] == "invalid_request"

        # A training file with nothing to learn from fails the run, and saves nothing.
        r = await call(http, "ngram-blocks", "train", {"training_file": {"blocks": [{"text": "   "}]}})
        assert r.status_code == 202
        events = await follow(server.url, r.json()["status"]["taskId"])
        assert events[-1].type == "generation.failed"
        assert await generated(http) == before

        # The largest holdout on a one-block file still trains on that block.
        output, _ = await train(server.url, http, "ngram-blocks", {
            "training_file": {"blocks": [{"text": "one two three four"}]}, "testing_holdout_percent": 0.99,
            "training_params": {"checkpoint_handle": "tiny", "set_as_default": False},
        })
        assert output["training_results"]["train_blocks"] == 1 and output["training_results"]["heldout_blocks"] == 0
        assert output["archive_path"] == "ngram-blocks/tiny.zip"
        # Held out: at least one block of two, never both.
        output, _ = await train(server.url, http, "ngram-blocks", {
            "training_file": {"blocks": [{"text": "one two three"}, {"text": "four five six"}]},
            "testing_holdout_percent": 0.9, "training_params": {"checkpoint_handle": "tiny", "set_as_default": False},
        })
        assert output["training_results"]["train_blocks"] == 1 and output["training_results"]["heldout_blocks"] == 1
        assert await generated(http) == before


async def test_camel_case_fields_are_read_like_snake_case(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        r = await call(http, "file-importer", "import", {"value": TEXT, "mimeType": "text/plain"})
        file_id = r.json()["data"]["file_id"]
        await train(server.url, http, "ngram-blocks", {"fileId": file_id, "trainingParams": {"order": 3}})
        before = await generated(http)

        # The body: camelCase field, snake_case keys inside.
        output, _ = await train(server.url, http, "ngram-blocks", {
            "fileId": file_id, "trainingParams": {"order": 1, "checkpoint_handle": "camel", "set_as_default": False},
            "testingHoldoutPercent": 0.3, "testSplitSeed": 4, "trainingEpochs": 2,
        })
        assert output["archive_path"] == "ngram-blocks/camel.zip"
        assert output["training_results"]["order"] == 1
        assert await generated(http) == before  # default untouched
        # The runtime's own keys inside training_params, camelCase too; "false" is false.
        output, _ = await train(server.url, http, "ngram-blocks", {
            "fileId": file_id, "trainingParams": {"order": 1, "checkpointHandle": "camel2", "setAsDefault": "false"},
        })
        assert output["archive_path"] == "ngram-blocks/camel2.zip"
        assert await generated(http) == before
        # A handle that would escape, in either spelling: refused before training.
        for params in ({"checkpointHandle": "../x"}, {"checkpoint_handle": "../x"}, {"set_as_default": "perhaps"}):
            error_of(await call(http, "ngram-blocks", "train", {"fileId": file_id, "trainingParams": params}), 422, "invalid_request")

        r = await call(http, "ngram-blocks", "getTrainingParameters", {"trainingEpochs": 3, "testingHoldoutPercent": 0.25})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["training_epochs"] == 3 and r.json()["data"]["testing_holdout_percent"] == 0.25

        # Seed-shaped blocks and tags: a tagger trained on an inline camelCase file.
        examples = [("cats purr and sleep", "cat"), ("dogs bark and fetch", "dog")] * 10
        training_file = {"blocks": [
            {"text": t, "mimeType": "text/plain", "tags": [{"kind": "label", "name": lb, "startIdx": 0, "endIdx": len(t)}]}
            for t, lb in examples
        ]}
        output, _ = await train(server.url, http, "bayes-tagger", {"trainingFile": training_file, "testSplitSeed": 1})
        assert output["training_results"]["labels"] == ["cat", "dog"]
        r = await call(http, "bayes-tagger", "tag", {"file": {"mimeType": "text/plain", "blocks": [
            {"text": "the dogs bark", "mimeType": "text/plain"},
            {"text": "an image", "mimeType": "image/png"},
        ]}})
        assert r.status_code == 200, r.text
        blocks = r.json()["data"]["file"]["blocks"]
        assert blocks[0]["tags"][-1]["name"] == "dog" and blocks[1]["tags"] == []  # not text: not tagged

        # POST /generations takes seed-shaped blocks too.
        r = await http.post("/generations", json={"generator": "echo", "blocks": [
            {"text": "shown words", "mimeType": "text/plain"}, {"text": "hidden", "mimeType": "image/png"},
        ]})
        assert r.status_code == 201, r.text
        events = await follow(server.url, r.json()["generation"]["id"])
        assert "".join(check_invariants(events).values()).split() == ["shown", "words"]


async def test_blockify_takes_only_its_modes(make_plugin_server: Callable[..., LiveServer]) -> None:
    server = make_plugin_server()
    text = "One. Two.\nThree.\n\nFour."
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = error_of(await call(http, "file-importer", "import", {"value": text, "blockify": "sentences"}), 422, "invalid_request")
        message = body["error"]["message"]
        assert "blockify" in message and all(mode in message for mode in ("paragraphs", "lines", "none"))
        for mode, count in (("paragraphs", 2), ("lines", 3), ("none", 1)):
            r = await call(http, "file-importer", "import", {"value": text, "blockify": mode})
            assert r.status_code == 200, r.text
            stored = (await http.get(f"/files/{r.json()['data']['file_id']}")).json()
            assert len(stored["blocks"]) == count, (mode, stored["blocks"])
