"""Non-streaming ``/v1/chat/completions`` when a generation fails, end to end (a real
uvicorn, the real ``openai`` package as the client): it is answered with the status of its
error, as OpenAI would."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from streaming.server.errors import status_for_code
from streaming.server.openai.errors import failure_error

from streaming.dialects import Failure


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
