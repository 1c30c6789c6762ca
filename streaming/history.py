"""What the plugin sees in its next round of a generation: a pure decision.

After a round of tool calls, the plugin runs again on the request's context followed by
every finished round's blocks, in a stable order: the round's outputs and invocations in
the order they were created, then the tool results in call order.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["next_history", "turn_ends_with_client_calls"]


def next_history(history: Sequence[str], created: Sequence[str], results: Sequence[str]) -> list[str]:
    """The block ids of every finished round once this one is done.

    Args:
        history: the ids the previous rounds left.
        created: every block the generation has created so far, in order (results included).
        results: this round's result blocks, in call order.
    """
    seen = set(history) | set(results)
    return [*history, *(b for b in created if b not in seen), *results]


def turn_ends_with_client_calls(client_tools: str, client_side: Sequence[bool]) -> bool:
    """With ``client_tools="return"`` the client answers its calls in its next request: a
    round with a client-side call ends the generation (once the server's calls are done)."""
    return client_tools == "return" and any(client_side)
