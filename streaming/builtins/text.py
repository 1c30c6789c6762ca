"""Tokenising shared by the built-in plugins."""

from __future__ import annotations

import re

__all__ = ["words"]

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    """Words and punctuation marks, in order."""
    return _WORD.findall(text)
