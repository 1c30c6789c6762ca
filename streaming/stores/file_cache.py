"""The conversations a store only this process writes has last written or read.

A turn reads its conversation twice (before and after claiming it) and a store that keeps
JSON decodes every block of it each time: on sqlite, a conversation of 100 blocks cost a
turn more to read than to stream 100 chunks. A store that is the only writer of its file
(:class:`~streaming.stores.sqlite.SqliteStore`: one process per file) knows every change
to a conversation as it makes it, so it can answer a read from what it last wrote: a copy
of the blocks instead of their decoding; and a write of a conversation rewrites only the
blocks that changed since.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from streaming.model import Block, File

__all__ = ["FileCache"]


class FileCache:
    """At most ``size`` conversations holding ``max_blocks`` blocks and ``max_chars``
    characters of text in all, the least recently used dropped first. What comes out is a
    copy, and so is what goes in unless its caller hands it over (changes it no more):
    callers may change their copies."""

    def __init__(self, size: int = 4096, max_blocks: int = 20_000, max_chars: int = 8_000_000) -> None:
        self.size = size
        self.max_blocks = max_blocks
        self.max_chars = max_chars
        self._files: OrderedDict[str, File] = OrderedDict()
        self._weights: dict[str, tuple[int, int]] = {}  # blocks and characters of each kept
        self._blocks = self._chars = 0  # in all
        #: counts every change: a read from the file that raced one is not kept
        self.version = 0

    def get(self, file_id: str) -> File | None:
        file = self._files.get(file_id)
        if file is None:
            return None
        self._files.move_to_end(file_id)
        return file.snapshot()

    def put(self, file: File, *, handed_over: bool = False) -> list[Block]:
        """``file`` is being written: keep it, and return its blocks unlike those of the one
        kept for it (all if none was), the ones to write. A turn rewrites its conversation
        with a block or two new and the rest as they were: those keep the copies already
        kept (equal, and never handed out). ``handed_over``: the caller changes neither
        ``file`` nor its blocks after this call, so they are kept as they are."""
        self.version += 1
        kept = self._files.get(file.id)
        if kept is None:
            self._keep(file, handed_over=handed_over)
            return file.blocks
        known = {b.id: b for b in kept.blocks}
        changed: list[Block] = []
        same: dict[str, Block] = {}
        for block in file.blocks:
            old = known.get(block.id)
            if old is not None and (old is block or old == block):
                same[block.id] = old
            else:
                changed.append(block)
        self._keep(file, same, handed_over=handed_over)
        return changed

    def read(self, file: File, version: int) -> None:
        """``file`` as read from the store, the read having begun at ``version``."""
        if version == self.version:
            self._keep(file)

    def blocks_written(self, blocks: Sequence[Block]) -> None:
        """Blocks written on their own: the conversations holding them are read again."""
        self.version += 1
        for block in blocks:
            if block.file_id is None:  # (whose it is, unknown: none is kept)
                self.clear()
                return
            self._drop(block.file_id)

    def clear(self) -> None:
        self.version += 1
        self._files.clear()
        self._weights.clear()
        self._blocks = self._chars = 0

    def _keep(self, file: File, same: dict[str, Block] | None = None, *, handed_over: bool = False) -> None:
        """Keep a copy of ``file`` (``handed_over``: ``file`` itself); ``same``: copies
        already kept of some of its blocks."""
        self._drop(file.id)
        blocks, chars = len(file.blocks), sum(len(b.text) for b in file.blocks)
        if blocks > self.max_blocks or chars > self.max_chars:
            return
        if handed_over:
            self._files[file.id] = file
        elif same:
            copies = [kept if (kept := same.get(b.id)) is not None else b.snapshot() for b in file.blocks]
            self._files[file.id] = file.model_copy(update={"blocks": copies, "tags": list(file.tags)})
        else:
            self._files[file.id] = file.snapshot()
        self._weights[file.id] = (blocks, chars)
        self._blocks += blocks
        self._chars += chars
        while len(self._files) > self.size or self._blocks > self.max_blocks or self._chars > self.max_chars:
            self._drop(next(iter(self._files)))

    def _drop(self, file_id: str) -> None:
        if self._files.pop(file_id, None) is not None:
            blocks, chars = self._weights.pop(file_id)
            self._blocks -= blocks
            self._chars -= chars
