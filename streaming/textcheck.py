"""Text at the door: JSON from a client, checked before anything is stored or run.

:func:`loads` is the one JSON reader for what comes over the wire (HTTP bodies, WebSocket
frames, JSON nested in a string field such as a tool call's ``arguments``). Beyond
``json.loads`` it refuses, each with a code of its own (status 400):

- ``too_deep``: arrays and objects nested deeper than ``max_depth``. Checked on the text
  *before* parsing, in a few linear passes, so a body of 100,000 ``[`` never reaches the
  recursive parser;
- ``invalid_text``: a lone surrogate (``"\\ud800"``, in a key or a value): JSON may escape
  one, but it is not Unicode text, and nothing downstream (UTF-8 encoders, SQLite, Redis,
  browsers) can take it;
- ``invalid_number``: a number that is not a finite double or a sane integer (``1e309``,
  an integer of thousands of digits);
- ``malformed_request``: not JSON (``NaN`` and ``Infinity`` are not JSON either).

Standard library only (and the core's error classes).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from streaming.errors import MalformedRequestError

__all__ = ["MAX_DEPTH", "loads"]

#: default nesting limit of arrays and objects
MAX_DEPTH = 64

_ESCAPE_PAIR = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
#: an escape that may decode to a surrogate (a pair is fine; the parsed text tells)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do
    not count). Linear: escapes go first, then whole strings, then everything but brackets."""
    bare = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE_PAIR.sub("", text)))
    return max(accumulate(map(_STEP.__getitem__, bare)), default=0)


def _constant(name: str) -> Any:
    raise MalformedRequestError(f"{name} is not JSON", suggestion="send numbers as finite decimal numbers")


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise MalformedRequestError(
            f"the number {literal[:40]} is out of range",
            code="invalid_number",
            suggestion="send numbers a double can hold",
        )
    return value


#: made once (``json.loads`` with hooks makes a decoder, and its scanner, per call)
_DECODER = json.JSONDecoder(parse_float=_float, parse_constant=_constant)


def _lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in ``value`` holds a lone surrogate. Iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH, what: str = "the body") -> Any:
    """``data`` as JSON, checked as the module says. ``what`` names it in messages.

    Raises:
        MalformedRequestError: it is not JSON, not UTF-8, nested too deep, holds a lone
            surrogate or a number out of range; its ``code`` says which (``too_deep``,
            ``invalid_text``, ``invalid_number`` or ``malformed_request``).
    """
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode(json.detect_encoding(data))
        except UnicodeDecodeError as exc:
            raise MalformedRequestError(f"{what} is not valid UTF-8: {exc}", suggestion="send UTF-8 JSON") from None
        text = text.removeprefix("\ufeff")
    opens = text.count("[") + text.count("{")
    if opens > max_depth and _depth(text) > max_depth:
        raise MalformedRequestError(
            f"{what} nests arrays and objects deeper than {max_depth} levels",
            code="too_deep",
            suggestion=f"send JSON nested at most {max_depth} levels deep",
        )
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise MalformedRequestError(f"{what} is not valid JSON: {exc}", suggestion="send a JSON object") from None
    except RecursionError:  # only if max_depth is set above what the parser can take
        raise MalformedRequestError(f"{what} nests too deep", code="too_deep", suggestion="send flatter JSON") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise MalformedRequestError(
            f"a number in {what} is out of range: {exc}",
            code="invalid_number",
            suggestion="send integers of at most a few hundred digits",
        ) from None
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(value):
        raise MalformedRequestError(
            f"{what} holds a lone surrogate (such as \\ud800): not Unicode text",
            code="invalid_text",
            suggestion="send valid Unicode: a \\uD8xx escape must be followed by a \\uDCxx one",
        )
    return value
