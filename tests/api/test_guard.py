"""Refused before the body is read (issue 15, "API before auth"): a request without the token, or
with a body over 64 KiB, is answered from its headers (or the first 64 KiB) with a problem
document; the schema and the readiness reasons are for the token holder only."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from fastapi.testclient import TestClient

from api.app import create_app
from api.linkview import LinkView
from api.state import EngineView, StaticSync
from engine.dataplane.supervisor import WorkerSupervisor
from engine.forwarding.fib import Fib
from engine.model import Snapshot

TOKEN = "g" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"
ROOT = Path(__file__).resolve().parents[2]


class NotLoaded(StaticSync):
    def table_loaded(self) -> bool:
        return False


def _app(sync_cls: type[StaticSync] = StaticSync) -> Any:
    fib = Fib()
    view = EngineView(fib=fib, sync=sync_cls(fib, Snapshot([], [], "static")), workers=WorkerSupervisor(None),
                      links=LinkView("vlan"), version="t")
    return create_app(view, TOKEN)


def _asgi(app: Any, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
          ) -> tuple[int, dict[str, str], bytes, int]:
    """One request straight into the ASGI app: (status, headers, body, body bytes it received)."""
    received = 0
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not pending:
            await asyncio.sleep(3600)       # nothing more: as a client that waits
        chunk = pending.pop(0)
        received += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    out: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8406),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    start = next(m for m in out if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], hdrs, body, received


_BIG = b"[" + b"{}," * (4 * 2**20 - 1) + b"{}]"     # 12 MiB of valid JSON: 4 Mi objects once parsed
BIG = [_BIG[i:i + 65536] for i in range(0, len(_BIG), 65536)]


def test_no_token_is_refused_before_the_body_is_read() -> None:
    app = _app()
    for headers in ({"content-type": "application/json"},
                    {"content-type": "application/json", "Authorization": "Bearer wrong"}):
        status, hdrs, body, received = _asgi(app, "POST", "/resync", headers, BIG)
        assert status == 401 and hdrs["content-type"] == PROBLEM
        assert hdrs["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["field"] == "header.Authorization"
        assert received == 0, f"{received} body bytes read for an unauthenticated request"


def test_oversize_body_is_413_from_content_length_or_while_streaming() -> None:
    app = _app()
    headers = {**AUTH, "content-type": "application/json"}
    status, hdrs, body, received = _asgi(app, "POST", "/resync",
                                         {**headers, "content-length": str(12 * 2**20)}, BIG)
    assert status == 413 and hdrs["content-type"] == PROBLEM and received == 0
    doc = json.loads(body)
    assert doc["status"] == 413 and doc["title"] == "Request body too large" and doc["instance"] == "/resync"
    # chunked (no Content-Length): refused once the bytes pass 64 KiB, the rest never read
    status, hdrs, body, received = _asgi(app, "POST", "/resync", headers, BIG)
    assert status == 413 and hdrs["content-type"] == PROBLEM and received <= 2 * 65536
    # a body within the limit still works, chunked too
    status, _, body, _ = _asgi(app, "POST", "/resync", headers, [b'{"for', b'ce": true}'])
    assert status == 202 and json.loads(body)["force"] is True


def test_schema_and_docs_need_the_token() -> None:
    client = TestClient(_app())
    for path in ("/openapi.json", "/docs", "/redoc"):
        r = client.get(path)
        assert r.status_code == 401 and r.headers["content-type"] == PROBLEM, path
    assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "xcast6-engine API"
    assert client.get("/docs", headers=AUTH).status_code == 404      # off: they load scripts from a CDN
    assert client.get("/redoc", headers=AUTH).status_code == 404
    assert client.get("/healthz").json() == {"status": "ok", "reasons": []}


def test_readyz_tells_its_reasons_only_with_the_token() -> None:
    client = TestClient(_app(NotLoaded))
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = client.get("/readyz", headers=headers)
        assert r.status_code == 503 and r.json() == {"status": "not ready", "reasons": []}
    r = client.get("/readyz", headers=AUTH)
    assert r.status_code == 503 and r.json()["reasons"] == ["no route table loaded yet"]
    assert TestClient(_app()).get("/readyz").json() == {"status": "ready", "reasons": []}


SERVER = textwrap.dedent("""
    import sys
    import uvicorn
    from tests.api.test_guard import _app
    uvicorn.run(_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")


def test_a_12_mib_unauthenticated_post_costs_no_memory() -> None:
    """The measurement of the issue against a real server process: +~300 MiB RSS before."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/healthz", trust_env=False)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.1)
        before = psutil.Process(proc.pid).memory_info().rss
        for content in (_BIG, iter(BIG)):           # with Content-Length, then chunked
            r = httpx.post(url + "/resync", content=content, trust_env=False, timeout=60,
                           headers={"content-type": "application/json"})
            assert r.status_code == 401
        grown = psutil.Process(proc.pid).memory_info().rss - before
        assert grown < 32 * 2**20, f"RSS grew {grown / 2**20:.0f} MiB"
    finally:
        proc.terminate()
        proc.wait(10)
