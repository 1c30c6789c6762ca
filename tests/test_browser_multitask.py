"""Double texting on the demo page, in real headless Chromium against a real server: a
message sent while an answer streams goes with the strategy of the select beside Send
(interrupt by default), and the page shows what happened."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests import test_browser
from tests.conftest import LiveServer
from tests.test_browser import (
    LONG,
    check_against_server,
    configure,
    open_page,
    screenshot,
    send,
    server_generation,
    turn,
    wait_state,
    wait_text_longer,
)

#: the page's fixtures: one headless Chromium for the module, a context per test
browser = test_browser.browser
context = test_browser.context

SHORT = {"repeat": 2}


def streaming_then(page: Page, options: dict[str, int] = LONG) -> str:
    """A first answer streaming (a few words in); the next message will be short."""
    configure(page, "echo", options=options)
    first = send(page, "tok ")
    wait_text_longer(page, first, 20)
    configure(page, "echo", options=SHORT)
    return first


def user_messages(page: Page) -> list[str]:
    return page.locator(".msg.user").all_text_contents()


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_sending_while_an_answer_streams_interrupts_it(context: BrowserContext, server: LiveServer, transport: str) -> None:
    page = open_page(context, server, transport=transport)
    assert page.input_value("#multitask") == "interrupt"
    first = streaming_then(page)
    assert page.is_enabled("#send")
    second = send(page, "instead ")
    wait_state(page, second, "succeeded")
    wait_state(page, first, "cancelled")
    old = turn(page, first)
    assert old.get_attribute("data-outcome") == "interrupted"
    assert old.locator(".gen-state").inner_text() == "interrupted by the next message"
    assert old.locator(".block.text[data-state=aborted] .badge.aborted").count() == 1
    assert server_generation(server, first)["generation"]["state"] == "cancelled"
    check_against_server(page, server, first)
    check_against_server(page, server, second)
    assert user_messages(page) == ["tok ", "instead "]
    assert not page.is_enabled("#stop")
    screenshot(page, f"browser-multitask-interrupt-{transport}.png")
    # After a reload the interrupted turn is still marked.
    page.reload()
    page.evaluate("window.streamingDemo.ready")
    page.wait_for_function(
        "(id) => document.querySelector(`[data-generation-id=\"${id}\"]`)?.dataset.outcome === 'interrupted'", arg=first
    )
    assert errors(page) == []


def test_rolling_back_removes_the_turn(context: BrowserContext, server: LiveServer) -> None:
    page = open_page(context, server)
    page.select_option("#multitask", "rollback")
    first = streaming_then(page)
    answer_id = server_generation(server, first)["blocks"][0]["id"]
    page.fill("#input", "instead ")
    page.click("#send")
    # The new turn is the only one left: the rolled-back turn leaves the page.
    page.wait_for_function(
        "(old) => [...document.querySelectorAll('.turn')].map(t => t.dataset.generationId).join() !== old"
        " && document.querySelectorAll('.turn').length === 1 && document.querySelector('.turn').dataset.generationId",
        arg=first,
    )
    second = page.locator(".turn").first.get_attribute("data-generation-id")
    assert second and second != first
    wait_state(page, second, "succeeded")
    assert turn(page, first).count() == 0
    assert user_messages(page) == ["instead "]
    file_id = server_generation(server, second)["generation"]["file_id"]
    blocks = httpx.get(f"{server.url}/files/{file_id}").json()["blocks"]
    assert [b["text"] for b in blocks] == ["instead ", "instead " * 2]
    assert httpx.get(f"{server.url}/blocks/{answer_id}").status_code == 404
    check_against_server(page, server, second)
    screenshot(page, "browser-multitask-rollback.png")
    assert errors(page) == []


def test_a_queued_message_waits_then_answers(context: BrowserContext, server: LiveServer) -> None:
    page = open_page(context, server)
    page.select_option("#multitask", "enqueue")
    first = streaming_then(page, {"repeat": 300, "delay_ms": 10})
    second = send(page, "next ")
    wait_state(page, second, "waiting")
    assert turn(page, second).locator(".gen-state").inner_text() == "waiting for the answer before it…"
    screenshot(page, "browser-multitask-enqueue-waiting.png")
    wait_state(page, first, "succeeded")
    wait_state(page, second, "succeeded")
    assert server_generation(server, second)["generation"]["state"] == "succeeded"
    check_against_server(page, server, first)
    check_against_server(page, server, second)
    assert user_messages(page) == ["tok ", "next "]
    assert errors(page) == []


def test_refusing_says_the_conversation_is_busy(context: BrowserContext, server: LiveServer) -> None:
    page = open_page(context, server)
    page.select_option("#multitask", "reject")
    first = streaming_then(page)
    second = page.locator(".turn").count()
    page.fill("#input", "again ")
    page.click("#send")
    page.wait_for_selector(f".turn:nth-of-type({second + 1})[data-state=failed]")
    assert "conflict" in page.inner_text("#status")
    assert server_generation(server, first)["generation"]["state"] == "running"
    page.click("#stop")
    wait_state(page, first, "cancelled")
    assert errors(page) == []


def errors(page: Page) -> list[str]:
    found: list[str] = page.errors  # type: ignore[attr-defined]
    return found
