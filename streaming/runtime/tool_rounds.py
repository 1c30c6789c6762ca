"""Tool rounds: run the plugin, route the tool calls it made, wait for their results, and
run it again on the conversation with the results, until it makes no call (or the round
cap, or ``client_tools="return"``, ends the generation).

Who answers a call is decided by :func:`streaming.routing.route_tool_call`; what the next
round sees by :func:`streaming.history.next_history`. Server-side tools run as child tasks
of the run; client-side calls wait for :meth:`ToolRounds.answer` (or a control message
from another process).
"""

from __future__ import annotations

from typing import Any

import anyio

from streaming.capabilities import FunctionCallResult
from streaming.errors import (
    MaxToolRoundsError,
    PluginError,
    ToolCallConflictError,
    ToolTimeoutError,
)
from streaming.history import next_history, turn_ends_with_client_calls
from streaming.model import Block, MimeTypes, RoleTag, Tag, new_id
from streaming.requests import ToolResultRequest
from streaming.routing import AnsweredBy, ToolArgumentsError, parse_tool_call, route_tool_call
from streaming.runtime.driver import PluginDriver
from streaming.runtime.run import Call, Run
from streaming.runtime.settings import RuntimeSettings
from streaming.stores.base import Store
from streaming.tasks import TaskOwner
from streaming.tools import ToolRegistry

__all__ = ["ToolRounds"]


class ToolRounds:
    def __init__(
        self,
        settings: RuntimeSettings,
        tools: ToolRegistry,
        driver: PluginDriver,
        store: Store,
        tasks: TaskOwner,
        counters: dict[str, int],
    ) -> None:
        self.settings = settings
        self.tools = tools
        self.driver = driver
        self.store = store
        self.tasks = tasks
        self.counters = counters

    async def run(self, run: Run, blocks: list[Block]) -> None:
        """Every round of ``run``, the first writing into ``blocks``.

        Raises:
            MaxToolRoundsError, ToolTimeoutError, or what the plugin raised.
        """
        rounds = 0
        while True:
            await self.driver.run_round(run, blocks)
            # The plugin returned: what it left open is complete.
            for block_id in run.round_blocks:
                if run.machine.is_open(block_id):
                    run.complete(block_id)
            calls = run.round_calls
            if not calls:
                return
            if turn_ends_with_client_calls(run.client_tools, [c.client_side for c in calls]):
                # The client answers in its next request: finish the server's own calls
                # of this turn, then end the generation here.
                await self._wait_for(run, [c for c in calls if not c.client_side])
                return
            rounds += 1
            await self._wait_for(run, calls)
            if rounds >= self.settings.max_tool_rounds:
                raise MaxToolRoundsError(
                    f"the generator asked for tools {rounds} rounds in a row",
                    suggestion="raise max_tool_rounds or give the model fewer reasons to call tools",
                )
            run.round_calls = []
            results = [c.result_block_id for c in calls if c.result_block_id]
            run.history_ids = next_history(run.history_ids, run.machine.order, results)
            run.conversation = run.context_blocks + [run.machine.block_snapshot(b) for b in run.history_ids]
            blocks = await self.driver.next_blocks(run)
            run.round_blocks = [b.id for b in blocks]

    def on_block_closed(self, run: Run, block_id: str) -> None:
        """A block completed: if it is a tool call, route it."""
        block = run.machine.blocks[block_id]
        if block.mime_type != MimeTypes.FUNCTION_CALL_INVOCATION:
            return
        invocation = parse_tool_call(block)
        call_id = invocation.call_id or new_id("call")
        if call_id in run.calls:
            raise PluginError(f"the generator reused tool call id {call_id}", code="invalid_tool_call")
        call = Call(call_id, invocation.tool_name, invocation.args, block_id)
        run.calls[call_id] = call
        run.round_calls.append(call)
        self.counters["tool_calls"] += 1
        # Decided before publishing, so `tool.call` tells the client whether to answer.
        route = route_tool_call(call.tool_name, call.args, run.tools, self.tools)
        call.client_side = route.client_side
        run.machine.tool_call(call_id, block_id, call.tool_name, call.args, client_side=route.client_side)
        if route.problem is not None:
            self.resolve(run, call, [route.problem], True)
        elif route.answered_by is AnsweredBy.SERVER:
            run.spawn(self.tasks, self._run_server_tool, run, call)
        # Otherwise a client-side call: it waits for the client's answer.

    async def _run_server_tool(self, run: Run, call: Call) -> None:
        tool = self.tools[call.tool_name]
        try:
            with anyio.fail_after(self.settings.tool_timeout_s):
                result = await tool(call.args)
        except ToolArgumentsError as exc:
            self.resolve(run, call, [f"invalid arguments: {exc}"], True)
        except TimeoutError:
            self.resolve(run, call, [f"tool {call.tool_name} timed out"], True)
        except Exception as exc:
            self.resolve(run, call, [f"{type(exc).__name__}: {exc}"], True)
        else:
            self.resolve(run, call, result, False)

    def resolve(self, run: Run, call: Call, result: list[str], is_error: bool) -> None:
        """Record the result of ``call`` (once; later ones are ignored)."""
        if call.resolved or run.machine.finished:
            return
        call.resolved = True
        if is_error:
            self.counters["tool_errors"] += 1
        res = FunctionCallResult(tool_name=call.tool_name, result=result, call_id=call.call_id, is_error=is_error)
        block = res.to_block(tags=[Tag.chat_role(RoleTag.TOOL)])
        run.add_whole_block(block)
        call.result_block_id = block.id
        run.machine.tool_result(call.call_id, block.id, call.tool_name, result, is_error)
        call.done.set()

    def resolve_message(self, run: Run, message: dict[str, Any]) -> None:
        """A ``tool.result`` control message (an answer given through another process)."""
        call = run.calls.get(str(message.get("call_id")))
        if call is not None:
            self.resolve(run, call, list(message.get("result") or []), bool(message.get("is_error")))

    async def _wait_for(self, run: Run, calls: list[Call]) -> None:
        with anyio.move_on_after(self.settings.tool_timeout_s):
            for call in calls:
                await call.done.wait()
        late = [c for c in calls if not c.resolved]
        if late:
            raise ToolTimeoutError(
                "no result for tool call(s) "
                + ", ".join(f"{c.tool_name} ({c.call_id})" for c in late)
                + f" within {self.settings.tool_timeout_s:g}s",
                suggestion="answer client-side tools with POST /generations/{id}/tool-results",
            )

    async def answer(self, run: Run, answer: ToolResultRequest) -> None:
        """A client's answer to a client-side call of ``run``.

        Raises:
            ToolCallConflictError: no such pending call, or it was already answered.
        """
        call = run.calls.get(answer.call_id)
        if call is None or call.resolved or run.machine.finished:
            raise ToolCallConflictError(f"no pending tool call {answer.call_id!r} in generation {run.id}")
        if not await self.store.claim_tool_result(run.id, answer.call_id):
            raise ToolCallConflictError(f"tool call {answer.call_id!r} was already answered")
        result, is_error = answer.items()
        self.resolve(run, call, result, is_error)
