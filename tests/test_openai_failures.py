"""Non-streaming ``/v1/chat/completions`` when things go wrong, end to end (a real uvicorn,
the real ``openai`` package or a raw socket as the client): a generation that fails is
answered with the status of its error, and a client that leaves before the answer is a
disconnect like any other."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import openai
import pytest
from streaming.server.errors import status_for_code
from streaming.server.openai.errors import failure_error

from streaming.dialects import Failure

WAIT_S = 20.0  # a bound on polling for something that should happen soon (never a timing check)


@pytest.fixture
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def script(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"options": {"rounds": [list(steps)]}}


def test_a_refused_conversation_is_a_400_with_its_reason(client: openai.OpenAI) -> None:
    reason = "the conversation has nothing for the model to answer"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "hi"}],
            extra_body=script({"text": "partial "}, {"error": reason, "code": "invalid_request"}),
        )
    assert refused.value.status_code == 400
    assert refused.value.code == "invalid_request"
    assert reason in refused.value.message
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    # The generation is the same as ever: failed, under /generations.
    gen_id = refused.value.response.headers["x-generation-id"]
    stored = httpx.get(f"{client.base_url}".removesuffix("/v1/") + f"/generations/{gen_id}").json()
    assert stored["generation"]["state"] == "failed"
    assert stored["generation"]["error"]["code"] == "invalid_request"


def test_the_local_model_refusing_a_conversation_is_a_400(client: openai.OpenAI) -> None:
    """The issue's case: a conversation that ends with the assistant's message."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            max_tokens=4,
        )
    assert "nothing for the model to answer" in refused.value.message


def test_a_plugin_that_breaks_is_still_a_500(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as broken:
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}], extra_body=script({"error": "boom"})
        )
    assert broken.value.status_code == 500 and "boom" in broken.value.message


def test_failure_statuses_follow_the_error_classes() -> None:
    assert status_for_code("invalid_request") == 422
    assert status_for_code("context_length_exceeded") == 422
    assert status_for_code("tool_timeout") == 504
    assert status_for_code("model_unavailable") == 503
    assert status_for_code("upstream_error") == 502
    assert status_for_code("upstream_timeout") == 504
    assert status_for_code("plugin_error") == 500
    assert status_for_code("no_such_code") == 500
    # As OpenAI answers them: a request it cannot take is a 400, a cancel a 409.
    assert failure_error(Failure("failed", "invalid_request", "no"))[0] == 400
    assert failure_error(Failure("failed", "upstream_error", "down"))[0] == 502
    status, body = failure_error(Failure("cancelled", "cancelled", "the generation was cancelled: x"))
    assert status == 409 and body["error"]["code"] == "cancelled"


def running(server: Any) -> int:
    count: int = httpx.get(f"{server.url}/healthz").json()["running"]
    return count


def finished(server: Any, outcome: str) -> int:
    """Generations of the server's runtime that ended with ``outcome``."""
    count: int = server.runtime.metrics.generations.get(outcome, 0)
    return count


def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S} s for {what}")
        time.sleep(0.02)


def test_a_client_that_leaves_before_the_answer_cancels_the_generation(make_server: Any) -> None:
    server = make_server(disconnect_grace_s=0.05)
    body = json.dumps({
        "model": "scripted",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"rounds": [[{"text": "first "}, {"sleep_ms": 60_000}, {"text": "never"}]]},
    }).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
        sock.sendall(request)
        wait_until(lambda: running(server) == 1, "the generation to start")
    # The socket is closed: the generation is cancelled (on_disconnect), not run for nobody.
    wait_until(lambda: running(server) == 0, "the generation to end")
    assert finished(server, "cancelled") == 1
    assert finished(server, "succeeded") == 0
