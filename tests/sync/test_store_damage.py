"""A damaged state store never keeps the engine from starting (issue 15).

Ten kinds of damage to ``sync.sqlite3``; for each the sync service built the way the daemon
builds it (``build_service`` -> ``open_store``) starts, keeps the damaged file aside (renamed
with a timestamp), serves nothing stale, fetches the router afresh and saves into a fresh store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.forwarding.fib import Fib
from engine.model import Interface, NextHop, Route, Snapshot
from sync.config import SyncConfig
from sync.service import build_service
from sync.store import DB_NAME, SyncStore


def _routes(n: int, second: int) -> list[Route]:
    return [Route(ipaddress.IPv6Network(f"2001:db8:{second:x}:{i:x}::/64"), (NextHop("ge-0/0/1.0"),))
            for i in range(n)]


class Router:
    """A route source answering with a fixed table (the 'fresh fetch')."""

    url = "snmp://public@[2001:db8::1]"

    def __init__(self) -> None:
        self.snapshot = Snapshot(_routes(50, 0xF), [Interface("ge-0/0/1.0", 1)], self.url)

    async def fetch(self, progress: object = None) -> Snapshot:
        return self.snapshot

    async def change_marker(self) -> str | None:
        return None


def _stored(state: Path, n: int = 3000) -> Path:
    """A good store with a snapshot big enough to span many pages."""
    store = SyncStore(state)
    store.save_snapshot(Snapshot(_routes(n, 1), [Interface("ge-0/0/1.0", 1)], "snmp://x"))
    store.close()
    return state / DB_NAME


def _truncate(size: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        with db.open("r+b") as f:
            f.truncate(size(db.stat().st_size))
    return damage


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(64 * 1024))


def _page_in_the_middle(db: Path) -> None:
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek((size // 2) // 4096 * 4096)
        f.write(os.urandom(4096))


def _header(db: Path) -> None:
    with db.open("r+b") as f:
        f.write(b"definitely not sqlite")


def _sql(statement: str) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        con = sqlite3.connect(db)
        con.execute(statement)
        con.commit()
        con.close()
    return damage


DAMAGE = {
    "truncated to 100 B": _truncate(lambda _: 100),
    "truncated to 4 KB": _truncate(lambda _: 4096),
    "truncated to half": _truncate(lambda n: n // 2),
    "64 KB of garbage": _garbage,
    "a page overwritten in the middle": _page_in_the_middle,
    "file header overwritten": _header,
    "snapshot blob garbled": _sql("UPDATE snapshot SET routes = x'789c0300000000'"),
    "route count disagrees": _sql("UPDATE snapshot SET route_count = route_count + 7"),
    "interface list garbled": _sql("UPDATE snapshot SET interfaces = '{[not json'"),
    "snapshot blob not compressed": _sql("UPDATE snapshot SET routes = x'0102030405'"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_engine_starts_on_a_damaged_store(tmp_path: Path, kind: str) -> None:
    state = tmp_path / "state"
    db = _stored(state)
    DAMAGE[kind](db)
    router = Router()

    async def scenario() -> None:
        fib = Fib()
        svc = build_service(router, fib, state, kernel_table=0,
                            config=SyncConfig(interval=3600, change_detect=0, store_min_interval_s=0))
        await svc.start(initial_sync=True)
        job = await svc.jobs()[0].wait(10)
        assert job.status == "applied", job.error
        assert len(fib) == len(router.snapshot.routes)       # the router's table, nothing stale
        await svc.stop()
        assert svc.store is not None
        svc.store.close()

    asyncio.run(scenario())
    aside = sorted(p.name for p in state.iterdir() if ".damaged-" in p.name)
    assert any(name.startswith(f"{DB_NAME}.damaged-") and not name.endswith(("-wal", "-shm"))
               for name in aside), aside
    fresh = SyncStore(state).load_snapshot()
    assert fresh is not None and len(fresh.routes) == len(router.snapshot.routes)
