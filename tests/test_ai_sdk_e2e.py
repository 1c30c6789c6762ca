"""The Vercel AI SDK's own clients against a real server on loopback: ``Chat`` (``ai``'s
AbstractChat with a plain state, what ``useChat`` wraps) and ``DefaultChatTransport`` +
``readUIMessageStream``, headless in Node, for ``ai`` 6 and ``ai`` 7 (7 on Node 20 or later).
Each scenario is a script in tests/node that prints one JSON object; Python checks it
against the server's own record of the generations (the native routes).

Needs ``node`` and ``npm ci`` in tests/node (``.ci/run`` installs both).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from streaming.server.app import ServerSettings, create_app

from streaming.tools import ToolRegistry
from streaming.wire import EventDecoder
from tests.conftest import LiveServer
from tests.invariants import check_invariants

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parent / "node"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "08_ai_sdk" / "chat.mjs"
#: the installed name of each major version (package.json: "ai7" is npm:ai@^7)
MAJORS = {"ai": "6.", "ai7": "7."}


def _packages() -> dict[str, str]:
    """The majors to drive: ai 7 declares Node 22 but runs on Node 20 (these tests show
    it); on an older Node only ai 6 (which asks for Node 18)."""
    node = shutil.which("node")
    if node is None:
        return MAJORS  # (each test then says Node is missing)
    major = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"], capture_output=True, text=True)
    return MAJORS if int(major.stdout.strip() or 0) >= 20 else {"ai": "6."}


PACKAGES = _packages()


def _node() -> str:
    node = shutil.which("node")
    assert node, "these tests need Node.js (bash .ci/run installs it)"
    assert (NODE_DIR / "node_modules").is_dir(), "run `npm ci` in tests/node (bash .ci/run does)"
    return node


def run_node(script: Path | str, url: str, package: str, timeout: float = 120) -> dict[str, Any]:
    proc = subprocess.run(
        [_node(), str(NODE_DIR / script if isinstance(script, str) else script), url, package],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, f"node {script} failed:\n{proc.stderr}"
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    # Every chunk the scenario received passes both ai 6's and ai 7's own chunk schema.
    assert out.get("refused", []) == [], out["refused"]
    return out


def get_time() -> str:
    """The time now (a server-side tool)."""
    return "12:00"


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server with a server-side tool, whose streams send a heartbeat comment whenever
    they are quiet for 0.1 s (the clients must read past them)."""
    tools = ToolRegistry()
    tools.register(get_time)
    return make_server(tools=tools, heartbeat_s=0.1)


def generation(live: LiveServer, gen_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{live.url}/generations/{gen_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    out: dict[str, Any] = answer.json()["generation"]
    return out


def events(live: LiveServer, gen_id: str) -> list[dict[str, Any]]:
    """The generation's whole log, through the native route."""
    decoder = EventDecoder()
    out: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{live.url}/generations/{gen_id}/events", timeout=30) as response:
        assert response.status_code == 200
        for raw in response.iter_bytes():
            out += [e.to_dict() for e in decoder.decode(raw)]
    check_invariants(out)
    return out


def types(chunks: list[Any]) -> list[str]:
    return [c["type"] if isinstance(c, dict) else c for c in chunks]


def parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k not in ("toolCallId", "id")} for p in message["parts"]]


def test_both_majors_are_installed_and_run_on_this_node() -> None:
    for package, major in MAJORS.items():
        version = json.loads((NODE_DIR / "node_modules" / package / "package.json").read_text())["version"]
        assert version.startswith(major), (package, version)
    assert subprocess.run([_node(), "--version"], capture_output=True, text=True, check=True).stdout.startswith("v")


@pytest.mark.parametrize("package", PACKAGES)
def test_exact_text_two_turns_in_one_conversation(live: LiveServer, package: str) -> None:
    out = run_node("text.mjs", live.url, package)
    assert out["status"] == "ready" and out["error"] is None
    user1, answer1, user2, answer2 = out["messages"]
    assert [m["role"] for m in (user1, answer1, user2, answer2)] == ["user", "assistant", "user", "assistant"]
    assert parts(answer1) == [{"type": "step-start"}, {"type": "text", "text": "hello streaming world", "state": "done"}]
    assert parts(answer2) == [{"type": "step-start"}, {"type": "text", "text": "a second turn", "state": "done"}]
    first, second = out["responses"]
    for response, answer in ((first, answer1), (second, answer2)):
        assert response["status"] == 200 and response["streamHeader"] == "v1"
        assert types(response["chunks"])[:2] == ["start", "start-step"]
        assert types(response["chunks"])[-3:] == ["finish-step", "finish", "[DONE]"]
        assert response["chunks"][0]["messageId"] == answer["id"]
        # The generation is one of the runtime's: its id in the header and the metadata.
        assert answer["metadata"]["generationId"] == response["generationId"]
        assert set(answer["metadata"]["usage"]) == {"inputTokens", "outputTokens", "totalTokens"}
    assert [f["finishReason"] for f in out["finishes"]] == ["stop", "stop"]
    # One chat id, one conversation: the second generation extends the first's.
    gen1, gen2 = generation(live, first["generationId"]), generation(live, second["generationId"])
    assert gen1["state"] == gen2["state"] == "succeeded"
    assert gen1["file_id"] == gen2["file_id"]
    file = httpx.get(f"{live.url}/files/{gen1['file_id']}", timeout=10).json()
    assert [b["text"] for b in file["blocks"]] == [
        "hello streaming world", "hello streaming world", "a second turn", "a second turn",
    ]
    assert events(live, gen2["id"])[-1]["type"] == "generation.completed"


@pytest.mark.parametrize("package", PACKAGES)
def test_regenerate_answers_again_and_the_conversation_follows_the_chat(live: LiveServer, package: str) -> None:
    out = run_node("regenerate.mjs", live.url, package)
    assert out["status"] == "ready" and out["error"] is None
    three_turns, after_last = out["seen"]
    # regenerate(): the last answer is replaced by a new message; the rest is as it was.
    assert after_last[:5] == three_turns[:5] and after_last[5] != three_turns[5]
    # regenerate({messageId}) of the first answer: the chat keeps only its question.
    user, answer = out["messages"]
    assert user["id"] == three_turns[0] and answer["id"] not in three_turns + after_last
    assert parts(answer) == [{"type": "step-start"}, {"type": "text", "text": "first question", "state": "done"}]
    requests = out["responses"]
    assert [r["status"] for r in requests] == [200] * 5
    for response in requests[3:]:  # the two regenerates: whole streams of new messages
        assert types(response["chunks"])[:2] == ["start", "start-step"]
        assert types(response["chunks"])[-3:] == ["finish-step", "finish", "[DONE]"]
    assert requests[-1]["chunks"][0]["messageId"] == answer["id"]
    # The server's conversation is the chat's: one question, its answer.
    last = generation(live, requests[-1]["generationId"])
    file = httpx.get(f"{live.url}/files/{last['file_id']}", timeout=10).json()
    assert [b["text"] for b in file["blocks"]] == ["first question", "first question"]
    assert events(live, last["id"])[-1]["type"] == "generation.completed"


@pytest.mark.parametrize("package", PACKAGES)
def test_client_tool_round_trip_continues_the_same_message(live: LiveServer, package: str) -> None:
    run = run_node("tools.mjs", live.url, package)
    out = run["client"]
    assert out["status"] == "ready" and out["error"] is None
    assert [c["toolName"] for c in out["toolCalls"]] == ["get_weather"]
    assert out["toolCalls"][0]["input"] == {"city": "Paris"}
    user, answer = out["messages"]  # one assistant message for both requests
    assert user["role"] == "user" and answer["role"] == "assistant"
    assert parts(answer) == [
        {"type": "step-start"},
        {"type": "text", "text": "Let me look. ", "state": "done"},
        {"type": "tool-get_weather", "state": "output-available", "input": {"city": "Paris"},
         "output": "sunny in Paris"},
        {"type": "step-start"},
        {"type": "text", "text": "[get_weather result: sunny in Paris] Done.", "state": "done"},
    ]
    first, second = run["responses"][:2]  # the client chat's two requests
    assert first["chunks"][-2]["finishReason"] == "tool-calls"
    assert second["chunks"][0]["messageId"] == first["chunks"][0]["messageId"] == answer["id"]
    gen1, gen2 = generation(live, first["generationId"]), generation(live, second["generationId"])
    assert gen1["state"] == gen2["state"] == "succeeded"
    assert gen1["file_id"] == gen2["file_id"]
    # The first generation ended at its tool turn; the second read the client's output.
    log = events(live, gen1["id"])
    assert [e["client_side"] for e in log if e["type"] == "tool.call"] == [True]
    assert not [e for e in log if e["type"] == "tool.result"]


@pytest.mark.parametrize("package", PACKAGES)
def test_a_server_tool_shows_with_its_output(live: LiveServer, package: str) -> None:
    out = run_node("tools.mjs", live.url, package)["server"]
    assert out["status"] == "ready" and out["error"] is None
    assert out["toolCalls"] == []  # the server ran it: onToolCall is not the client's business
    _, answer = out["messages"]
    assert parts(answer) == [
        {"type": "step-start"},
        {"type": "tool-get_time", "state": "output-available", "input": {}, "output": "12:00", "providerExecuted": True},
        {"type": "step-start"},
        {"type": "text", "text": "[get_time result: 12:00]", "state": "done"},
    ]
    log = events(live, answer["metadata"]["generationId"])
    assert [(e["tool_name"], e["result"]) for e in log if e["type"] == "tool.result"] == [("get_time", ["12:00"])]


@pytest.mark.parametrize("package", PACKAGES)
def test_a_failure_mid_stream_ends_the_parts_and_the_chat_carries_on(live: LiveServer, package: str) -> None:
    out = run_node("failure.mjs", live.url, package)
    failed = out["failed"]
    assert failed["status"] == "error"
    assert failed["error"] == "plugin_error: ScriptError: the model broke down"
    _, partial = failed["messages"]
    assert parts(partial) == [{"type": "step-start"}, {"type": "text", "text": "partial answer", "state": "done"}]
    first = out["responses"][0]
    kinds = types(first["chunks"])
    error_at = kinds.index("error")
    assert kinds[error_at - 2 : error_at + 1] == ["text-end", "finish-step", "error"]
    # (ai 7 stops reading at the error; what it read after it is the stream's end.)
    assert kinds[error_at + 1 :] == ["finish", "[DONE]"][: len(kinds) - error_at - 1]
    assert generation(live, first["generationId"])["state"] == "failed"
    # The next turn of the same chat is answered (the conversation was freed).
    assert out["status"] == "ready" and out["error"] is None
    assert parts(out["messages"][-1])[-1] == {"type": "text", "text": "again", "state": "done"}


@pytest.mark.parametrize("package", PACKAGES)
def test_resume_after_a_dropped_connection_has_every_part_once(live: LiveServer, package: str) -> None:
    out = run_node("resume.mjs", live.url, package)
    assert out["afterDrop"]["status"] == "error"  # the network error the client saw
    assert out["status"] == "ready" and out["error"] is None
    user, answer = out["messages"]
    assert parts(answer) == [{"type": "step-start"}, {"type": "text", "text": "one two three", "state": "done"}]
    post, replay, nothing = out["responses"]
    assert post["method"] == "POST" and types(post["chunks"])[-1] == "text-delta"  # cut there
    assert replay["method"] == "GET" and replay["url"].endswith("/stream") and replay["status"] == 200
    assert replay["generationId"] == post["generationId"] and replay["streamHeader"] == "v1"
    assert replay["chunks"][0] == post["chunks"][0]  # replayed from its start
    assert "".join(c["delta"] for c in replay["chunks"] if types([c]) == ["text-delta"]) == "one two three"
    assert types(replay["chunks"])[-3:] == ["finish-step", "finish", "[DONE]"]
    assert nothing["status"] == 204  # nothing runs any more
    # Resumed within the disconnect grace: the generation went on to its end.
    assert generation(live, post["generationId"])["state"] == "succeeded"


@pytest.mark.parametrize("package", PACKAGES)
def test_resume_of_a_tool_continuation_rebuilds_the_whole_message(live: LiveServer, package: str) -> None:
    out = run_node("resume-tools.mjs", live.url, package)
    assert out["afterDrop"]["status"] == "error"
    assert out["status"] == "ready" and out["error"] is None
    assert len(out["toolCalls"]) == 1  # the replayed call was not run again
    _, answer = out["messages"]
    assert parts(answer) == [
        {"type": "step-start"},
        {"type": "text", "text": "Let me look. ", "state": "done"},
        {"type": "tool-get_weather", "state": "output-available", "input": {"city": "Paris"}, "output": "sunny"},
        {"type": "step-start"},
        {"type": "text", "text": "Got it: [get_weather result: sunny] Done.", "state": "done"},
    ]
    first, second, replay = out["responses"]
    assert replay["method"] == "GET" and replay["generationId"] == second["generationId"]
    assert replay["chunks"][0]["messageId"] == first["chunks"][0]["messageId"] == answer["id"]
    assert generation(live, second["generationId"])["state"] == "succeeded"


@pytest.mark.parametrize("package", PACKAGES)
def test_stop_cancels_the_plugin(live: LiveServer, package: str) -> None:
    out = run_node("stop.mjs", live.url, package)
    assert out["status"] == "ready" and out["error"] is None
    assert out["stopped"]["status"] == 200
    assert out["stopped"]["body"]["generation"]["state"] == "cancelled"
    _, answer = out["messages"]
    assert parts(answer) == [{"type": "step-start"}, {"type": "text", "text": "first words ", "state": "done"}]
    post = out["responses"][0]
    assert types(post["chunks"])[-5:] == ["text-end", "finish-step", "abort", "finish", "[DONE]"]
    assert post["chunks"][-3]["reason"] == "stopped by the client"
    assert out["stopAgain"] == 204  # nothing runs on the chat any more
    gen_id = post["generationId"]
    assert generation(live, gen_id)["state"] == "cancelled"
    log = events(live, gen_id)
    assert log[-1] == {**log[-1], "type": "generation.cancelled", "reason": "stopped by the client"}
    assert "never sent" not in "".join(e.get("text", "") for e in log)


@pytest.mark.parametrize("package", PACKAGES)
def test_chat_stop_then_the_stop_route_cancels_at_once(make_server: Callable[..., LiveServer], package: str) -> None:
    live = make_server(disconnect_grace_s=120)  # the disconnect alone would not end it for minutes
    out = run_node("stop-client.mjs", live.url, package)
    assert out["status"] == "ready" and out["error"] is None
    assert [f["isAbort"] for f in out["finishes"]] == [True]
    _, answer = out["messages"]
    assert answer["parts"][-1]["text"] == "first words "  # what it had read when it stopped
    # The stop route cancelled it (not the disconnect, whose grace is far longer).
    generation_now = out["stopped"]["body"]["generation"]
    assert out["stopped"]["status"] == 200 and generation_now["state"] == "cancelled"
    log = events(live, generation_now["id"])
    assert log[-1]["type"] == "generation.cancelled" and log[-1]["reason"] == "stopped by the client"


@pytest.mark.parametrize("package", PACKAGES)
def test_unknown_model_is_our_404_and_the_server_carries_on(live: LiveServer, package: str) -> None:
    out = run_node("errors.mjs", live.url, package)
    unknown = out["unknown"]
    assert unknown["status"] == "error"
    error = json.loads(unknown["error"])["error"]
    assert error["code"] == "unknown_generator" and "no-such-model" in error["message"]
    assert "echo" in error["suggestion"]
    assert out["responses"][0]["status"] == 404 and out["responses"][0]["chunks"] == []
    assert out["status"] == "ready"
    assert parts(out["messages"][-1]) == [{"type": "step-start"}, {"type": "text", "text": "still here", "state": "done"}]


@pytest.mark.parametrize("package", PACKAGES)
def test_transport_and_read_ui_message_stream(live: LiveServer, package: str) -> None:
    out = run_node("stream.mjs", live.url, package)
    assert out["snapshots"] > 2  # the message as it grew
    assert parts(out["message"]) == [
        {"type": "step-start"},
        {"type": "reasoning", "text": "thinking it over", "state": "done"},
        {"type": "text", "text": "The answer is 42.", "state": "done"},
    ]


def chat_body(chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", **extra}


def test_malformed_bodies_are_our_errors_and_the_server_carries_on(live: LiveServer) -> None:
    url = f"{live.url}/api/chat"
    with httpx.Client(timeout=10) as client:
        not_json = client.post(url, content=b'{"id": "c', headers={"content-type": "application/json"})
        assert not_json.status_code == 400
        assert not_json.json()["error"]["code"] == "malformed_request"
        for body in ({}, {"id": "c", "model": "echo", "messages": []}, {**chat_body("c", "x"), "model": 3},
                     {**chat_body("c", "x", model="echo"), "messages": [{"id": "u", "role": "user", "parts": []}]}):
            wrong = client.post(url, json=body)
            assert wrong.status_code == 422, body
            error = wrong.json()["error"]
            assert error["code"] == "invalid_request" and error["message"] and "suggestion" in error
        answer = client.post(url, json=chat_body("after-errors", "fine", model="echo"))
        assert answer.status_code == 200 and answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
        frames = [line[6:] for line in answer.text.split("\n") if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        assert "".join(json.loads(f).get("delta", "") for f in frames[:-1]) == "fine"


def test_regenerate_of_no_such_message_is_refused_and_a_chat_the_server_lost_starts_over(live: LiveServer) -> None:
    url = f"{live.url}/api/chat"
    with httpx.Client(timeout=10) as client:
        first = client.post(url, json=chat_body("regen", "hello", model="echo"))
        assert first.status_code == 200 and first.text.rstrip().endswith("data: [DONE]")
        again = {**chat_body("regen", "hello", model="echo"), "trigger": "regenerate-message"}
        for body, param in (
            ({**again, "messageId": "msg_nope"}, "messageId"),
            ({**again, "messageId": None, "messages": [*again["messages"], {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]}]}, "messages"),
        ):
            wrong = client.post(url, json=body)
            assert wrong.status_code == 422, wrong.text
            error = wrong.json()["error"]
            assert error["code"] == "invalid_request" and error["param"] == param, error
        # A chat this server has never seen (its store was wiped): the client's messages
        # are the conversation, and the last one is answered.
        fresh = client.post(url, json={**chat_body("never-seen", "from the client", model="echo"), "trigger": "regenerate-message", "messageId": "a0"})
        assert fresh.status_code == 200
        frames = [line[6:] for line in fresh.text.split("\n") if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        assert "".join(json.loads(f).get("delta", "") for f in frames[:-1]) == "from the client"


class Chunks:
    """The UI message chunks of a streamed response, read a few at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def read(self, until: Callable[[dict[str, Any]], bool] | None = None) -> list[Any]:
        """Up to the first chunk ``until`` accepts, or to the end."""
        chunks: list[Any] = []
        for line in self.lines:
            if line.startswith("data: "):
                data = line[6:]
                chunks.append(data if data == "[DONE]" else json.loads(data))
                if data == "[DONE]" or (until is not None and until(chunks[-1])):
                    break
        return chunks


def text_of(body: str) -> str:
    """The text of a UI message stream, whatever its deltas."""
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


def first_text(chunk: dict[str, Any]) -> bool:
    return chunk["type"] == "text-delta"


SLOW = {"rounds": [[{"text": "started "}, {"sleep_ms": 60000}, {"text": "never"}]]}


def test_a_chat_generation_streams_and_cancels_through_the_native_routes(live: LiveServer) -> None:
    body = chat_body("native", "go", model="scripted", options=SLOW)
    with httpx.Client(timeout=30) as client, client.stream("POST", f"{live.url}/api/chat", json=body) as chat:
        gen_id = chat.headers["x-generation-id"]
        reader = Chunks(chat)
        head = reader.read(first_text)
        # The native stream of the same generation, from its start, and its cancel route.
        with client.stream("GET", f"{live.url}/generations/{gen_id}/events") as native:
            decoder = EventDecoder()
            seen: list[Any] = []
            for raw in native.iter_bytes():
                seen += decoder.decode(raw)
                if any(e.type == "block.delta" for e in seen):
                    break
        # While one runs, the chat is busy: a second request is refused before any stream.
        busy = client.post(f"{live.url}/api/chat", json=chat_body("native", "again", model="echo"))
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "conflict"
        cancelled = client.post(f"{live.url}/generations/{gen_id}/cancel")
        assert cancelled.json()["generation"]["state"] == "cancelled"
        tail = reader.read()
    assert types(head) == ["start", "start-step", "text-start", "text-delta"]
    assert types(tail) == ["text-end", "finish-step", "abort", "finish", "[DONE]"]
    # Its terminal event sent, the conversation takes the next request at once.
    answer = httpx.post(f"{live.url}/api/chat", json=chat_body("native", "next", model="echo"), timeout=10)
    assert answer.status_code == 200 and '"delta":"next"' in answer.text


def test_the_resume_route_follows_a_running_generation_from_its_start(live: LiveServer) -> None:
    body = chat_body("resumable", "go", model="scripted", options=SLOW)
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{live.url}/api/chat/resumable/stream").status_code == 204  # no such chat yet
        with client.stream("POST", f"{live.url}/api/chat", json=body) as chat:
            reader = Chunks(chat)
            first = reader.read(first_text)
            assert next(reader.lines) == ""  # (the end of the frame)
            assert next(reader.lines) == ": ping"  # the quiet stream's heartbeat
            with client.stream("GET", f"{live.url}/api/chat/resumable/stream") as again:
                assert again.headers["x-generation-id"] == chat.headers["x-generation-id"]
                assert again.headers["x-vercel-ai-ui-message-stream"] == "v1"
                replay = Chunks(again).read(first_text)
            # After a cursor (the seq in each frame's id): only what came later.
            with client.stream(
                "GET", f"{live.url}/api/chat/resumable/stream", headers={"Last-Event-ID": "1"}
            ) as later:
                tail = Chunks(later).read(first_text)
            stop = client.post(f"{live.url}/api/chat/resumable/stop")
            assert stop.status_code == 200 and stop.json()["generation"]["state"] == "cancelled"
            rest = reader.read()
        assert replay == first
        assert tail == first[2:]  # seq 1 said start and start-step
        assert types(rest)[-3:] == ["abort", "finish", "[DONE]"]
        assert client.get(f"{live.url}/api/chat/resumable/stream").status_code == 204
        assert client.post(f"{live.url}/api/chat/resumable/stop").status_code == 204


def test_a_dropped_stream_is_cancelled_after_the_grace(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(disconnect_grace_s=0.2)
    body = chat_body("dropped", "go", model="scripted", options=SLOW)
    with httpx.Client(timeout=30) as client, client.stream("POST", f"{live.url}/api/chat", json=body) as chat:
        gen_id = chat.headers["x-generation-id"]
        Chunks(chat).read(first_text)
    # Gone without resuming: on_disconnect (cancel) ends it once the grace has passed.
    deadline = time.monotonic() + 30
    while generation(live, gen_id)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert generation(live, gen_id)["state"] == "cancelled"
    assert events(live, gen_id)[-1]["reason"] == "client disconnected"


def test_the_example_runs(live: LiveServer) -> None:
    # Run from tests/node, whose node_modules has the `ai` it imports (a git-ignored copy).
    copy = NODE_DIR / ".example-08.mjs"
    copy.write_text(EXAMPLE.read_text())
    try:
        out = run_node(copy, live.url, "ai")
    finally:
        copy.unlink()
    assert out["answer"] == "hello from the AI SDK"
    assert generation(live, out["generationId"])["state"] == "succeeded"


KEY_A, KEY_B = "key-alice-0123456789", "key-bob-9876543210"


def test_with_api_keys_a_chat_id_is_a_conversation_per_key() -> None:
    live = LiveServer(create_app(ServerSettings(api_keys=[KEY_A, KEY_B]))).start()
    try:
        url = f"{live.url}/api/chat"
        alice, bob = ({"Authorization": f"Bearer {key}"} for key in (KEY_A, KEY_B))
        with httpx.Client(timeout=30) as client:
            refused = client.post(url, json=chat_body("shared", "hi", model="echo"))
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            body = chat_body("shared", "go", model="scripted", options=SLOW)
            with client.stream("POST", url, json=body, headers=alice) as chat:
                gen_id = chat.headers["x-generation-id"]
                reader = Chunks(chat)
                reader.read(first_text)
                # Bob's chat of the same id is his own conversation: nothing runs on it,
                # and it takes a request while Alice's runs.
                assert client.get(f"{url}/shared/stream", headers=bob).status_code == 204
                assert client.post(f"{url}/shared/stop", headers=bob).status_code == 204
                assert client.get(f"{live.url}/generations/{gen_id}", headers=bob).status_code == 404
                answer = client.post(url, json=chat_body("shared", "bob here", model="echo"), headers=bob)
                assert answer.status_code == 200 and text_of(answer.text) == "bob here"
                stop = client.post(f"{url}/shared/stop", headers=alice)
                assert stop.status_code == 200 and stop.json()["generation"]["id"] == gen_id
                assert types(reader.read())[-3:] == ["abort", "finish", "[DONE]"]
    finally:
        live.stop()
