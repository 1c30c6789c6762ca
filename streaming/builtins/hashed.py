"""A dependency-free embedder: hashed word and character n-grams, L2-normalised.

Each block's text becomes a ``dimensions``-long vector (config, default 256): every word
unigram and bigram and every character trigram of each word (with boundary marks) is
hashed (BLAKE2b) to an index and a sign, and counted there. Texts sharing words and
word pieces get a high cosine similarity; no model, no download.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from streaming.builtins.text import words
from streaming.errors import InvalidRequestError
from streaming.plugin.embedder import Embedder
from streaming.plugin.inputs import BlockAndTagPluginInput
from streaming.plugin.outputs import EmbeddedItemsPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest

__all__ = ["HashedNgramEmbedder", "embed"]


def _grams(text: str) -> list[str]:
    toks = [t.lower() for t in words(text) if t[0].isalnum()]
    out = ["w:" + t for t in toks] + ["b:" + a + " " + b for a, b in zip(toks, toks[1:], strict=False)]
    for t in toks:
        marked = f"<{t}>"
        out += ["c:" + marked[i : i + 3] for i in range(max(1, len(marked) - 2))]
    return out


def embed(text: str, dimensions: int = 256) -> list[float]:
    """The hashed n-gram vector of ``text`` (all zeros for a text with no words)."""
    vec = [0.0] * dimensions
    for gram in _grams(text):
        h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "big")
        vec[h % dimensions] += 1.0 if (h >> 63) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec] if norm else vec


class HashedNgramEmbedder(Embedder):
    """One vector per block of the file, in order. Config: ``dimensions`` (8-4096, default 256)."""

    def run(self, request: PluginRequest[BlockAndTagPluginInput]) -> InvocableResponse[EmbeddedItemsPluginOutput]:
        dims: Any = self.config.get("dimensions", 256)
        if not isinstance(dims, int) or not 8 <= dims <= 4096:
            raise InvalidRequestError("dimensions must be an integer between 8 and 4096")
        assert request.data is not None
        vectors = [embed(b.text if b.is_text else "", dims) for b in request.data.file.blocks]
        return InvocableResponse(data=EmbeddedItemsPluginOutput(embeddings=vectors))
