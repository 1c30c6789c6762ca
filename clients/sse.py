"""The incremental SSE decoder (``decode(chunk) -> [ServerSentEvent]``, ``flush()``).

Defined in :mod:`streaming.wire`, with :class:`~streaming.wire.EventDecoder`, which decodes
a generation's stream into its events.
"""

from __future__ import annotations

from streaming.wire import EventDecoder, ServerSentEvent, SSEDecoder

__all__ = ["EventDecoder", "SSEDecoder", "ServerSentEvent"]
