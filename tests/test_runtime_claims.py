"""Conversation claims on their own, over a real memory store."""

from __future__ import annotations

import pytest

from streaming.errors import ConflictError, NotFoundError
from streaming.model import Block, File
from streaming.runtime.claims import ConversationClaims
from streaming.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


async def nothing_finishing(generation_id: str) -> None:
    return None


async def test_one_generation_at_a_time_and_only_the_owner_continues() -> None:
    store = MemoryStore()
    file = File(owner="alice")
    file.blocks.append(Block(text="hi", file_id=file.id))
    await store.put_file(file)
    claims = ConversationClaims(store, nothing_finishing)

    claimed = await claims.claim(file.id, "gen_1", "alice")
    assert [b.text for b in claimed.blocks] == ["hi"] and claims.holder(file.id) == "gen_1"
    with pytest.raises(ConflictError, match="gen_1"):
        await claims.claim(file.id, "gen_2", "alice")
    with pytest.raises(NotFoundError):
        await claims.claim(file.id, "gen_2", "bob")  # not told it exists, let alone busy
    with pytest.raises(NotFoundError):
        await claims.claim("file_nope", "gen_2", "alice")

    await claims.release(file.id, "gen_2")  # not its claim: nothing happens
    assert claims.holder(file.id) == "gen_1"
    await claims.release(file.id, "gen_1")
    assert claims.holder(file.id) is None
    await claims.claim(file.id, "gen_2", "alice")


async def test_the_next_turn_waits_for_the_one_before_to_write_its_last_state() -> None:
    store = MemoryStore()
    file = File()
    await store.put_file(file)
    waited: list[str] = []

    async def finishing(generation_id: str) -> None:
        # The generation before ends while we wait: it writes its block, then releases.
        waited.append(generation_id)
        file.blocks.append(Block(text="answer", file_id=file.id))
        await store.put_file(file)
        await claims.release(file.id, generation_id)

    claims = ConversationClaims(store, finishing)
    await claims.claim_new(file.id, "gen_1")
    claimed = await claims.claim(file.id, "gen_2", None)
    assert waited == ["gen_1"] and claims.holder(file.id) == "gen_2"
    assert [b.text for b in claimed.blocks] == ["answer"]  # read once claimed
