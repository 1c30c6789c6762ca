"""Helpers for plugins that read a conversation: chat messages and system-prompt folding."""

from __future__ import annotations

from typing import Any

from streaming.capabilities import FunctionCallInvocation, FunctionCallResult
from streaming.model import Block, MimeTypes, RoleTag, Tag

__all__ = ["chat_messages", "fold_system_prompt"]


def fold_system_prompt(blocks: list[Block], separator: str = "\n\n") -> list[Block]:
    """SystemPromptSupport at BEST_EFFORT: system blocks folded into the next user block.

    The system text is put in front of the first user message that follows it (or becomes
    a user message of its own if none does); the system blocks themselves are dropped.
    """
    out: list[Block] = []
    pending: list[str] = []
    for block in blocks:
        role = block.chat_role
        if role == RoleTag.SYSTEM and block.is_text:
            pending.append(block.text)
            continue
        if pending and role == RoleTag.USER and block.is_text:
            block = block.model_copy(update={"text": separator.join([*pending, block.text])})
            pending = []
        out.append(block)
    if pending:
        out.append(Block(text=separator.join(pending), tags=[Tag.chat_role(RoleTag.USER)]))
    return out


def chat_messages(blocks: list[Block]) -> list[dict[str, Any]]:
    """The conversation as ``{"role", "content"}`` messages (tool calls and results too).

    Capability request/response blocks are skipped. An invocation block becomes
    ``{"role": "assistant", "content": "", "tool_call": {...}}``; a result block
    ``{"role": "tool", "content": "...", "tool_name", "call_id", "is_error"}``.
    """
    messages: list[dict[str, Any]] = []
    for block in blocks:
        mime = block.mime_type or MimeTypes.TXT
        if mime == MimeTypes.FUNCTION_CALL_INVOCATION:
            inv = FunctionCallInvocation.from_block(block)
            messages.append(
                {"role": "assistant", "content": "", "tool_call": inv.model_dump(exclude_none=True)}
            )
        elif mime == MimeTypes.FUNCTION_CALL_RESULT:
            res = FunctionCallResult.from_block(block)
            messages.append(
                {
                    "role": "tool",
                    "content": "\n".join(res.result),
                    "tool_name": res.tool_name,
                    "call_id": res.call_id,
                    "is_error": res.is_error,
                }
            )
        elif mime.startswith("text/") or mime == MimeTypes.JSON:
            messages.append({"role": block.chat_role or RoleTag.USER.value, "content": block.text})
    return messages
