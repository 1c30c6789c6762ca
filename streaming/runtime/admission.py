"""Admission: whether a new generation may start here (the runtime accepts, and the global
and per-key limits of running generations allow it), counted in O(1) on start and end."""

from __future__ import annotations

from streaming.errors import LimitExceededError
from streaming.runtime.settings import RuntimeSettings

__all__ = ["Admission"]


class Admission:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.accepting = False
        self.running = 0
        self._per_owner: dict[str, int] = {}  # API key owner -> generations running

    def check(self, owner: str | None) -> None:
        """Raises LimitExceededError if a generation of ``owner`` may not start now."""
        if not self.accepting:
            raise LimitExceededError("the server is shutting down", suggestion="retry on another server")
        if self.running >= self.settings.max_running:
            raise LimitExceededError(
                f"{self.settings.max_running} generations are already running",
                suggestion="retry in a few seconds",
            )
        if owner is not None:
            mine = self._per_owner.get(owner, 0)
            if mine >= self.settings.max_running_per_owner:
                raise LimitExceededError(
                    f"this key already has {mine} generations running",
                    suggestion="wait for one to finish or cancel one",
                )

    def admit(self, owner: str | None) -> None:
        self.running += 1
        if owner is not None:
            self._per_owner[owner] = self._per_owner.get(owner, 0) + 1

    def release(self, owner: str | None) -> None:
        self.running -= 1
        if owner is not None:
            left = self._per_owner[owner] - 1
            if left:
                self._per_owner[owner] = left
            else:
                del self._per_owner[owner]

    def running_for(self, owner: str) -> int:
        return self._per_owner.get(owner, 0)
