"""The API's front door: a pure ASGI middleware that refuses a request before anything reads or
parses its body.

FastAPI reads and parses a request body before it runs the dependencies of the endpoint, the
bearer-token check among them, and sets no limit on its size: a 12 MB JSON body sent without a
token cost the process ~300 MiB before it was answered 401.  So, in front of the app:

* every path but the open ones (``/healthz``, ``/readyz``) needs ``Authorization: Bearer
  <token>``, checked from the headers alone (the body is never read for a refused request);
* a body larger than ``max_body`` is refused with 413: at once when ``Content-Length`` says so,
  otherwise (chunked, or a length that lies) as soon as the bytes received pass the limit.  The
  body is buffered here (at most ``max_body`` bytes) and handed on whole, so the app never sees a
  partial one.

Refusals are RFC 9457 problem documents, worded as the app's own.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.models import Problem

PROBLEM = "application/problem+json"
MAX_BODY = 64 * 1024          # the largest body any endpoint takes is {"force": true}
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the fields of its problem document."""

    status: int
    title: str
    detail: str
    field: str | None = None
    headers: dict[str, str] | None = None


def bearer_credentials(authorization: bytes | str | None) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` header value, else None
    (the rule of FastAPI's HTTPBearer: scheme case-insensitive, credentials not empty)."""
    if authorization is None:
        return None
    raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
    scheme, _, creds = raw.strip().partition(b" ")
    creds = creds.strip()
    if scheme.lower() != b"bearer" or not creds:
        return None
    return creds


def bearer_refusal(authorization: bytes | str | None, token: str | None) -> Refusal | None:
    """None when ``authorization`` carries the API token, else the 401 to answer."""
    if token is None:
        return Refusal(
            401,
            "Unauthorized",
            "the engine has no API token configured (api.token or "
            "XCAST6_API_TOKEN); protected endpoints are disabled",
            headers={"WWW-Authenticate": "Bearer"},
        )
    creds = bearer_credentials(authorization)
    if creds is None:
        return Refusal(
            401,
            "Unauthorized",
            "missing 'Authorization: Bearer <token>' header",
            field="header.Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # constant time: the comparison must not tell how much of a guess was right
    if not hmac.compare_digest(creds, token.encode()):
        return Refusal(
            401,
            "Unauthorized",
            "wrong bearer token",
            field="header.Authorization",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _too_large(limit: int) -> Refusal:
    return Refusal(413, "Request body too large",
                   f"the request body is larger than {limit} bytes", field="body")


class RequestGuard:
    """ASGI middleware: token check, then a bounded body, then the app (see module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None, *, max_body: int = MAX_BODY,
                 open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse (401/413/400) or call the app with the whole body already received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in self.open_paths:
            refusal = bearer_refusal(_header(scope, b"authorization"), self.token)
            if refusal is not None:
                await _answer(scope, send, refusal)
                return
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _answer(scope, send, Refusal(400, "Bad request", "Content-Length is not a number",
                                                   field="header.Content-Length"))
                return
            if int(length) > self.max_body:
                await _answer(scope, send, _too_large(self.max_body))
                return
        # Receive the body here, counting: a chunked body (no Content-Length) is refused as soon as
        # it passes the limit, before more of it is held in memory.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return                      # the client went away before sending the body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(scope, send, _too_large(self.max_body))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            # the whole body once, then the server's own messages (http.disconnect)
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _answer(scope: Scope, send: Send, refusal: Refusal) -> None:
    doc = Problem(title=refusal.title, status=refusal.status, detail=refusal.detail,
                  instance=scope["path"], field=refusal.field, correlation_id=None)
    body = doc.model_dump_json(exclude_none=True).encode()
    headers = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]
    extra = refusal.headers or {}
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    if refusal.status == 413:
        # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
