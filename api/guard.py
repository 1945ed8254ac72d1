"""The API's front door: a pure ASGI middleware that refuses a request before anything reads or
parses its body.

FastAPI reads and parses a request body before it runs the dependencies of the endpoint, the
bearer-token check among them, and sets no limit on its size: a 12 MB JSON body sent without a
token cost the process ~300 MiB before it was answered 401.  So, in front of the app:

* every path but the open ones (``/healthz``, ``/readyz``) needs ``Authorization: Bearer
  <token>`` of a role allowed the method (api/auth.py decides: 401 no or wrong token, 403 a
  read token on a method that changes state), checked from the headers alone (the body is never
  read for a refused request); an admin request that may change state is logged with the
  token's name;
* a body larger than ``max_body`` is refused with 413: at once when ``Content-Length`` says so,
  otherwise (chunked, or a length that lies) as soon as the bytes received pass the limit.  The
  body is buffered here (at most ``max_body`` bytes) and handed on whole, so the app never sees a
  partial one.

Refusals are RFC 9457 problem documents, worded as the app's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Keyring, Refusal, RefusalLog, Role, authorize
from api.models import Problem

log = logging.getLogger("xcast6.api")

PROBLEM = "application/problem+json"
MAX_BODY = 64 * 1024          # the largest body any endpoint takes is {"force": true}
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


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

    def __init__(self, app: ASGIApp, keyring: Keyring, *, max_body: int = MAX_BODY,
                 open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.keyring = keyring          # shared with the daemon, which replaces its tokens on SIGHUP
        self.wrong_tokens = RefusalLog()
        self.max_body = max_body
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse (401/413/400) or call the app with the whole body already received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in self.open_paths:
            method, path = scope["method"], scope["path"]
            who = authorize(_header(scope, b"authorization"), method, path, self.keyring)
            if isinstance(who, Refusal):
                if who.status == 403:
                    log.warning("refused (403): %s", who.detail)
                elif who.detail == "wrong bearer token":
                    client = scope.get("client")
                    line = self.wrong_tokens.note(str(client[0]) if client else "?", time.monotonic())
                    if line is not None:
                        log.warning("%s", line)
                await _answer(scope, send, who)
                return
            if who.role is Role.ADMIN and method not in ("GET", "HEAD"):
                log.info("%s %s by token %r (admin)", method, path, who.name)
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
