"""The safety valve holds additions as it holds withdrawals (issue 15)."""

from __future__ import annotations

import asyncio
import ipaddress

from engine.forwarding.fib import Fib
from engine.model import Interface, NextHop, Route, Snapshot
from sync.apply import Applier
from sync.config import SyncConfig
from sync.service import SyncService

URL = "snmp://public@[2001:db8::1]"


def _routes(n: int, second: int = 1) -> list[Route]:
    return [Route(ipaddress.IPv6Network(f"2001:db8:{second:x}:{i:x}::/64"), (NextHop("ge-0/0/1.0"),))
            for i in range(n)]


ROGUE_GATEWAY = ipaddress.IPv6Address("fe80::66").packed
DEFAULT = Route(ipaddress.IPv6Network("::/0"), (NextHop("ge-0/0/9.0", ROGUE_GATEWAY),))


class Router:
    url = URL

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    async def fetch(self, progress: object = None) -> Snapshot:
        return Snapshot(list(self.routes), [Interface("ge-0/0/1.0", 1)], URL)

    async def change_marker(self) -> str | None:
        return None


def _run(first: list[Route], then: list[Route], **cfg: float) -> tuple[str, str | None, int, int]:
    """Serve ``first``, fetch ``then``: (status, reason, routes serving, routes after --force)."""

    async def scenario() -> tuple[str, str | None, int, int]:
        router = Router(first)
        fib = Fib()
        svc = SyncService(router, Applier(fib), None, SyncConfig(interval=3600, change_detect=0, **cfg))
        await svc.start(initial_sync=True)
        assert (await svc.jobs()[0].wait(10)).status == "applied"
        router.routes = then
        job = await svc.request_resync().wait(10)
        serving = len(fib)
        forced = await svc.request_resync(force=True).wait(10)
        assert forced.status in ("applied", "unchanged")   # unchanged: nothing was held
        after = len(fib)
        await svc.stop()
        return job.status, job.error or (job.result or {}).get("reason"), serving, after

    return asyncio.run(scenario())


def test_a_new_default_route_is_held() -> None:
    status, reason, serving, after = _run(_routes(100), [*_routes(100), DEFAULT])
    assert status == "held" and reason is not None and "default route ::/0" in reason
    assert (serving, after) == (100, 101)


def test_mass_additions_are_held_past_the_configured_share() -> None:
    status, reason, serving, after = _run(_routes(100), [*_routes(100), *_routes(150, 2)])
    assert status == "held" and reason is not None and "sync.safety_valve_additions" in reason
    assert (serving, after) == (100, 250)
    status, _, serving, _ = _run(_routes(100), [*_routes(100), *_routes(150, 2)], safety_valve_additions=2.0)
    assert status == "applied" and serving == 250


def test_ordinary_growth_and_a_default_route_already_there_pass() -> None:
    status, _, serving, _ = _run([*_routes(100), DEFAULT], [*_routes(130), DEFAULT])
    assert status == "applied" and serving == 131
