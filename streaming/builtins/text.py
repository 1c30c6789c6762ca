"""Tokenising shared by the built-in plugins."""

from __future__ import annotations

import re

__all__ = ["split_holdout", "words"]

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    """Words and punctuation marks, in order."""
    return _WORD.findall(text)


def split_holdout(n: int, percent: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``0..n-1`` shuffled by ``seed`` and split: (train, held out ``percent``)."""
    import random

    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = int(round(n * max(0.0, min(percent, 0.9))))
    if percent > 0 and n >= 2:
        held = max(1, held)
    return sorted(order[held:]), sorted(order[:held])
