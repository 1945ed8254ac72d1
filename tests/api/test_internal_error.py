"""A 500 answers a generic problem document with a correlation id; the exception goes to the log."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.linkview import LinkView
from api.state import EngineView, StaticSync
from engine.dataplane.supervisor import WorkerSupervisor
from engine.forwarding.fib import Fib
from engine.model import Snapshot

TOKEN = "t" * 40


class BrokenSync(StaticSync):
    def status(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret-ish internal detail at /var/lib/xcast6-engine/sync.sqlite3")


def test_internal_error_is_generic_and_logged_with_a_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    fib = Fib()
    sync = BrokenSync(fib, Snapshot([], [], "static"))
    view = EngineView(fib=fib, sync=sync, workers=WorkerSupervisor(None), links=LinkView("vlan"),
                      version="t")
    client = TestClient(create_app(view, TOKEN), raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="xcast6.api"):
        r = client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert "RuntimeError" not in r.text and "sqlite3" not in r.text  # nothing of the exception leaks
    cid = doc["correlation_id"]
    assert len(cid) >= 8 and cid in doc["detail"]
    logged = [rec for rec in caplog.records if cid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and "sqlite3" in str(logged[0].exc_info[1])
