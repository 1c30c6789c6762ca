"""An incremental, pure SSE decoder: ``decode(chunk) -> [ServerSentEvent]``, ``flush()``.

Bytes may be split anywhere, including inside a multi-byte UTF-8 character or between
``\\r`` and ``\\n``; the decoder keeps what it cannot finish for the next chunk.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._buffer + self._utf8.decode(chunk)
        out: list[ServerSentEvent] = []
        start = 0
        n = len(text)
        while True:
            # Find the next line end: \n, \r\n or \r (a trailing \r may be half of \r\n).
            i = start
            while i < n and text[i] not in "\r\n":
                i += 1
            if i >= n:
                break
            if text[i] == "\r":
                if i + 1 >= n:
                    break
                end = i + 2 if text[i + 1] == "\n" else i + 1
            else:
                end = i + 1
            ev = self._line(text[start:i])
            if ev is not None:
                out.append(ev)
            start = end
        self._buffer = text[start:]
        return out

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: an unterminated event is dropped, as the SSE spec says."""
        self._buffer = ""
        self._event, self._data, self._id, self._retry = "", [], None, None
        return []

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            if not self._data and not self._event and self._id is None:
                return None
            ev = ServerSentEvent(
                event=self._event or "message",
                data="\n".join(self._data),
                id=self._id,
                retry=self._retry,
            )
            if self._id is not None:
                self.last_event_id = self._id
            self._event, self._data, self._id, self._retry = "", [], None, None
            return ev
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None
