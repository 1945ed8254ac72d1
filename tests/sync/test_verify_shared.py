"""SyncService.verify walks the whole router table (issue 15, "/routes/diff"): callers that arrive
while one runs share it, and a recent one is reused when asked (max_age) while the Fib holds."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from engine.forwarding.fib import Fib
from engine.model import Interface, NextHop, Route, Snapshot
from sync.apply import Applier
from sync.config import SyncConfig
from sync.service import SyncService
from sync.source import SourceError

URL = "snmp://public@[2001:db8::1]"


def _routes(n: int, hop: str = "ge-0/0/1.0") -> list[Route]:
    return [Route(ipaddress.IPv6Network(f"2001:db8:1:{i:x}::/64"), (NextHop(hop),)) for i in range(n)]


class Router:
    """A source that counts its fetches; each takes ``delay`` seconds (a walk in progress)."""

    url = URL

    def __init__(self, routes: list[Route], delay: float = 0.2) -> None:
        self.routes, self.delay, self.fetches, self.fail = routes, delay, 0, False

    async def fetch(self, progress: object = None) -> Snapshot:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise SourceError("router unreachable")
        return Snapshot(list(self.routes), [Interface("ge-0/0/1.0", 1)], URL)

    async def change_marker(self) -> str | None:
        return None


async def _service(router: Router) -> SyncService:
    svc = SyncService(router, Applier(Fib()), None, SyncConfig(interval=3600, change_detect=0))
    await svc.start(initial_sync=True)
    assert (await svc.jobs()[0].wait(10)).status == "applied"
    router.fetches = 0
    return svc


def test_concurrent_verifications_share_one_router_walk() -> None:
    async def scenario() -> None:
        router = Router(_routes(50))
        svc = await _service(router)
        router.routes = _routes(51)
        results = await asyncio.gather(*(svc.verify() for _ in range(20)))
        assert router.fetches == 1
        assert all(v is results[0] for v in results)
        assert [str(r.prefix) for r in results[0].router_vs_engine.added] == ["2001:db8:1:32::/64"]
        # one arriving after it ended walks again (max_age 0: the default, always fresh)
        await svc.verify()
        assert router.fetches == 2
        # a caller that gives up does not cancel the walk the others wait for
        first = asyncio.ensure_future(svc.verify())
        second = asyncio.ensure_future(svc.verify())
        await asyncio.sleep(0.05)
        first.cancel()
        assert (await second).router_vs_engine.counts()["added"] == 1 and router.fetches == 3
        await svc.stop()

    asyncio.run(scenario())


def test_a_recent_verification_is_reused_until_it_ages_or_the_fib_changes() -> None:
    async def scenario() -> None:
        router = Router(_routes(50), delay=0.01)
        svc = await _service(router)
        v = await svc.verify(max_age=5)
        assert router.fetches == 1
        assert await svc.verify(max_age=5) is v and router.fetches == 1
        await asyncio.sleep(0.1)
        assert await svc.verify(max_age=0.05) is not v and router.fetches == 2
        # a resync changed the engine table: the reused result would be stale, so walk again
        router.routes = _routes(52)
        assert (await svc.request_resync().wait(10)).status == "applied"
        router.fetches = 0
        v = await svc.verify(max_age=5)
        assert router.fetches == 1 and v.router_vs_engine.empty
        # a failure is shared by the callers waiting, but not reused
        router.fail = True
        with pytest.raises(SourceError):
            await svc.verify()
        router.fail = False
        assert (await svc.verify()).router_vs_engine.empty and router.fetches == 3
        await svc.stop()

    asyncio.run(scenario())
