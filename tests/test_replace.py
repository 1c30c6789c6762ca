"""``replace``: a turn answered again. A request that continues a conversation may name
generations of it whose turns (their inputs and their outputs) leave it before it starts:
a retry of the last answer, or an edited message answered again (the AI SDK's
``regenerate``). On every store, over the wire."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.test_multitask import (
    GENERATORS,
    conversation,
    ended,
    events,
    final_text,
    started,
    store_url,
    turn,
)

pytestmark = pytest.mark.anyio

__all__ = ["store_url"]  # (the fixture, shared with the multitask tests)


async def answered(http: httpx.AsyncClient, prompt: str, file_id: str | None = None) -> dict[str, Any]:
    """A turn, once it has ended."""
    generation = await started(http, turn(prompt, file_id))
    await ended(http, generation["id"])
    return generation


async def test_a_turn_answered_again_replaces_it_whole(make_server: Any, store_url: str) -> None:
    live = make_server(store_url=store_url, generators=GENERATORS)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        file_id = (await answered(http, "hi"))["file_id"]
        second = await answered(http, "what is 2+2", file_id)
        answer_ids = {b["id"] for b in (await http.get(f"/generations/{second['id']}")).json()["blocks"]}

        again = await started(http, turn("what is 3+3", file_id, replace=[second["id"]]))
        evs = await events(http, again["id"])
        assert evs[-1]["type"] == "generation.completed"
        # It saw the conversation without the replaced turn: the first turn, then its input.
        assert final_text(evs) == "[user:hi|assistant:[user:hi] |user:what is 3+3] "
        assert await conversation(http, file_id) == [
            ("user", "hi", None),
            ("assistant", "[user:hi] ", "complete"),
            ("user", "what is 3+3", None),
            ("assistant", "[user:hi|assistant:[user:hi] |user:what is 3+3] ", "complete"),
        ]
        for block_id in answer_ids:  # the replaced answer's blocks read as gone
            assert (await http.get(f"/blocks/{block_id}")).status_code == 404
        # The replaced generation itself stays readable (its record and its log).
        assert (await ended(http, second["id"]))["generation"]["state"] == "succeeded"


async def test_replace_is_refused_clearly_and_changes_nothing(make_server: Any, store_url: str) -> None:
    live = make_server(store_url=store_url, generators=GENERATORS)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        first = await answered(http, "hi")
        file_id = first["file_id"]
        other = await answered(http, "elsewhere")  # a generation of another conversation
        before = await conversation(http, file_id)

        refusals: list[tuple[dict[str, Any], str]] = [
            (turn("no conversation", replace=[first["id"]]), "file_id"),
            (turn("not its turn", file_id, replace=[other["id"]]), other["id"]),
            (turn("no such generation", file_id, replace=["gen_nope"]), "gen_nope"),
            (turn("not a list", file_id, replace="gen_x"), "replace"),
        ]
        for body, named in refusals:
            r = await http.post("/generations", json=body)
            assert r.status_code == 422, (body, r.text)
            error = r.json()["error"]
            assert error["code"] and named in error["message"] + str(error.get("details", "")), error
        assert await conversation(http, file_id) == before
        # Nothing was left claimed: the conversation goes on.
        after = await started(http, turn("still here", file_id))
        assert (await ended(http, after["id"]))["generation"]["state"] == "succeeded"
