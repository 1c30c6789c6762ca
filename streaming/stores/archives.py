"""Model archives (``TrainableModel`` checkpoints) kept by the store.

An :class:`ArchiveStore` keeps opaque bytes under a key such as
``<plugin_instance_id>/<handle>.zip`` and a digest of each, so a process can tell whether
the copy it has cached is still current without downloading it again. Every
:class:`~streaming.stores.base.Store` is one (``put_archive``, ``get_archive``,
``archive_digest``):

- ``memory://``: a dict in this process;
- ``sqlite:///path``: a table ``archives`` in the same file (survives restarts);
- ``redis://``: hashes ``<prefix>archive:<key>`` (shared by every process on that Redis).

Keys are checked by :func:`check_archive_key`: relative, ``/``-separated names made of
``[A-Za-z0-9._-]``, no ``..``, no empty part; anything else is refused, never normalised.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from streaming.errors import InvalidRequestError

if TYPE_CHECKING:
    from streaming.stores.base import Store

__all__ = [
    "ArchiveStore",
    "MemoryArchives",
    "archive_digest",
    "archives_for",
    "check_archive_key",
    "check_handle",
]

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def check_handle(handle: str, what: str = "checkpoint handle") -> str:
    """``handle`` if it is a safe single name (no ``/``, no ``..``, at most 128 chars).

    Raises:
        InvalidRequestError: it is not.
    """
    if not isinstance(handle, str) or not _PART.match(handle) or ".." in handle:
        raise InvalidRequestError(
            f"invalid {what} {handle!r}",
            suggestion="use 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
        )
    return handle



def check_archive_key(key: str) -> str:
    """``key`` if it is a safe archive key.

    Raises:
        InvalidRequestError: empty, absolute, with ``..`` or an empty part, or characters
            outside ``[A-Za-z0-9._-/]``.
    """
    parts = key.split("/")
    if not key or len(key) > 512 or any(p in ("", ".", "..") or not _PART.match(p) for p in parts):
        raise InvalidRequestError(
            f"invalid archive key {key!r}",
            suggestion="use names of letters, digits, '.', '_' and '-' separated by '/'",
        )
    return key


def archive_digest(data: bytes) -> str:
    """The digest archives are compared by (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


@runtime_checkable
class ArchiveStore(Protocol):
    """Where checkpoints are kept. Every method raises InvalidRequestError on a bad key."""

    async def put_archive(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (replacing it); return its digest."""
        ...

    async def get_archive(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None."""
        ...

    async def archive_digest(self, key: str) -> str | None:
        """The digest of the bytes under ``key`` (cheap: no download), or None."""
        ...


class MemoryArchives:
    """Archives in this process's memory."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, str]] = {}

    async def put_archive(self, key: str, data: bytes) -> str:
        digest = archive_digest(data)
        self._data[check_archive_key(key)] = (bytes(data), digest)
        return digest

    async def get_archive(self, key: str) -> bytes | None:
        found = self._data.get(check_archive_key(key))
        return found[0] if found else None

    async def archive_digest(self, key: str) -> str | None:
        found = self._data.get(check_archive_key(key))
        return found[1] if found else None


def archives_for(store: Store) -> ArchiveStore:
    """Where ``store`` keeps archives: the store itself (every store implements them)."""
    return store
