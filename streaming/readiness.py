"""Which generators can answer a chat message as they are, and why the others cannot.

A generator says so itself with two optional members:

- ``description`` (a class attribute): one line on what it does;
- ``chat_unavailable_reason()`` (plain or ``async``): ``None`` when a plain chat message gets an answer now,
  else why not and what to do (``"train it first: POST /plugins/ngram/train"``).

A generator that has neither is taken to answer chats. The demo page and ``streaming chat``
offer the ready ones and show the reason beside the rest.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["describe"]


async def describe(name: str, plugin: Any) -> dict[str, Any]:
    """``{"name", "chat", "description", "reason"}`` for one registered generator."""
    probe = getattr(plugin, "chat_unavailable_reason", None)
    try:
        reason = probe() if callable(probe) else None
        if inspect.isawaitable(reason):
            reason = await reason
    except Exception as exc:  # a probe that fails says why, it does not break the listing
        reason = f"cannot tell whether it is ready: {exc}"
    description = getattr(plugin, "description", None)
    return {
        "name": name,
        "chat": reason is None,
        "description": description if isinstance(description, str) else "",
        "reason": reason if isinstance(reason, str) or reason is None else str(reason),
    }
