"""``/blocks/{id}`` and its raw bytes, streamed until the block ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from streaming.server.auth import authorize_generation, principal
from streaming.server.context import auth_of, runtime_of, settings_of
from streaming.server.errors import JSONResponse

from streaming.errors import NotFoundError
from streaming.model import Block, StreamState

__all__ = ["ROUTES"]


async def visible_block(request: Request) -> Block:
    """The block, if this request may see it (its generation's owner or read token).

    Raises:
        NotFoundError: no such block, or not this caller's.
    """
    runtime = runtime_of(request)
    block_id = request.path_params["id"]
    block = await runtime.get_block(block_id)
    who = principal(request)
    if who is not None and who.block_id is not None:
        # A signed URL: only this block's raw content.
        if who.block_id != block_id or not request.url.path.endswith("/raw"):
            raise NotFoundError(f"no block {block_id!r}")
        return block
    if who is not None:
        if not block.request_id:
            raise NotFoundError(f"no block {block_id!r}")
        try:
            await authorize_generation(request, runtime, block.request_id)
        except NotFoundError:
            raise NotFoundError(f"no block {block_id!r}") from None
    return block


async def read(request: Request) -> Response:
    block = await visible_block(request)
    out = block.model_dump(mode="json")
    # Where its content can be fetched: with auth on, a signed URL that expires.
    auth = auth_of(request)
    out["content_url"] = (
        auth.signed_raw_url(block.id, settings_of(request).signed_url_ttl_s)
        if auth.enabled
        else f"/blocks/{block.id}/raw"
    )
    return JSONResponse(out)


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (stored before the door refused them) becomes
    U+FFFD, so raw content can always be served."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


def _media_type(mime: str | None) -> str:
    mime = mime or "application/octet-stream"
    if mime.startswith("text/") or mime.endswith("json"):
        return f"{mime}; charset=utf-8"
    return mime


async def raw(request: Request) -> Response:
    runtime = runtime_of(request)
    block = await visible_block(request)
    if block.stream_state is not StreamState.STARTED or not block.request_id:
        from streaming.plugin.generator import block_bytes

        try:
            content = block_bytes(block)
        except UnicodeEncodeError:
            content = _utf8(block.text)
        return Response(content, media_type=_media_type(block.mime_type))

    async def body() -> AsyncIterator[bytes]:
        assert block.request_id is not None
        async with aclosing(runtime.subscribe(block.request_id, 0)) as batches:
            async for batch in batches:
                out = []
                done = False
                for ev in batch:
                    if ev.data.get("block_id") != block.id:
                        continue
                    if ev.type == "block.delta":
                        out.append(ev.data["text"])
                    elif ev.type in ("block.completed", "block.aborted"):
                        done = True
                        break
                if out:
                    yield _utf8("".join(out))
                if done or batch[-1].terminal:
                    return

    return StreamingResponse(
        body(), media_type=_media_type(block.mime_type), headers={"Cache-Control": "no-store"}
    )


ROUTES = [
    Route("/blocks/{id}", read, methods=["GET"]),
    Route("/blocks/{id}/raw", raw, methods=["GET"]),
]
