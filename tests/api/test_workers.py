"""Worker supervision with real processes: crash -> restart with backoff, the table keeps serving.

The supervisor is the dataplane's own (engine/dataplane/supervisor.py) over a WorkerPool whose
workers have no ingress link (they idle on their control pipe), so no traffic set-up is needed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.dataplane.supervisor import WorkerSupervisor
from engine.dataplane.worker import BranchFn, WorkerPool, default_brancher_factory
from engine.forwarding.fib import Fib
from engine.model import LinkMap
from tests.api.conftest import (
    TOKEN,
    InProcessDaemon,
    free_port,
    router_namespace,
    wait_for,
    workers_summary,
    write_config,
)

pytestmark = [pytest.mark.root]


@pytest.fixture
def counters() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="xapi-sup-"))
    yield tmp / "stats.shm"
    shutil.rmtree(tmp, ignore_errors=True)


def _pool(n: int, counters: Path, factory=default_brancher_factory) -> WorkerPool:  # type: ignore[no-untyped-def]
    return WorkerPool(Fib(), LinkMap([]), [], workers=n, counters_path=counters, factory=factory)


def _exits_soon(fib: Fib, links: LinkMap) -> BranchFn:
    """A worker that starts (reports ready) and then exits with status 3: a crash loop."""
    threading.Timer(0.1, os._exit, (3,)).start()
    return default_brancher_factory(fib, links)


def test_supervisor_restarts_a_killed_worker_and_reports_resources(counters: Path) -> None:
    async def scenario() -> None:
        sup = WorkerSupervisor(_pool(2, counters), backoff=0.2)
        await sup.start()
        try:
            ws = sup.workers()
            assert [w.state for w in ws] == ["running", "running"]
            victim = ws[1].pid
            assert victim is not None
            for _ in range(100):  # the worker sleeps in epoll: it soon switches voluntarily
                await asyncio.sleep(0.05)
                w = sup.workers()[1]
                if w.ctx_switches_voluntary:
                    break
            assert w.rss_bytes and w.rss_bytes > 1_000_000 and w.cpu_seconds is not None
            assert w.ctx_switches_voluntary is not None and w.ctx_switches_voluntary > 0
            os.kill(victim, signal.SIGKILL)
            for _ in range(100):
                await asyncio.sleep(0.05)
                w = sup.workers()[1]
                if w.state == "running" and w.pid != victim:
                    break
            assert w.state == "running" and w.pid != victim and w.restarts == 1
            assert w.last_exit == "signal SIGKILL"
            assert sup.workers()[0].restarts == 0
        finally:
            await sup.stop()
        assert [w.state for w in sup.workers()] == ["stopped", "stopped"]

    asyncio.run(scenario())


def test_supervisor_backoff_doubles_for_a_crash_looping_worker(counters: Path) -> None:
    async def scenario() -> None:
        sup = WorkerSupervisor(_pool(1, counters, _exits_soon), backoff=0.1, poll_s=0.02)
        await sup.start()
        try:
            await asyncio.sleep(1.2)  # 0.1 + 0.2 + 0.4 = 0.7 s of backoff -> three restarts, not twelve
            w = sup.workers()[0]
            assert 2 <= w.restarts <= 4, w.restarts
            assert w.last_exit == "exit status 3"
        finally:
            await sup.stop()

    asyncio.run(scenario())


def test_no_workers_configured() -> None:
    sup = WorkerSupervisor(None)
    assert (sup.configured(), sup.workers(), sup.counters(), sup.latency().count) == (0, [], {}, 0)


@pytest.mark.root
@pytest.mark.netns
def test_daemon_restarts_crashed_worker_without_losing_the_table() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xapi-wk-"))
    with router_namespace("xapi-w") as router:
        cfg = tmp / "engine.toml"
        write_config(cfg, tmp / "state", f"kernel://{router.ns}", free_port(), link=router.host_link,
                     change_detect=0)
        cfg.write_text(
            cfg.read_text()
            .replace("count = 0", f'count = 2\ncounters_file = "{tmp}/stats.shm"')
            .replace("[workers]", "[workers]\nrestart_backoff = 0.5")
        )
        d = InProcessDaemon(cfg)
        try:
            c = httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False)
            st = c.get("/status").json()
            assert workers_summary(st) == {"configured": 2, "running": 2, "restarts": 0}
            gen, routes = st["sync"]["generation"], st["sync"]["route_count"]
            pid = c.get("/stats").json()["workers"][0]["pid"]
            os.kill(pid, signal.SIGKILL)
            assert wait_for(lambda: c.get("/readyz").status_code == 503, 5)  # 1 of 2 running
            assert c.get("/readyz").json()["reasons"] == ["1 of 2 workers running"]
            assert c.get("/routes/lookup", params={"dst": "2001:db8:1001::1"}).status_code == 200
            assert wait_for(lambda: c.get("/readyz").status_code == 200, 10)
            st = c.get("/status").json()
            assert workers_summary(st) == {"configured": 2, "running": 2, "restarts": 1}
            assert (st["sync"]["generation"], st["sync"]["route_count"]) == (gen, routes)
            m = c.get("/metrics").text
            assert 'xcast6_worker_restarts_total{worker="0"} 1' in m and 'xcast6_worker_up{worker="1"} 1' in m
            c.close()
        finally:
            d.stop()
            shutil.rmtree(tmp, ignore_errors=True)
