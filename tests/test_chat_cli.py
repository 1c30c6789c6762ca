"""``streaming chat`` under a real pseudo-terminal (pexpect) against a real server."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pexpect
import pytest

from tests.conftest import LiveServer

TOOL_SCRIPT = {
    "rounds": [[{"tool_call": {"name": "get_time", "args": {}}}], [{"echo_tool_results": True}]]
}


@pytest.fixture
def chat(server: LiveServer) -> Iterator[Any]:
    children: list[pexpect.spawn] = []

    def spawn(generator: str = "echo") -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "streaming.server.cli", "chat", server.url, "--generator", generator],
            encoding="utf-8",
            timeout=20,
            dimensions=(50, 400),
        )
        children.append(child)
        child.expect_exact("you> ")
        return child

    yield spawn
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def conversation_id(child: pexpect.spawn) -> str:
    child.sendline("/info")
    child.expect(r"conversation (file_[0-9a-f]+);")
    file_id: str = child.match.group(1)
    child.expect_exact("you> ")
    return file_id


def get(server: LiveServer, path: str) -> dict[str, Any]:
    response = httpx.get(server.url + path)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def roles(blocks: list[dict[str, Any]]) -> list[str]:
    return [t["value"]["string-value"] for b in blocks for t in b["tags"] if t["kind"] == "chat"]


def test_chat_keeps_one_conversation(server: LiveServer, chat: Any) -> None:
    child = chat()
    child.sendline("hello there wörld 🌍")
    child.expect_exact("bot> hello there wörld 🌍\r\n")
    child.expect_exact("you> ")
    child.sendline("and again")
    child.expect_exact("bot> and again\r\n")
    child.expect_exact("you> ")
    file = get(server, f"/files/{conversation_id(child)}")
    assert [b["text"] for b in file["blocks"]] == [
        "hello there wörld 🌍",
        "hello there wörld 🌍",
        "and again",
        "and again",
    ]
    assert roles(file["blocks"]) == ["user", "assistant", "user", "assistant"]
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_stops_the_answer_not_the_chat(server: LiveServer, chat: Any) -> None:
    child = chat()
    child.sendline(json.dumps({"repeat": 2000, "delay_ms": 5}).join(["/options ", ""]))
    child.expect_exact("you> ")
    child.sendline("tok ")
    child.expect_exact("bot> tok tok tok ")
    child.sendintr()
    child.expect_exact("[cancelled: cancelled by client]")
    around = child.before
    child.expect_exact("you> ")
    # Said once: the aborted block's line is folded into the cancel's.
    around += child.before
    assert "cancelled by client" not in around, around
    file_id = conversation_id(child)
    answer = get(server, f"/files/{file_id}")["blocks"][-1]
    assert answer["stream_state"] == "aborted"
    assert answer["text"].startswith("tok tok tok ") and answer["text"] != "tok " * 2000
    assert get(server, f"/generations/{answer['request_id']}")["generation"]["state"] == "cancelled"
    # The chat goes on, in the same conversation.
    child.sendline("/options {}")
    child.expect_exact("you> ")
    child.sendline("still here")
    child.expect_exact("bot> still here\r\n")
    child.expect_exact("you> ")
    assert conversation_id(child) == file_id
    # Ctrl-C at the prompt does not leave either; Ctrl-D does.
    child.sendintr()
    child.expect_exact("/quit leaves)")
    child.sendline("/info")
    child.expect_exact("conversation " + file_id)
    child.expect_exact("you> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_tool_calls_and_results_are_shown(server: LiveServer, chat: Any) -> None:
    child = chat("scripted")
    child.sendline("/options " + json.dumps(TOOL_SCRIPT))
    child.expect_exact("you> ")
    child.sendline("/tools on")
    child.expect_exact("you> ")
    child.sendline("what time is it?")
    child.expect_exact("  [tool call] get_time({})\r\n")
    child.expect(r"  \[tool result\] get_time -> (\S+)\r\n")
    when = child.match.group(1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", when)
    child.expect_exact(f"bot> [get_time result: {when}]\r\n")
    child.expect_exact("you> ")
    file = get(server, f"/files/{conversation_id(child)}")
    assert roles(file["blocks"]) == ["user", "assistant", "assistant", "tool", "assistant"]
    child.sendline("/quit")
    child.expect(pexpect.EOF)


def test_errors_are_shown_and_the_chat_goes_on(server: LiveServer, chat: Any) -> None:
    child = chat("no-such-generator")
    child.sendline("hi")
    child.expect_exact("[error: unknown_generator: no generator named 'no-such-generator'")
    child.expect_exact("you> ")
    child.sendline("/generator scripted")
    child.expect_exact("you> ")
    child.sendline(
        "/options " + json.dumps({"rounds": [[{"text": "partial "}, {"error": "boom"}]]})
    )
    child.expect_exact("you> ")
    child.sendline("go")
    child.expect_exact("bot> partial ")
    child.expect_exact("[failed: plugin_error: ScriptError: boom]")
    child.expect_exact("you> ")
    child.sendline("/generator echo")
    child.expect_exact("you> ")
    child.sendline("fine")
    child.expect_exact("bot> fine\r\n")
    child.sendline("/quit")
    child.expect(pexpect.EOF)


def test_unreachable_server(tmp_path: Any) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "streaming.server.cli", "chat", "http://127.0.0.1:9"],
        encoding="utf-8",
        timeout=20,
    )
    child.expect_exact("cannot connect to http://127.0.0.1:9")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2


def test_an_unknown_or_unready_generator_is_refused_at_once(server: LiveServer, chat: Any) -> None:
    child = chat()
    child.sendline("/generator nope")
    child.expect_exact("no generator named 'nope'; these answer: ")
    child.expect_exact("still talking to 'echo'")
    child.sendline("/generator openai")
    child.expect_exact("'openai' cannot answer a chat: no upstream configured")
    child.sendline("hello")
    child.expect_exact("bot> hello\r\n")
    child.sendline("/generator scripted")
    child.expect_exact("(now talking to 'scripted'")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

