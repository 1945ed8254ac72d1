"""EngineView route paging and filters against a naive reference (pure, no root)."""

from __future__ import annotations

import ipaddress
import random

from api.linkview import LinkView
from api.state import EngineView, Histogram, StaticSync
from engine.dataplane.supervisor import WorkerSupervisor
from engine.forwarding.fib import Fib
from engine.forwarding.fib_synth import internet_table
from engine.model import NextHop, Route, Snapshot


def _view(routes: list[Route]) -> EngineView:
    fib = Fib()
    sync = StaticSync(fib, Snapshot(routes=routes, interfaces=[], source="static"))
    return EngineView(
        fib=fib, sync=sync, workers=WorkerSupervisor(None), links=LinkView("vlan"), version="t"
    )


def _key(r: Route) -> tuple[bytes, int]:
    return (r.prefix.network_address.packed, r.prefix.prefixlen)


def test_routes_filters_match_naive_reference() -> None:
    routes = internet_table(3000, seed=7)
    view = _view(routes)
    rng = random.Random(3)
    ordered = sorted(routes, key=_key)
    assert view.routes(limit=10000).routes == ordered
    page = view.routes(offset=100, limit=50)
    assert page.total == 3000 and page.routes == ordered[100:150]
    for _ in range(200):
        r = rng.choice(routes)
        parent = r.prefix.supernet(new_prefix=max(0, r.prefix.prefixlen - rng.randrange(0, 20)))
        got = view.routes(prefix=parent, limit=10000).routes
        assert got == [x for x in ordered if x.prefix.subnet_of(parent)]
        dst = ipaddress.IPv6Address(int(r.prefix.network_address) | rng.getrandbits(128 - r.prefix.prefixlen))
        got = view.routes(dst=dst, limit=10000).routes
        assert got == [x for x in ordered if dst in x.prefix]
        assert got[-1] == view.lookup(dst)[0]  # the longest covering route is the one used


def test_sorted_cache_follows_generation() -> None:
    hop = NextHop("ge-0/0/1.0", ipaddress.IPv6Address("fe80::1").packed)
    view = _view([Route(ipaddress.IPv6Network("2001:db8::/32"), (hop,))])
    assert view.routes().total == 1
    view.fib.add(Route(ipaddress.IPv6Network("2001:db8:1::/48"), (hop,)))
    assert [str(r.prefix) for r in view.routes().routes] == ["2001:db8::/32", "2001:db8:1::/48"]


def test_histogram_quantiles() -> None:
    h = Histogram(bounds_us=[1, 2, 4, 8], counts=[10, 80, 9, 1, 0])
    assert (h.count, h.quantile(0.5), h.quantile(0.9), h.quantile(0.99), h.quantile(1.0)) == (100, 2, 2, 4, 8)
    assert Histogram().quantile(0.5) is None
