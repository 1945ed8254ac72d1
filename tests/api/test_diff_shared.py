"""GET /routes/diff under load (issue 15): concurrent calls share one router walk, a recent result
is served again with its age, and a 100k-route diff does not stall the event loop."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import httpx

from api.app import create_app
from api.linkview import LinkView
from api.state import EngineView
from api.syncport import SyncServiceView
from engine.dataplane.supervisor import WorkerSupervisor
from engine.forwarding.fib import Fib
from engine.model import Interface, NextHop, Route, Snapshot
from sync.apply import Applier
from sync.config import SyncConfig
from sync.service import SyncService

TOKEN = "d" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "snmp://public@[2001:db8::1]"


def _routes(n: int, hop: str) -> list[Route]:
    return [Route(ipaddress.IPv6Network((0x20010DB8 << 96 | i << 64, 64)), (NextHop(hop),)) for i in range(n)]


class Router:
    """A source that counts its fetches; each takes ``delay`` seconds."""

    url = URL

    def __init__(self, routes: list[Route], delay: float) -> None:
        self.routes, self.delay, self.fetches = routes, delay, 0

    async def fetch(self, progress: object = None) -> Snapshot:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        return Snapshot(list(self.routes), [Interface("ge-0/0/1.0", 1)], URL)

    async def change_marker(self) -> str | None:
        return None


async def _engine(router: Router, **kw: float) -> tuple[SyncService, httpx.AsyncClient]:
    fib = Fib()
    svc = SyncService(router, Applier(fib), None, SyncConfig(interval=3600, change_detect=0))
    await svc.start(initial_sync=True)
    assert (await svc.jobs()[0].wait(60)).status == "applied"
    router.fetches = 0
    view = EngineView(fib=fib, sync=SyncServiceView(svc), workers=WorkerSupervisor(None),
                      links=LinkView("vlan"), version="t")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(view, TOKEN, **kw)),
                               base_url="http://engine", headers=AUTH, timeout=120)
    return svc, client


def test_concurrent_diffs_share_one_router_fetch_and_a_recent_one_is_served_again() -> None:
    async def scenario() -> None:
        router = Router(_routes(200, "ge-0/0/1.0"), delay=0.3)
        svc, client = await _engine(router, diff_min_interval=5)
        router.routes = _routes(201, "ge-0/0/1.0")
        answers = await asyncio.gather(*(client.get("/routes/diff") for _ in range(25)))
        assert [r.status_code for r in answers] == [200] * 25
        assert router.fetches == 1
        docs = [r.json() for r in answers]
        assert {d["router_vs_engine"]["counts"]["added"] for d in docs} == {1}
        assert all(0 <= d["age_s"] < 5 for d in docs)
        # within diff_min_interval: the same result again, older, no walk
        await asyncio.sleep(0.2)
        again = (await client.get("/routes/diff")).json()
        assert router.fetches == 1 and again["age_s"] >= 0.2
        assert again["router_vs_engine"] == docs[0]["router_vs_engine"]
        await client.aclose()
        await svc.stop()

    asyncio.run(scenario())


def test_a_100k_route_diff_leaves_the_event_loop_responsive() -> None:
    async def scenario() -> None:
        router = Router(_routes(100_000, "ge-0/0/1.0"), delay=0)
        svc, client = await _engine(router)
        router.routes = _routes(100_000, "ge-0/0/2.0")     # every route changed: the biggest diff
        lags: list[float] = []
        running = True

        async def ticker() -> None:
            # how late a 5 ms sleep wakes up = how long the loop was held by something else
            while running:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t - 0.005)

        async def health() -> float:
            await asyncio.sleep(0.3)              # while the diff runs
            t = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            return time.perf_counter() - t

        tick = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        diff, health_s = await asyncio.gather(client.get("/routes/diff"), health())
        took = time.perf_counter() - t0
        await asyncio.sleep(0.02)                 # the ticker's last wake-up is counted
        running = False
        await tick
        assert diff.status_code == 200 and router.fetches == 1
        assert diff.json()["router_vs_engine"]["counts"]["changed"] == 100_000
        # before: the report was built on the loop, which stood still for ~4.5 s of the ~5 s
        assert max(lags) < min(1.0, took / 4), (max(lags), took)
        assert health_s < min(1.0, took / 4), (health_s, took)
        await client.aclose()
        await svc.stop()

    asyncio.run(scenario())
