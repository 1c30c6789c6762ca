"""The real sentence-embedding model (the `embeddings` extra), through the seed's HTTP surface."""

from __future__ import annotations

import math

import httpx
import pytest

from streaming.builtins import BUILTIN_PLUGINS
from streaming.builtins.sentence import available

pytestmark = pytest.mark.anyio


def test_registered_when_the_extra_is_installed() -> None:
    assert available(), "CI installs the embeddings extra"
    assert BUILTIN_PLUGINS["sentence-embedder"] == "streaming.builtins.sentence:SentenceEmbedder"


async def test_embeds_a_file_by_meaning(server) -> None:
    text = "A cat sleeps on the sofa.\n\nA kitten naps on the couch.\n\nStock markets fell sharply today."
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        r = await http.post("/plugins/file-importer/import", json={"data": {"value": text}})
        assert r.status_code == 200, r.text
        file_id = r.json()["data"]["file_id"]
        r = await http.post("/plugins/sentence-embedder/tag", json={"data": {"file_id": file_id}})
        assert r.status_code == 200, r.text
        cat, kitten, stocks = r.json()["data"]["embeddings"]
        # The hashed embedder, for comparison, shares no words between the first two.
        hashed = (await http.post("/plugins/hash-embedder/tag", json={"data": {"file_id": file_id}})).json()
    assert len(cat) == 384
    for v in (cat, kitten, stocks):
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    # Same meaning, no shared content words: close; another topic: far.
    assert cos(cat, kitten) > 0.5
    assert cos(cat, stocks) < 0.2
    h_cat, h_kitten, _ = hashed["data"]["embeddings"]
    assert cos(cat, kitten) > cos(h_cat, h_kitten) + 0.3
