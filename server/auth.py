"""API keys and scoped read tokens.

With keys configured, every route but ``/healthz`` (and the static demo assets, which hold
no data) needs ``Authorization: Bearer <credential>`` or, where a browser cannot set
headers (``EventSource``, WebSocket), ``?access_token=<credential>``. A credential is

- an API key: may create generations; sees only the generations (and their blocks and
  conversations) that it created. Another key's ids answer 404, so ids do not leak.
- a read token (``rt_<generation id>.<mac>``, returned when a generation is created): may
  read, stream, cancel and answer the tools of that one generation, nothing else. The
  middleware lets it reach only the routes of one generation (``/generations/…``,
  ``/blocks/…``, ``/ws``, a dialect's read of one response or message); any other route,
  a listing included, answers 403 whatever the route itself checks.

Keys are never stored: an owner is a digest of its key. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from streaming.server.errors import JSONResponse, error_response

from streaming.errors import ForbiddenError, NotFoundError
from streaming.model import Generation

__all__ = ["AuthConfig", "AuthMiddleware", "Principal", "authorize_generation", "new_owner"]

_PUBLIC_PATHS = ("/healthz", "/openapi.json")
_PUBLIC_PREFIXES = ("/static/",)
#: all a read token may reach besides the public paths: its generation's routes, its
#: blocks, the socket (to subscribe), and the dialects' reads of one response or message.
#: Each route still checks the generation (another one's id answers 404).
_READ_TOKEN_PATHS = ("/ws",)
_READ_TOKEN_PREFIXES = ("/generations/", "/blocks/", "/v1/responses/", "/v1/messages/")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key's owner digest, or a read token's generation."""

    owner: str | None = None
    generation_id: str | None = None
    #: a signed URL: this one block's raw content, until the URL expires
    block_id: str | None = None


class AuthConfig:
    """The configured keys (as digests) and the secret read tokens are signed with.

    Args:
        api_keys: accepted keys; empty means auth is off.
        token_secret: signs read tokens; defaults to one derived from the keys, so every
            process with the same keys accepts the same tokens.
    """

    def __init__(self, api_keys: list[str], token_secret: str | None = None) -> None:
        self.enabled = bool(api_keys)
        self._owners = [_digest(k) for k in api_keys]
        seed = token_secret or "\0".join(sorted(api_keys))
        self._secret = hashlib.sha256(b"streaming-read-token\0" + seed.encode()).digest()

    def read_token(self, generation_id: str) -> str:
        mac = hmac.new(self._secret, generation_id.encode(), hashlib.sha256).hexdigest()[:40]
        return f"rt_{generation_id}.{mac}"

    def signed_raw_url(self, block_id: str, ttl_s: float, now: float | None = None) -> str:
        """``/blocks/{id}/raw?expires=…&signature=…``: the block's content, to anyone
        holding the URL, until it expires (the seed's signed content URL)."""
        expires = int((now if now is not None else time.time()) + ttl_s)
        return f"/blocks/{block_id}/raw?expires={expires}&signature={self._block_mac(block_id, expires)}"

    def _block_mac(self, block_id: str, expires: int) -> str:
        msg = f"raw\0{block_id}\0{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:40]

    def verify_signed_raw(self, scope: Scope) -> Principal | None:
        path: str = scope.get("path", "")
        parts = path.split("/")
        if len(parts) != 4 or parts[1] != "blocks" or parts[3] != "raw":
            return None
        query = dict(
            p.partition("=")[::2] for p in scope.get("query_string", b"").decode("latin-1").split("&") if p
        )
        expires, signature = query.get("expires", ""), query.get("signature", "")
        # Digits only, and few of them: a 5,000-digit ``expires`` is not a time (and
        # Python will not even convert it).
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12) or not signature:
            return None
        if int(expires) < time.time():
            return None
        if not hmac.compare_digest(signature.encode(), self._block_mac(parts[2], int(expires)).encode()):
            return None
        return Principal(block_id=parts[2])

    def authenticate(self, credential: str) -> Principal | None:
        if credential.startswith("rt_") and "." in credential:
            gen_id, _, mac = credential[3:].rpartition(".")
            expected = self.read_token(gen_id).rpartition(".")[2]
            if gen_id and hmac.compare_digest(mac.encode(), expected.encode()):
                return Principal(generation_id=gen_id)
            return None
        presented = _digest(credential)
        found: str | None = None
        for owner in self._owners:  # no early exit: same work whichever key matches
            if hmac.compare_digest(presented, owner):
                found = owner
        return Principal(owner=found) if found else None


def _credential(scope: Scope) -> str | None:
    api_key: str | None = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""
        if name == b"x-api-key":  # how Anthropic's SDKs send their key
            api_key = value.decode("latin-1").strip()
    if api_key is not None:
        return api_key
    query: str = scope.get("query_string", b"").decode("latin-1")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "access_token" and value:
            from urllib.parse import unquote

            return str(unquote(value))
    return None


class AuthMiddleware:
    """Authenticates HTTP and WebSocket requests; routes authorise by resource."""

    def __init__(self, app: ASGIApp, config: AuthConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.config.enabled:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        public = path in _PUBLIC_PATHS or path == "/" or path.startswith(_PUBLIC_PREFIXES)
        credential = _credential(scope)
        principal = self.config.authenticate(credential) if credential else None
        if principal is None and credential is None:
            principal = self.config.verify_signed_raw(scope)
        if principal is None and not public:
            await self._refuse(scope, receive, send, credential is not None)
            return
        if principal is not None and principal.generation_id is not None and not public:
            # A read token reaches its one generation, never a listing or another route
            # (allowed by name, so a route added later is closed to it until it says so).
            if path not in _READ_TOKEN_PATHS and not path.startswith(_READ_TOKEN_PREFIXES):
                await self._refuse(scope, receive, send, True, forbidden=True)
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, presented: bool, *, forbidden: bool = False
    ) -> None:
        message = "invalid credentials" if presented else "credentials required"
        status, code, kind = 401, "unauthorized", "invalid_request_error"
        if forbidden:
            message = "a read token only reaches its own generation"
            status, code, kind = 403, "forbidden", "permission_error"
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4403 if forbidden else 4401, "reason": message})
            return
        if scope.get("path", "").startswith("/v1/messages"):
            from streaming.server.anthropic.errors import error_body

            response = JSONResponse(error_body(status, message, code), status_code=status)
        elif scope.get("path", "").startswith("/v1/"):
            # OpenAI's error shape, so every OpenAI SDK raises its AuthenticationError.
            response = JSONResponse(
                {"error": {"message": message, "type": kind, "param": None,
                           "code": code if forbidden else "invalid_api_key"}},
                status_code=status,
            )
        else:
            suggestion = "use an API key" if forbidden else "send Authorization: Bearer <api key or read token>"
            response = error_response(status, code, message, suggestion)
        if not forbidden:
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def principal(conn: HTTPConnection | Any) -> Principal | None:
    """The request's principal; None when auth is off."""
    state = conn.scope.get("state") or {}
    value = state.get("principal")
    return value if isinstance(value, Principal) else None


def new_owner(conn: HTTPConnection | Any) -> str | None:
    """The owner of something this request creates.

    Raises:
        ForbiddenError: a read token cannot create anything.
    """
    who = principal(conn)
    if who is None:
        return None
    if who.owner is None:
        raise ForbiddenError("a read token cannot start generations", suggestion="use an API key")
    return who.owner


def require_key(conn: HTTPConnection | Any) -> None:
    """Raises ForbiddenError for a read token (routes that are not about one generation)."""
    who = principal(conn)
    if who is not None and who.owner is None:
        raise ForbiddenError("a read token only reaches its own generation")


def can_see(conn: HTTPConnection | Any, generation: Generation) -> bool:
    who = principal(conn)
    if who is None:
        return True
    if who.block_id is not None:
        return False  # a signed block URL reaches that block's bytes only
    if who.generation_id is not None:
        return hmac.compare_digest(who.generation_id.encode(), generation.id.encode())
    return generation.owner is not None and hmac.compare_digest(who.owner or "", generation.owner)


async def authorize_generation(conn: HTTPConnection | Any, runtime: Any, generation_id: str) -> Generation:
    """The generation, if this request may reach it.

    Raises:
        NotFoundError: it does not exist, or belongs to someone else (the same answer,
            so ids do not leak).
    """
    generation: Generation = await runtime.get_generation(generation_id)
    if not can_see(conn, generation):
        raise NotFoundError(f"no generation {generation_id!r}")
    return generation
