"""Kernel mirror + engine Fib apply against the real kernel in namespaces (prefix xsa)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.forwarding.fib import Fib
from engine.model import NextHop, Route, Snapshot, ip6
from sync.apply import Applier, ApplyError
from sync.diff import diff
from sync.kernel import KernelApplyError, KernelMirror
from tests.sync._xsa_netns import add_veth, expected_view, kernel_routes, kernel_view, netns, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]

IFMAP = {"ge-0/0/1.0": "xsa-a", "ge-0/0/2.0": "xsa-b"}


def table_routes(n: int, gw: str = "fe80::1", ifname: str = "ge-0/0/1.0") -> list[Route]:
    hops = (NextHop(ifname, ip6(gw)),)
    out = [Route(ipaddress.IPv6Network((0x20010DB8 << 96 | i << 64, 64)), hops, "bgp") for i in range(n)]
    out += [
        Route(ipaddress.IPv6Network("::/0"), (NextHop("ge-0/0/2.0", ip6("2001:db8:ffff::9")),), "static"),
        Route(ipaddress.IPv6Network("2001:db9::/32"),
              (NextHop("ge-0/0/1.0", ip6("fe80::1")), NextHop("ge-0/0/2.0", ip6("fe80::2"))), "bgp"),
        Route(ipaddress.IPv6Network("2001:dba::/64"), (NextHop("ge-0/0/2.0"),), "direct"),
        Route(ipaddress.IPv6Network("2001:dbb::5/128"), (NextHop("ge-0/0/2.0", ip6("fe80::2")),), "isis"),
    ]
    return out


def test_mirror_equals_snapshot_and_replace_semantics() -> None:
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        routes = table_routes(1000)
        with KernelMirror(netns=ns) as km:
            res = km.apply(routes, IFMAP.get)
            assert (res.replaced, res.deleted, res.installed) == (1004, 0, 1004)
            assert kernel_view(ns, 6464, "245") == expected_view(routes, IFMAP)
            rows = kernel_routes(ns, 6464)
            assert len(rows) == 1004
            assert all(rt["protocol"] == "245" and rt.get("metric") == 1024 for rt in rows)
            default = next(rt for rt in rows if rt["dst"] == "default")
            assert default["gateway"] == "2001:db8:ffff::9" and "onlink" in default["flags"]

            # second table: 200 routes move to another next hop, 300 disappear, 50 new, ECMP shrinks
            new = [Route(r.prefix, (NextHop("ge-0/0/2.0", ip6("fe80::2")),), "bgp") if i < 200 else r
                   for i, r in enumerate(routes[:700])]
            new += [Route(ipaddress.IPv6Network((0x20010DB9 << 96 | i << 80, 48)), (NextHop("ge-0/0/1.0"),))
                    for i in range(50)]
            new += [Route(ipaddress.IPv6Network("2001:db9::/32"), (NextHop("ge-0/0/1.0", ip6("fe80::1")),))]
            res = km.apply(new, IFMAP.get)
            assert (res.replaced, res.deleted, res.unchanged) == (251, 303, 500)
            assert kernel_view(ns, 6464, "245") == expected_view(new, IFMAP)
            assert len(kernel_routes(ns, 6464)) == len(new)       # replaced, never duplicated
            # the cached view equals what a fresh dump reads back
            assert km.dump()[0] == km.installed()

        # a new mirror object (engine restart) learns the table from the kernel and converges
        with KernelMirror(netns=ns) as km2:
            res = km2.apply(new, IFMAP.get)
            assert (res.replaced, res.deleted, res.unchanged) == (0, 0, len(new))


def test_foreign_routes_untouched() -> None:
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        sh(f"ip -n {ns} -6 route add 2001:db8:f::/48 dev xsa-a table 6464 proto static")       # other proto
        sh(f"ip -n {ns} -6 route add 2001:db8:e::/48 dev xsa-a table 6464 proto 245 metric 7")  # ours, stale
        sh(f"ip -n {ns} -6 route add 2001:db8:d::/48 dev xsa-a table 100 proto 245")          # other table
        sh(f"ip -n {ns} -6 route add 2001:db8:c::/48 dev xsa-b proto 245")                    # main table
        before_main = sh(f"ip -n {ns} -6 route show table main")
        before_100 = sh(f"ip -n {ns} -6 route show table 100")
        with KernelMirror(netns=ns) as km:
            # the router also has 2001:db8:f::/48: the foreign route wins, the prefix is skipped
            routes = [*table_routes(10), Route(ipaddress.IPv6Network("2001:db8:f::/48"),
                                               (NextHop("ge-0/0/2.0", ip6("fe80::2")),))]
            res = km.apply(routes, IFMAP.get)
            assert res.skipped["foreign_conflict"] == 1
            assert any("2001:db8:f::/48" in e for e in res.skipped_examples)
            km.apply([], IFMAP.get)
        left = kernel_routes(ns, 6464)
        # only the static foreign route stays in 6464; our stale proto-245 metric-7 route was ours to remove
        assert [(rt["dst"], rt["protocol"]) for rt in left] == [("2001:db8:f::/48", "static")]
        assert sh(f"ip -n {ns} -6 route show table main") == before_main
        assert sh(f"ip -n {ns} -6 route show table 100") == before_100


def test_unmapped_interfaces_are_skipped_and_counted() -> None:
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        routes = [*table_routes(20), Route(ipaddress.IPv6Network("2001:dbc::/48"),
                                           (NextHop("ae0.0", ip6("fe80::7")),))]
        ifmap = {**IFMAP, "xe-9/9/9.0": "xsa-gone"}
        routes.append(Route(ipaddress.IPv6Network("2001:dbd::/48"), (NextHop("xe-9/9/9.0", ip6("fe80::8")),)))
        with KernelMirror(netns=ns) as km:
            res = km.apply(routes, ifmap.get)
        assert res.skipped == {"no_engine_link": 1, "missing_device": 1, "link_down": 0, "bad_gateway": 0,
                               "foreign_conflict": 0}
        assert any("ae0.0" in e and "has no engine link" in e for e in res.skipped_examples)
        assert any("xe-9/9/9.0" in e and "missing from the kernel" in e for e in res.skipped_examples)
        assert res.installed == 24


def test_injected_netlink_failure_rolls_back_and_fib_keeps_serving() -> None:
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        old = Snapshot(table_routes(3000), [])
        fib = Fib()
        with KernelMirror(netns=ns, chunk_bytes=16 * 1024) as km:
            applier = Applier(fib, km, IFMAP.get)
            applier.apply(old, full=True)
            gen = fib.generation
            before = kernel_view(ns, 6464, "245")
            # the new table moves everything to ge-0/0/2.0 and half way uses an interface whose
            # kernel index is stale (device deleted after lookup): the kernel answers ENODEV
            moved = (NextHop("ge-0/0/2.0", ip6("fe80::3")),)
            new_routes = [Route(r.prefix, moved, "bgp") for r in old.routes]
            new_routes[2000] = Route(new_routes[2000].prefix, (NextHop("ge-0/0/9.0", ip6("fe80::3")),))
            real_links = km.link_index

            def stale_links() -> dict[str, tuple[int, bool]]:
                return {**real_links(), "xsa-stale": (99999, True)}

            km.link_index = stale_links  # type: ignore[method-assign]
            applier.ifname_map = {**IFMAP, "ge-0/0/9.0": "xsa-stale"}.get
            new = Snapshot(new_routes, [])
            with pytest.raises(ApplyError,
                               match=r"2001:db8:0:7d0::/64.*No such device.*previous table restored"):
                applier.apply(new, diff(old, new))
            assert kernel_view(ns, 6464, "245") == before
            assert fib.generation == gen and len(fib) == len(old.routes)
            hit = fib.lookup(ip6("2001:db8:0:5::1"))
            assert hit is not None and hit[1] == NextHop("ge-0/0/1.0", ip6("fe80::1"))
            # same through the whole-table path
            with pytest.raises(KernelApplyError) as exc:
                km.apply(new_routes, applier.ifname_map)
            assert exc.value.rolled_back and exc.value.errno == 19
            assert kernel_view(ns, 6464, "245") == before


def test_applier_incremental_and_replace_modes() -> None:
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        fib = Fib()
        with KernelMirror(netns=ns) as km:
            applier = Applier(fib, km, IFMAP.get)
            s1 = Snapshot(table_routes(500), [])
            r1 = applier.apply(s1, diff(None, s1))
            assert r1.fib_mode == "replace" and r1.fib_routes == 504
            extra = Route(ipaddress.IPv6Network("2001:dbe::/48"), (NextHop("ge-0/0/1.0"),))
            s2 = Snapshot([*s1.routes[5:], extra], [])
            r2 = applier.apply(s2, diff(s1, s2))
            assert r2.fib_mode == "incremental" and r2.kernel is not None
            assert (r2.kernel.replaced, r2.kernel.deleted) == (1, 5)
            assert sorted(str(r.prefix) for r in fib.routes()) == sorted(str(r.prefix) for r in s2.routes)
            assert kernel_view(ns, 6464, "245") == expected_view(s2.routes, IFMAP)
            assert km.dump()[0] == km.installed()
            s3 = Snapshot(s2.routes[300:], [])
            r3 = applier.apply(s3, diff(s2, s3))
            assert r3.fib_mode == "replace" and r3.kernel is not None and r3.kernel.deleted == 300
            assert kernel_view(ns, 6464, "245") == expected_view(s3.routes, IFMAP)
            assert applier.apply(s3, diff(s3, s3)).fib_mode == "none"


def test_engine_link_down_and_back_up() -> None:
    """The kernel refuses next hops on a down device and flushes routes when one goes down:
    such routes are skipped and counted, and re-installed once the link is back."""
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        add_veth(ns, "xsa-c", "xsa-d")
        routes = table_routes(50)     # ge-0/0/1.0 -> xsa-a, ge-0/0/2.0 -> xsa-b (+ ECMP over both)
        ifmap = {"ge-0/0/1.0": "xsa-a", "ge-0/0/2.0": "xsa-c"}
        with KernelMirror(netns=ns) as km:
            assert km.apply(routes, ifmap.get).installed == 54
            sh(f"ip -n {ns} link set xsa-c down")    # kernel drops routes via xsa-c by itself
            res = km.apply(routes, ifmap.get)
            # the 3 routes only via ge-0/0/2.0 are skipped; the ECMP route keeps its ge-0/0/1.0 member
            assert res.skipped["link_down"] == 3 and res.installed == 51
            assert any("ge-0/0/2.0" in e and "down" in e for e in res.skipped_examples)
            assert kernel_view(ns, 6464, "245") == expected_view(
                [r for r in routes if r.nexthops[0].ifname == "ge-0/0/1.0" or len(r.nexthops) > 1],
                {"ge-0/0/1.0": "xsa-a"})
            sh(f"ip -n {ns} link set xsa-c up")
            res = km.apply(routes, ifmap.get)
            assert res.installed == 54 and res.skipped["link_down"] == 0
            assert kernel_view(ns, 6464, "245") == expected_view(routes, ifmap)


def test_fib_failure_puts_the_kernel_mirror_back(monkeypatch: pytest.MonkeyPatch) -> None:
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        fib = Fib()
        with KernelMirror(netns=ns) as km:
            applier = Applier(fib, km, IFMAP.get)
            old = Snapshot(table_routes(100), [])
            applier.apply(old, full=True)
            before, gen = kernel_view(ns, 6464, "245"), fib.generation
            new = Snapshot(table_routes(100, gw="fe80::99"), [])

            def broken(routes: object) -> None:
                raise MemoryError("no room for the new generation")

            monkeypatch.setattr(fib, "replace", broken)
            with pytest.raises(ApplyError, match=r"MemoryError.*previous generation \d+ still serving"):
                applier.apply(new, diff(old, new), full=True)
            assert fib.generation == gen
            assert kernel_view(ns, 6464, "245") == before


def test_incremental_apply_after_link_flap_reconciles_everything() -> None:
    """Routes skipped while a link was down come back with the next (small) diff."""
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        add_veth(ns, "xsa-c", "xsa-d")
        ifmap = {"ge-0/0/1.0": "xsa-a", "ge-0/0/2.0": "xsa-c"}
        fib = Fib()
        with KernelMirror(netns=ns) as km:
            applier = Applier(fib, km, ifmap.get)
            s1 = Snapshot(table_routes(200), [])
            applier.apply(s1, full=True)
            sh(f"ip -n {ns} link set xsa-c down")
            extra2 = Route(ipaddress.IPv6Network("2001:dbe::/48"), (NextHop("ge-0/0/1.0"),))
            s2 = Snapshot([*s1.routes, extra2], [])
            r2 = applier.apply(s2, diff(s1, s2))
            assert r2.fib_mode == "incremental" and r2.kernel is not None
            assert r2.kernel.skipped["link_down"] == 3
            sh(f"ip -n {ns} link set xsa-c up")
            extra3 = Route(ipaddress.IPv6Network("2001:dbf::/48"), (NextHop("ge-0/0/1.0"),))
            s3 = Snapshot([*s2.routes, extra3], [])
            r3 = applier.apply(s3, diff(s2, s3))
            assert r3.fib_mode == "incremental" and r3.kernel is not None
            assert r3.kernel.skipped["link_down"] == 0
            assert kernel_view(ns, 6464, "245") == expected_view(s3.routes, ifmap)


_GWS = ["fe80::1", "fe80::2", "2001:db8:ffff::1", "2001:db8:ffff::2", None]
_IFS = ["ge-0/0/1.0", "ge-0/0/2.0"]


@st.composite
def _tables(draw: st.DrawFn) -> list[Route]:
    """A random router table: random prefixes/lengths, 1-3 next hops, some connected."""
    out: dict[ipaddress.IPv6Network, Route] = {}
    for _ in range(draw(st.integers(0, 40))):
        plen = draw(st.sampled_from([0, 16, 32, 48, 64, 127, 128]))
        addr = draw(st.integers(0, 2**16 - 1)) << 112 | draw(st.integers(0, 2**64 - 1)) << 48
        prefix = ipaddress.IPv6Network((0x2001 << 112 | addr >> 16, plen), strict=False)
        hops = draw(st.lists(st.tuples(st.sampled_from(_IFS), st.sampled_from(_GWS)), min_size=1, max_size=3,
                             unique=True))
        out[prefix] = Route(prefix, tuple(NextHop(i, ip6(g) if g else None) for i, g in hops))
    return list(out.values())


def test_random_table_sequences_match_the_kernel() -> None:
    """Any sequence of router tables: after each apply the kernel (read by iproute2 and by our
    own dump) holds exactly the plan — codec, multipath, replace and delete all exercised."""
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        with KernelMirror(netns=ns) as km:

            @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
            @given(_tables())
            def check(routes: list[Route]) -> None:
                km.apply(routes, IFMAP.get)
                plan = km.plan(routes, IFMAP.get)
                dumped, _ = km.dump()
                assert dumped == plan.desired == km.installed()
                names = {idx: name for name, (idx, _) in km.link_index().items()}
                want = set()
                for kr in plan.desired.values():
                    prefix = ipaddress.IPv6Network((int.from_bytes(kr.dst, "big"), kr.dst_len))
                    hops = frozenset((str(ipaddress.IPv6Address(h.gateway)) if h.gateway else "",
                                      names[h.oif]) for h in kr.nexthops)
                    want.add((str(prefix), hops))
                assert kernel_view(ns, 6464, "245") == want

            check()
