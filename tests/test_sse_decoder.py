"""The incremental SSE decoder of the wire module, on its own."""

from __future__ import annotations

import random

from streaming.wire import SSEDecoder

STREAM = (
    "id: 1\r\nevent: block.delta\r\ndata: {\"text\":\"héllo € 日本 🎉\"}\r\n\r\n"
    ": heartbeat\n\n"
    "id: 2\ndata: line one\ndata: line two\n\n"
    "retry: 500\rid: 3\revent: x\rdata:no-space\r\r"
    "data: unterminated"
).encode()


def decode_in_pieces(sizes: list[int]) -> list:
    decoder = SSEDecoder()
    out = []
    pos = 0
    for size in sizes:
        out += decoder.decode(STREAM[pos : pos + size])
        pos += size
    out += decoder.decode(STREAM[pos:])
    return out + decoder.flush()


def test_any_split_gives_the_same_events() -> None:
    whole = decode_in_pieces([])
    assert [(e.id, e.event, e.data) for e in whole] == [
        ("1", "block.delta", '{"text":"héllo € 日本 🎉"}'),
        ("2", "message", "line one\nline two"),
        ("3", "x", "no-space"),
    ]
    assert whole[2].retry == 500
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.randint(1, 9) for _ in range(len(STREAM))]
        assert decode_in_pieces(sizes) == whole
    assert decode_in_pieces([1] * len(STREAM)) == whole  # byte by byte, inside characters too


def test_last_event_id_is_tracked() -> None:
    decoder = SSEDecoder()
    decoder.decode(b"id: 41\ndata: a\n\n")
    assert decoder.last_event_id == "41"
