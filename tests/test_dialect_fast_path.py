"""The fast path of a dialect's text deltas (``text_delta``: a frame formatted around the
text the event's JSON already escapes) against the slow one (``feed``, then ``encode_json``):
the same bytes for texts of every kind, for events in every state a store hands them back
in, replayed from every cursor, and the same answer at the end (no loop, no server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from streaming.server.frames import DialectFrames
from streaming.server.routes.ai_sdk import UIFrames
from streaming.server.routes.messages import MessagesFrames
from streaming.server.routes.openai import stream_error
from streaming.server.routes.responses import ResponsesFrames

from streaming.dialects import HOLES, TextParts, json_template
from streaming.dialects.anthropic import MessagesProjection
from streaming.dialects.openai_chat import ChatChunkProjection
from streaming.dialects.responses import ResponsesProjection
from streaming.dialects.ui_message import REASONING_MIME, UIMessageProjection
from streaming.events import Event, encode_json
from tests.test_openai_projection import GEN, Log, block

#: texts of every kind a JSON string escapes, or keeps as it is (no lone surrogate)
TEXTS = [
    "plain ",
    'say "hi" ',
    "back\\slash \\\" \\n\\u00e9 ",
    "ctrl \x00\x01\x08\t\n\r\x0b\x0c\x1b\x1f\x7f ",
    "é ü ß ñ ",
    "中文 日本語 ",
    "😀👍🏽 🧑‍🚀 ",
    "\u2028\u2029\ufeff ",
    "</script><!-- ",
    ',"text":"x"} ',
    '","offset":1,"text":"',
    "",
    "end",
]


def text_log(texts: list[str] = TEXTS, *, coalesce: bool = False) -> Log:
    """Two text blocks and a reasoning block streaming ``texts`` in turns, then the end."""
    log = Log()
    log.started(("b1", "text/plain"), ("r1", REASONING_MIME), ("img", "image/png"))
    for n, text in enumerate(texts):
        event = log.delta("b1", n, text)
        if coalesce and text:
            assert event.try_extend("b1", text[::-1])
        log.delta("r1", n, text[::-1])
        log.delta("img", n, "iVBOR")
    log.add("block.completed", block_id="r1", length=1)
    log.add("block.created", block=block("b2"))
    for n, text in enumerate(reversed(texts)):
        log.delta("b2", n, text)
    log.add("block.completed", block_id="b1", length=1)
    log.add("block.completed", block_id="b2", length=1)
    log.add("generation.completed", usage=[
        {"operation_unit": "prompt tokens", "operation_amount": 5},
        {"operation_unit": "sampled tokens", "operation_amount": 9},
    ])
    return log


def failing_log() -> Log:
    log = Log()
    log.started(("b1", "text/plain"))
    for n, text in enumerate(TEXTS):
        log.delta("b1", n, text)
    log.add("block.aborted", block_id="b1", reason="generation failed: plugin_error")
    log.add("generation.failed", error={"code": "plugin_error", "message": "boom", "suggestion": None})
    return log


def states(log: Log, state: str) -> list[Event]:
    """The log's events as a reader gets them: fresh (its dict, a coalesced delta's parts),
    sealed (its JSON), framed (its SSE frame), or read back from a store's JSON."""
    events = log.events
    if state == "sealed":
        for event in events:
            event.seal()
    elif state == "framed":
        for event in events:
            event.to_sse()
    elif state == "stored":
        events = [Event.from_json(event.to_json()) for event in events]
    return events


STATES = ["fresh", "sealed", "framed", "stored"]
LOGS: dict[str, Callable[[], Log]] = {
    "text": text_log,
    "coalesced": lambda: text_log(coalesce=True),
    "failing": failing_log,
}


# -- the event's text as JSON --


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("text", TEXTS)
def test_a_deltas_text_json_is_what_encode_json_writes(state: str, text: str) -> None:
    log = Log()
    log.delta("blk_1", 0, text)
    [event] = states(log, state)
    assert event.delta_json() == ("blk_1", encode_json(text))


@pytest.mark.parametrize("state", ["fresh", "sealed"])
@pytest.mark.parametrize("text", TEXTS)
def test_a_deltas_frame_made_in_one_step_is_the_frame_of_its_json(state: str, text: str) -> None:
    """A delta not yet encoded is framed straight from its fields: the same bytes as the
    frame around its JSON, whole text and all (a coalesced one too)."""
    framed = Event.delta(7, GEN, "blk_1", 3, text)
    assert framed.try_extend("blk_1", "more")
    reference = Event.delta(7, GEN, "blk_1", 3, text)
    assert reference.try_extend("blk_1", "more")
    if state == "sealed":
        framed.seal()
    js = reference.to_json()
    assert framed.to_sse() == f"id: 7\nevent: block.delta\ndata: {js}\n\n".encode()
    assert framed.to_json() == js and not framed.try_extend("blk_1", "late")
    assert framed.data == {"block_id": "blk_1", "offset": 3, "text": text + "more"}


def test_a_coalesced_deltas_text_json_is_its_whole_text_and_does_not_seal_it() -> None:
    event = Event.delta(1, GEN, "b1", 0, 'a"')
    assert event.try_extend("b1", "\\b")
    assert event.delta_json() == ("b1", encode_json('a"\\b'))
    assert not event.sealed and event.try_extend("b1", "c")
    assert event.delta_json() == ("b1", encode_json('a"\\bc'))


@pytest.mark.parametrize("js", [
    # Written by someone else: another order, spaces, a field after the text.
    '{"seq":1,"type":"block.delta","generation_id":"g","block_id":"b","offset":0,"text":"x\\"y"}',
    '{"type": "block.delta", "seq": 1, "generation_id": "g", "block_id": "b", "offset": 0, "text": "x\\"y"}',
    '{"type":"block.delta","seq":1,"generation_id":"g","block_id":"b","offset":0,"text":"x\\"y","n":"z"}',
    '{"type":"block.delta","seq":1,"generation_id":"g","block_id":"b","offset":0,"text":"x\\u0022y"}',
    '{"type":"block.delta","seq":1,"generation_id":"g","block_id":"b\\u0031","offset":0,"text":"x\\"y"}',
])
def test_a_delta_written_otherwise_is_read_back(js: str) -> None:
    block_id, text = Event.from_json(js).delta_json()
    assert block_id in ("b", "b1") and text == encode_json('x"y')


def test_only_a_delta_has_text_json() -> None:
    with pytest.raises(KeyError):
        Event("block.completed", 1, GEN, {"block_id": "b"}).delta_json()


# -- frames: the fast path's bytes are the slow path's --


def chat_frames(after: int = -1, **options: Any) -> DialectFrames:
    projection = ChatChunkProjection(completion_id=f"chatcmpl-{GEN}", created=7, model="m", **options)
    return DialectFrames(projection, error=stream_error)


def responses_frames(after: int = -1) -> ResponsesFrames:
    return ResponsesFrames(ResponsesProjection(response_id=f"resp_{GEN}", model="m", created_at=7, after=after))


def messages_frames(after: int = -1) -> MessagesFrames:
    return MessagesFrames(MessagesProjection(message_id=f"msg_{GEN}", model="m", max_tokens=9, after=after))


def ui_frames(after: int = 0) -> UIFrames:
    return UIFrames(UIMessageProjection(message_id="msg_1"), after)


DIALECTS: dict[str, Callable[..., Any]] = {
    "chat": chat_frames,
    "chat with usage": lambda after=-1: chat_frames(include_usage=True),
    "responses": responses_frames,
    "messages": messages_frames,
    "ui": ui_frames,
}


def stream(frames: Any, events: list[Event], *, fast: bool = True, batch: int = 3) -> bytes:
    if not fast:
        frames.text_delta = None  # every event fed, every object encoded
    body = frames.opening()
    for start in range(0, len(events), batch):
        body += frames.batch(events[start : start + batch])
    return body + frames.closing()


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("log", LOGS)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_fast_paths_bytes_are_the_slow_paths(dialect: str, log: str, state: str) -> None:
    make = DIALECTS[dialect]
    slow = stream(make(), LOGS[log]().events, fast=False)
    frames = make()
    fast = stream(frames, states(LOGS[log](), state))
    assert fast == slow
    assert fast.count(b"data: ") > len(TEXTS)  # the deltas are there
    for text in TEXTS[:-2]:
        assert encode_json(text)[1:-1].encode() in fast


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_lone_surrogates_read_the_same_both_ways(dialect: str, state: str) -> None:
    """A lone surrogate is written as its escape; two read back from JSON are one
    character (as any JSON reader sees them), on either path."""
    texts = ["a\ud800b ", "\ud83d\ude00 ", "\udfff", "x"]
    make = DIALECTS[dialect]
    slow = stream(make(), states(text_log(texts), state), fast=False)
    assert stream(make(), states(text_log(texts), state)) == slow


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_fast_path_takes_every_delta_but_a_parts_first(dialect: str) -> None:
    frames = DIALECTS[dialect]()
    fast = frames.text_delta
    assert fast is not None
    taken: list[str] = []

    def counted(block_id: str, text_json: str) -> str | None:
        js = fast(block_id, text_json)
        if js is not None:
            taken.append(block_id)
        return js

    frames.text_delta = counted
    stream(frames, states(text_log(), "sealed"))
    # Every non-empty text of a text block (reasoning is one) but each part's first, which
    # starts it (a chat chunk starts nothing); an image's bytes are not text.
    shown = sum(1 for text in TEXTS if text) - (0 if dialect.startswith("chat") else 1)
    assert taken.count("b1") == taken.count("r1") == taken.count("b2") == shown
    assert set(taken) == {"b1", "r1", "b2"}


def cursor(frame: str) -> int | None:
    """A frame's cursor: its ``id``, or its ``sequence_number`` (None: it has neither)."""
    fields = dict(line.split(": ", 1) for line in frame.split("\n"))
    if "id" in fields:
        return int(fields["id"])
    data = fields["data"]
    return None if data == "[DONE]" else json.loads(data).get("sequence_number")


@pytest.mark.parametrize("dialect", ["responses", "messages", "ui"])
def test_a_replay_through_the_fast_path_from_every_cursor_is_the_tail(dialect: str) -> None:
    """The frames after cursor N (a sequence number, an event id, an event's seq) are the
    tail of the whole stream's, however the events are batched."""
    make = DIALECTS[dialect]
    whole = stream(make(), text_log(TEXTS[:6]).events, fast=False).decode().split("\n\n")[:-1]
    cursors = [c for c in map(cursor, whole) if c is not None]
    assert len(cursors) > 12 and cursors == sorted(cursors)
    for after in range(-1, cursors[-1] + 1):
        for batch in (1, 4):
            tail = stream(make(after), states(text_log(TEXTS[:6]), "stored"), batch=batch).decode()
            expected = [f for f in whole if (c := cursor(f)) is None or c > after]
            assert tail.split("\n\n")[:-1] == expected, (after, batch)


@pytest.mark.parametrize("log", LOGS)
def test_the_answer_after_the_fast_path_is_the_slow_paths(log: str) -> None:
    """What a projection keeps of the text (decoded only when asked for) says the same."""
    pairs = []
    for fast in (True, False):
        chat, responses, messages = chat_frames(), responses_frames(), messages_frames()
        for frames in (chat, responses, messages):
            stream(frames, states(LOGS[log](), "sealed"), fast=fast)
        pairs.append((
            chat.projection.completion() if log != "failing" else None,
            responses.projection.response(),
            messages.projection.message(),
        ))
    assert pairs[0] == pairs[1]
    if log == "text":
        chat_text = pairs[0][0]["choices"][0]["message"]["content"]
        assert chat_text == "".join(text + text[::-1] for text in TEXTS) + "".join(reversed(TEXTS))


# -- the pieces --


def test_a_template_is_the_json_cut_at_its_holes() -> None:
    obj = {"a": HOLES[0], "b": [1, {"c": HOLES[1]}], "d": 'x"'}
    pieces = json_template(obj)
    assert pieces is not None
    assert pieces[0] + '"v"' + pieces[1] + "7" + pieces[2] == encode_json({"a": "v", "b": [1, {"c": 7}], "d": 'x"'})
    assert json_template({"a": 1}) == ('{"a":1}',)
    # A value that looks like a hole (or holds one after a quote): no template.
    assert json_template({"a": HOLES[0], "b": HOLES[0]}) is None
    assert json_template({"a": '"' + HOLES[0], "b": HOLES[0]}) is None
    assert json_template({"a": HOLES[1], "b": HOLES[0]}) is None


def test_a_model_named_like_a_hole_has_no_fast_path_and_the_same_bytes() -> None:
    def frames() -> DialectFrames:
        projection = ChatChunkProjection(completion_id="c", created=7, model=HOLES[0])
        return DialectFrames(projection, error=stream_error)

    assert frames().projection.text_delta("b1", '"x"') is None  # type: ignore[attr-defined]
    assert stream(frames(), states(text_log(), "sealed")) == stream(frames(), text_log().events, fast=False)


def test_text_parts_decode_what_they_were_given() -> None:
    parts = TextParts()
    assert not parts and parts.text() == ""
    parts.add("a")
    for text in TEXTS:
        parts.add_json(encode_json(text))
    parts.add("z")
    parts.add_json(encode_json("\ud83d"))  # a lone surrogate's escape, decoded on its own
    parts.add_json(encode_json("\ude00"))
    assert parts and parts.text() == "a" + "".join(TEXTS) + "z\ud83d\ude00"
    assert parts.text() == "a" + "".join(TEXTS) + "z\ud83d\ude00"


def test_text_parts_of_a_long_stream_are_one_string_now_and_then() -> None:
    parts = TextParts()
    texts = [TEXTS[n % len(TEXTS)] for n in range(3000)]
    for text in texts:
        parts.add_json(encode_json(text))
    assert len(parts._json) < 1024
    assert parts.text() == "".join(texts)
