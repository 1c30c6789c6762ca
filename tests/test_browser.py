"""The demo page and the browser client in real headless Chromium (Debian's ``chromium``,
driven by Playwright) against a real uvicorn on loopback.

Screenshots go to ``test-output/`` (gitignored).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright
from streaming.client.sse import SSEDecoder
from streaming.server.app import ServerSettings, create_app

from tests.conftest import LiveServer
from tests.invariants import check_invariants

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
GET_TIME = {
    "name": "get_time",
    "description": "the time",
    "parameters": {"type": "object", "properties": {}},
}
LOOKUP = {
    "name": "lookup",
    "description": "look a word up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
LONG = {"repeat": 2000, "delay_ms": 5}
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def resilient_server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server that waits long enough for a cut-off or reloaded page to come back."""
    return make_server(disconnect_grace_s=30)


def open_page(context: BrowserContext, server: LiveServer, *, transport: str = "sse") -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.evaluate("window.streamingDemo.ready")
    page.wait_for_selector("#generator option[value=echo]", state="attached")
    if transport != "sse":
        page.select_option("#transport", transport)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def configure(page: Page, generator: str, options: Any = None, tools: Any = None) -> None:
    page.select_option("#generator", generator)
    if options is not None or tools is not None:
        if not page.is_visible("#options"):
            page.click("#advanced summary")
        page.fill("#options", json.dumps(options) if options is not None else "")
        page.fill("#tools", json.dumps(tools) if tools is not None else "")


def send(page: Page, text: str) -> str:
    """Send a message; the id of the generation that answers it."""
    turns = page.locator(".turn").count()
    page.fill("#input", text)
    page.click("#send")
    turn = page.locator(".turn").nth(turns)
    turn.wait_for()
    page.wait_for_function(
        "n => document.querySelectorAll('.turn')[n]?.dataset.generationId", arg=turns
    )
    gen_id = turn.get_attribute("data-generation-id")
    assert gen_id
    return gen_id


def turn(page: Page, gen_id: str) -> Any:
    return page.locator(f'.turn[data-generation-id="{gen_id}"]')


def wait_state(page: Page, gen_id: str, state: str) -> None:
    page.wait_for_selector(f'.turn[data-generation-id="{gen_id}"][data-state="{state}"]')


def wait_text_longer(page: Page, gen_id: str, n: int) -> None:
    page.wait_for_function(
        "([id, n]) => (document.querySelector(`.turn[data-generation-id='${id}'] .block.text .content`)"
        "?.textContent.length ?? 0) > n",
        arg=[gen_id, n],
    )


def shown_text(page: Page, gen_id: str) -> str:
    texts = turn(page, gen_id).locator(".block.text .content").all_text_contents()
    return "".join(texts)


def server_generation(server: LiveServer, gen_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/generations/{gen_id}").json()
    return body


def server_events(server: LiveServer, gen_id: str) -> list[dict[str, Any]]:
    """The whole event log, read over SSE (the stream ends after the terminal event)."""
    out: list[dict[str, Any]] = []
    decoder = SSEDecoder()
    with httpx.stream("GET", f"{server.url}/generations/{gen_id}/events", timeout=30) as response:
        for chunk in response.iter_bytes():
            out.extend(json.loads(ev.data) for ev in decoder.decode(chunk) if ev.data)
    return out


def page_seqs(page: Page) -> list[int]:
    seqs: list[int] = page.evaluate("window.streamingDemo.current.events.map(e => e.seq)")
    return seqs


def check_against_server(page: Page, server: LiveServer, gen_id: str) -> dict[str, str]:
    """The server's log keeps its invariants and its final blocks are what the page shows."""
    generation = server_generation(server, gen_id)
    final = {b["id"]: b["text"] for b in generation["blocks"]}
    check_invariants(server_events(server, gen_id), final_blocks=final)
    text_blocks = [b for b in generation["blocks"] if (b["mime_type"] or "").startswith("text/")]
    assert shown_text(page, gen_id) == "".join(b["text"] for b in text_blocks)
    return final


def cut_connections(server: LiveServer) -> int:
    """Kill every TCP connection the server holds (no FIN, no close frame)."""
    connections = list(server.server.server_state.connections)
    for conn in connections:
        conn.loop.call_soon_threadsafe(conn.transport.abort)
    return len(connections)


def screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)


def start_streaming(
    context: BrowserContext, server: LiveServer, transport: str
) -> tuple[Page, str]:
    """A page streaming ``"tok " * 600`` (about 3 s), caught a few words in."""
    page = open_page(context, server, transport=transport)
    configure(page, "echo", options={"repeat": 600, "delay_ms": 5})
    gen_id = send(page, "tok ")
    wait_text_longer(page, gen_id, 40)
    return page, gen_id


# -- the tests --


def test_a_message_streams_into_the_page(browser: Browser, server: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = open_page(context, server)
        prompt = "héllo wörld 🌍 日本語 "
        configure(page, "echo", options={"repeat": 30, "delay_ms": 5})
        gen_id = send(page, prompt)
        wait_state(page, gen_id, "succeeded")
        assert shown_text(page, gen_id) == prompt * 30
        final = check_against_server(page, server, gen_id)
        # Every event applied once, in order, with no gap.
        assert page_seqs(page) == list(range(1, len(server_events(server, gen_id)) + 1))
        # The raw byte stream decodes the same text (multi-byte characters across chunks).
        (block_id,) = final
        raw = page.evaluate(
            "async id => { let s = ''; for await (const t of window.streamingDemo.client.readRaw(id)) s += t; return s; }",
            block_id,
        )
        assert raw == prompt * 30
        # A second message continues the same conversation.
        configure(page, "echo", options={})
        second = send(page, "and again")
        wait_state(page, second, "succeeded")
        assert shown_text(page, second) == "and again"
        file_id = server_generation(server, second)["generation"]["file_id"]
        assert file_id == server_generation(server, gen_id)["generation"]["file_id"]
        # Readable at phone width: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "browser-chat-phone.png")
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        context.close()


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_stop_cancels(context: BrowserContext, server: LiveServer, transport: str) -> None:
    page = open_page(context, server, transport=transport)
    configure(page, "echo", options=LONG)
    gen_id = send(page, "tok ")
    wait_text_longer(page, gen_id, 20)
    assert page.is_enabled("#stop")
    page.click("#stop")
    wait_state(page, gen_id, "cancelled")
    assert server_generation(server, gen_id)["generation"]["state"] == "cancelled"
    assert "cancelled" in turn(page, gen_id).locator(".gen-state").inner_text()
    assert turn(page, gen_id).locator(".block.text[data-state=aborted] .badge.aborted").count() == 1
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    text = shown_text(page, gen_id)
    assert text.startswith("tok ") and len(text) < len("tok ") * 2000
    check_against_server(page, server, gen_id)
    screenshot(page, f"browser-stop-{transport}.png")
    # A reload shows the same state, with its reason.
    shown = turn(page, gen_id).locator(".gen-state").inner_text()
    assert shown == "cancelled (cancelled by client)"
    page.reload()
    page.evaluate("window.streamingDemo.ready")
    page.wait_for_function(
        "(id) => document.querySelector(`[data-generation-id=\"${id}\"] .gen-state`)?.textContent.startsWith('cancelled (')",
        arg=gen_id,
    )
    assert turn(page, gen_id).locator(".gen-state").inner_text() == shown


def test_a_failed_generation_is_visible(context: BrowserContext, server: LiveServer) -> None:
    page = open_page(context, server)
    configure(
        page,
        "scripted",
        options={"rounds": [[{"text": "partial ", "chunk": 3}, {"error": "boom"}]]},
    )
    gen_id = send(page, "go")
    wait_state(page, gen_id, "failed")
    assert "plugin_error" in turn(page, gen_id).locator(".gen-state").inner_text()
    assert turn(page, gen_id).locator(".badge.aborted").count() == 1
    assert shown_text(page, gen_id) == "partial "
    check_against_server(page, server, gen_id)


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_client_side_tools_answered_by_page_code(
    context: BrowserContext, server: LiveServer, transport: str
) -> None:
    page = open_page(context, server, transport=transport)
    # Page code answers both: the page's own get_time, and a handler added here.
    page.evaluate(
        "() => { window.streamingDemo.toolHandlers.lookup = async ({q}) => ({word: q, found: true}); }"
    )
    rounds = [
        [
            {"tool_call": {"name": "get_time", "args": {}}},
            {"tool_call": {"name": "lookup", "args": {"q": "ünï"}}},
        ],
        [{"echo_tool_results": True}],
    ]
    configure(page, "scripted", options={"rounds": rounds}, tools=[GET_TIME, LOOKUP])
    gen_id = send(page, "time and word?")
    wait_state(page, gen_id, "succeeded")
    t = turn(page, gen_id)
    assert t.locator(".card.tool-call").count() == 2
    assert t.locator('.card.tool-call[data-tool="lookup"] pre').inner_text() == '{\n "q": "ünï"\n}'
    time_result = t.locator('.card.tool-result[data-tool="get_time"] pre').inner_text()
    assert time_result.startswith("20") and "T" in time_result
    lookup_result = t.locator('.card.tool-result[data-tool="lookup"] pre').inner_text()
    assert json.loads(lookup_result) == {"word": "ünï", "found": True}
    assert shown_text(page, gen_id) == (
        f"[get_time result: {time_result}][lookup result: {lookup_result}]"
    )
    check_against_server(page, server, gen_id)
    screenshot(page, f"browser-tools-{transport}.png")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_network_cut_mid_stream_completes_exactly_once(
    context: BrowserContext, resilient_server: LiveServer, transport: str
) -> None:
    server = resilient_server
    page, gen_id = start_streaming(context, server, transport)

    # The network goes away: live connections die and reconnects fail for a while.
    down = {"on": True}
    refused: list[str] = []

    def refuse_events(route: Route) -> None:
        refused.append(route.request.url)
        route.abort("internetdisconnected")

    def refuse_sockets(ws: Any) -> None:
        if down["on"]:
            refused.append(ws.url)
            ws.close()
        else:
            ws.connect_to_server()

    if transport == "sse":
        page.route("**/generations/*/events*", refuse_events)
    else:
        page.route_web_socket("**/ws", refuse_sockets)
    assert cut_connections(server) >= 1
    page.wait_for_selector(f'.turn[data-generation-id="{gen_id}"][data-connection="reconnecting"]')
    # Route handlers run while Playwright waits: wait until a reconnect was refused.
    for _ in range(400):
        if refused:
            break
        page.wait_for_timeout(25)
    assert refused, "the page never tried to reconnect"
    down["on"] = False
    if transport == "sse":
        page.unroute("**/generations/*/events*")
    wait_state(page, gen_id, "succeeded")
    assert shown_text(page, gen_id) == "tok " * 600
    seqs = page_seqs(page)
    assert seqs == list(range(1, len(seqs) + 1)), "every event applied exactly once"
    assert seqs[-1] == len(server_events(server, gen_id))
    assert int(turn(page, gen_id).get_attribute("data-reconnects") or 0) >= 1
    check_against_server(page, server, gen_id)


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_reload_mid_stream_resumes(
    context: BrowserContext, resilient_server: LiveServer, transport: str
) -> None:
    server = resilient_server
    page, gen_id = start_streaming(context, server, transport)
    page.reload()
    page.evaluate("window.streamingDemo.ready")
    # The conversation is back, and the running generation resumes where the page was.
    wait_state(page, gen_id, "succeeded")
    assert page.locator(".msg.user").all_text_contents() == ["tok "]
    assert page.locator(".turn").count() == 1
    assert shown_text(page, gen_id) == "tok " * 600
    seqs = page_seqs(page)
    assert seqs[0] > 1, "resumed after the last seq, not replayed from the start"
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    check_against_server(page, server, gen_id)
    # The stored conversation carries on after the reload.
    configure(page, "echo", options={})
    after = send(page, "next")
    wait_state(page, after, "succeeded")
    assert (
        server_generation(server, after)["generation"]["file_id"]
        == (server_generation(server, gen_id)["generation"]["file_id"])
    )
    screenshot(page, f"browser-reload-{transport}.png")


MODULE_API = """
async (transport) => {
  const { StreamingClient } = await import("/static/streaming-client.js");
  const client = new StreamingClient("", { transport });
  const gen = await client.generate({ generator: "echo", prompt: "a ü 🌍 ", options: { repeat: 5, delay_ms: 2 } });
  const deltas = [];
  const seen = [];
  gen.on("delta", (block, text) => deltas.push(text));
  gen.on("event", (ev) => seen.push(ev.type));
  const chunks = [];
  for await (const block of gen.blocks()) {
    for await (const text of block) chunks.push(text);
  }
  const text = await gen.text();
  client.close();
  return { chunks: chunks.join(""), deltas: deltas.join(""), text, state: gen.state,
           seqs: gen.events.map((e) => e.seq), last: seen[seen.length - 1] };
}
"""


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_module_api_callbacks_and_async_iterators(
    context: BrowserContext, server: LiveServer, transport: str
) -> None:
    page = open_page(context, server)
    out = page.evaluate(MODULE_API, transport)
    expected = "a ü 🌍 " * 5
    assert out["chunks"] == out["deltas"] == out["text"] == expected
    assert out["state"] == "succeeded" and out["last"] == "generation.completed"
    assert out["seqs"] == list(range(1, len(out["seqs"]) + 1))


def test_page_with_an_api_key(context: BrowserContext) -> None:
    live = LiveServer(create_app(ServerSettings(api_keys=["browser-key"]))).start()
    try:
        page = context.new_page()
        page.goto(live.url + "/?access_token=browser-key")
        page.evaluate("window.streamingDemo.ready")
        page.wait_for_selector("#generator option[value=echo]", state="attached")
        for transport in ("sse", "ws"):
            page.select_option("#transport", transport)
            gen_id = send(page, f"over {transport}")
            wait_state(page, gen_id, "succeeded")
            assert shown_text(page, gen_id) == f"over {transport}"
        assert httpx.get(f"{live.url}/generations/{gen_id}").status_code == 401
    finally:
        live.stop()


def test_the_page_offers_what_answers_and_says_why_not(context: BrowserContext, server: LiveServer) -> None:
    page = open_page(context, server)
    # The empty conversation says what to try and what the chosen generator does.
    hint = page.get_attribute("#messages", "data-hint") or ""
    assert "Type a message" in hint and "echo: streams your last message back" in hint
    assert page.evaluate("getComputedStyle(document.querySelector('#messages'), '::before').content") != "none"
    # The openai generator has no upstream here: listed, greyed out, with the reason.
    openai = page.locator("#generator option[value=openai]")
    assert openai.is_disabled()
    assert "no upstream configured" in openai.inner_text()
    assert page.locator("#generator option[value=echo]").is_enabled()
    assert page.input_value("#generator") == "echo"
    # Once a message is there the hint is gone.
    gen_id = send(page, "hi there")
    wait_state(page, gen_id, "succeeded")
    assert page.evaluate("getComputedStyle(document.querySelector('#messages'), '::before').content") == "none"
    assert not page.errors  # type: ignore[attr-defined]


def test_generators_route_says_which_answer_a_chat(server: LiveServer) -> None:
    body = httpx.get(server.url + "/generators").json()
    details = {d["name"]: d for d in body["details"]}
    assert body["generators"] == [d["name"] for d in body["details"]]
    assert details["echo"]["chat"] is True and details["echo"]["reason"] is None
    assert details["openai"]["chat"] is False and "OPENAI_MODEL" in details["openai"]["reason"]
