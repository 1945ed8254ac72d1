"""Forwarding table behaviour: LPM against brute force, ECMP, groups, generations, concurrency."""

from __future__ import annotations

import ipaddress
import random
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.forwarding.fib import Fib, FibSnapshot, pick_member
from engine.forwarding.fib_synth import address_in, internet_table, router_nexthops
from engine.model import NextHop, Route, ip6

Net = ipaddress.IPv6Network

NH = router_nexthops(4)


def net(text: str) -> Net:
    return Net(text)


def route(prefix: str | Net, *hops: NextHop) -> Route:
    return Route(Net(prefix), hops or (NH[0],))


def brute_lpm(routes: dict[Net, Route], dst16: bytes) -> Route | None:
    """Independent reference: scan every route, keep the longest containing one."""
    addr = ipaddress.IPv6Address(dst16)
    best: Route | None = None
    for prefix, r in routes.items():
        if addr in prefix and (best is None or prefix.prefixlen > best.prefix.prefixlen):
            best = r
    return best


# -- hypothesis strategies -------------------------------------------------------------
# Prefixes are drawn around a few base addresses so they overlap and nest heavily,
# with /0 and /128 allowed.
_BASES = [int(ipaddress.IPv6Address(a)) for a in ("2001:db8::", "2001:db8:0:1::", "2a00::", "::", "ffff::")]


@st.composite
def prefixes(draw: st.DrawFn) -> Net:
    base = draw(st.sampled_from(_BASES))
    noise = draw(st.integers(0, (1 << 128) - 1)) >> draw(st.integers(0, 128))
    length = draw(st.sampled_from([0, 1, 7, 8, 9, 16, 29, 32, 33, 47, 48, 63, 64, 65, 120, 127, 128]))
    return Net(((base ^ noise) & ((1 << 128) - 1), length), strict=False)


@st.composite
def addresses(draw: st.DrawFn, near: list[Net]) -> bytes:
    if near and draw(st.booleans()):
        p = draw(st.sampled_from(near))
        host_bits = 128 - p.prefixlen
        host = draw(st.integers(0, (1 << host_bits) - 1)) if host_bits else 0
        return (int(p.network_address) | host).to_bytes(16, "big")
    return draw(st.binary(min_size=16, max_size=16))


nexthop_sets = st.lists(st.sampled_from(NH), min_size=1, max_size=3, unique=True).map(tuple)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_lookup_matches_brute_force(data: st.DataObject) -> None:
    pairs = data.draw(st.lists(st.tuples(prefixes(), nexthop_sets), max_size=40))
    table = {p: Route(p, hops) for p, hops in pairs}  # last wins, as Fib.replace documents
    fib = Fib(Route(p, hops) for p, hops in pairs)
    assert len(fib) == len(table)
    for dst in data.draw(st.lists(addresses(list(table)), min_size=1, max_size=30)):
        want = brute_lpm(table, dst)
        got = fib.lookup(dst)
        assert fib.lookup_route(dst) == want
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert got[0] == want
            assert got[1] == pick_member(want, dst)
            assert got[1] in want.nexthops
        assert fib.lookup(dst) == got  # cached answer equals the computed one


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_incremental_changes_match_model(data: st.DataObject) -> None:
    """Random add/remove/update/replace sequences against a plain dict model."""
    fib = Fib()
    model: dict[Net, Route] = {}
    probes: list[bytes] = []
    for _ in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(["add", "remove", "update", "replace"]))
        gen = fib.generation
        if op == "add":
            r = Route(data.draw(prefixes()), data.draw(nexthop_sets))
            prev = fib.add(r)
            assert prev == model.get(r.prefix)
            model[r.prefix] = r
            assert fib.generation > gen
        elif op == "remove":
            p = data.draw(st.sampled_from(list(model))) if model and data.draw(st.booleans()) else data.draw(
                prefixes()
            )
            found = fib.remove(p)
            assert found == (p in model)
            model.pop(p, None)
            assert (fib.generation > gen) == found
        elif op == "update":
            pairs = data.draw(st.lists(st.tuples(prefixes(), nexthop_sets), max_size=5))
            adds = [Route(p, h) for p, h in pairs]
            rems = data.draw(st.lists(prefixes(), max_size=5))
            _, removed = fib.update(add=adds, remove=rems)
            for p, flag in zip(rems, removed, strict=True):
                assert flag == (p in model)
                model.pop(p, None)
            for r in adds:
                model[r.prefix] = r
            assert fib.generation == gen + 1
        else:
            pairs = data.draw(st.lists(st.tuples(prefixes(), nexthop_sets), max_size=10))
            model = {p: Route(p, h) for p, h in pairs}
            fib.replace(Route(p, h) for p, h in pairs)
            assert fib.generation == gen + 1
        # Probe both fresh addresses and ones cached under earlier generations.
        probes += data.draw(st.lists(addresses(list(model)), max_size=5))
        for dst in probes:
            want = brute_lpm(model, dst)
            got = fib.lookup(dst)
            assert (got[0] if got else None) == want
        assert len(fib) == len(model)
        assert sorted(map(str, (r.prefix for r in fib.routes()))) == sorted(map(str, model))
        for p, r in model.items():
            assert fib.get(p) == r


def test_default_route_and_host_route() -> None:
    fib = Fib([route("::/0", NH[0]), route("2001:db8::1/128", NH[1]), route("2001:db8::/32", NH[2])])
    assert fib.lookup(ip6("2001:db8::1")) == (fib.get(net("2001:db8::1/128")), NH[1])
    assert fib.lookup(ip6("2001:db8::2"))[1] == NH[2]  # type: ignore[index]
    assert fib.lookup(ip6("2001:db9::1"))[1] == NH[0]  # type: ignore[index]
    assert fib.lookup(ip6("::"))[1] == NH[0]  # type: ignore[index]
    assert fib.lookup(ip6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))[1] == NH[0]  # type: ignore[index]


def test_no_route_is_none_and_negative_answer_is_invalidated() -> None:
    fib = Fib([route("2001:db8::/32")])
    dst = ip6("2a00::1")
    assert fib.lookup(dst) is None
    assert fib.lookup(dst) is None  # served from cache
    fib.add(route("2a00::/16", NH[3]))
    assert fib.lookup(dst)[1] == NH[3]  # type: ignore[index]


def test_connected_route_nexthop_is_on_link() -> None:
    on_link = NextHop("ge-0/0/5.0", None)
    fib = Fib([route("2001:db8:5::/64", on_link), route("::/0", NH[0])])
    res = fib.lookup(ip6("2001:db8:5::42"))
    assert res is not None
    assert res[1] is on_link and res[1].connected
    assert res[0].prefix == net("2001:db8:5::/64")


def test_cache_invalidated_by_more_specific_add_and_by_remove() -> None:
    fib = Fib([route("2001:db8::/32", NH[0])])
    dst = ip6("2001:db8:1::1")
    assert fib.lookup(dst)[1] == NH[0]  # type: ignore[index]
    fib.add(route("2001:db8:1::/48", NH[1]))
    assert fib.lookup(dst)[1] == NH[1]  # type: ignore[index]
    assert fib.remove(net("2001:db8:1::/48"))
    assert fib.lookup(dst)[1] == NH[0]  # type: ignore[index]
    prev = fib.add(route("2001:db8::/32", NH[2]))  # replace same prefix
    assert prev is not None and prev.nexthops == (NH[0],)
    assert fib.lookup(dst)[1] == NH[2]  # type: ignore[index]


def test_generation_bumps() -> None:
    fib = Fib()
    g = fib.generation
    fib.replace([route("2001:db8::/32")])
    assert fib.generation == g + 1
    fib.add(route("2001:db8:1::/48"))
    assert fib.generation == g + 2
    assert fib.remove(net("2001:db8:1::/48"))
    assert fib.generation == g + 3
    assert not fib.remove(net("2001:db8:1::/48"))
    assert fib.generation == g + 3  # nothing changed, caches stay valid
    fib.update(add=[route("2001:db8:2::/48")], remove=[net("2001:db8::/32")])
    assert fib.generation == g + 4
    fib.replace([])
    assert fib.generation == g + 5 and len(fib) == 0


def test_ecmp_member_is_deterministic_and_spread() -> None:
    hops = tuple(NH)
    a = Fib([Route(net("2001:db8::/32"), hops)])
    b = Fib([Route(net("2001:db8::/32"), hops)])  # independent instance, equal table
    rng = random.Random(5)
    chosen: dict[NextHop, int] = {}
    for _ in range(2000):
        dst = address_in(net("2001:db8::/32"), rng)
        first = a.lookup(dst)
        assert first is not None
        assert a.lookup(dst) == first
        assert a.lookup_many([dst, dst]) == [first, first]
        assert b.lookup(dst) == first
        assert first[1] == hops[zlib.crc32(dst) % len(hops)]
        chosen[first[1]] = chosen.get(first[1], 0) + 1
    assert set(chosen) == set(hops)
    assert min(chosen.values()) > 2000 / len(hops) * 0.7  # roughly even
    # Stable across generations: an unrelated change does not move any destination.
    dst = address_in(net("2001:db8::/32"), rng)
    before = a.lookup(dst)
    a.add(route("2a00::/16"))
    assert a.lookup(dst) == before


def test_groups_are_shared_objects() -> None:
    # Equal next hops built separately (as a source parsing rows would) end up as one object.
    def fresh(i: int) -> tuple[NextHop, ...]:
        return (NextHop(f"ge-0/0/{i}.0", ip6(f"fe80::{i + 1}")), NextHop("ae0.0", ip6("fe80::99")))

    routes = [Route(Net((0x2001_0DB8 << 96 | i << 80, 48)), fresh(i % 3)) for i in range(300)]
    fib = Fib(routes)
    groups = fib.groups()
    assert len(groups) == 3 and sum(groups.values()) == 300
    stored = [fib.get(r.prefix) for r in routes]
    assert all(s is not None for s in stored)
    by_group = {id(s.nexthops) for s in stored if s}
    assert len(by_group) == 3
    members = {id(h) for s in stored if s for h in s.nexthops}
    assert len(members) == 4  # ae0.0 member shared by all three groups
    assert [s == r for s, r in zip(stored, routes, strict=True)] == [True] * 300
    # Incremental adds join the existing groups too.
    fib.add(Route(net("2001:db9::/32"), fresh(1)))
    added = fib.get(net("2001:db9::/32"))
    assert added is not None and added.nexthops is stored[1].nexthops  # type: ignore[union-attr]
    assert fib.stats()["nexthop_groups_interned"] == 3


def test_replace_failure_keeps_last_good_table() -> None:
    fib = Fib([route("2001:db8::/32", NH[1])])
    gen = fib.generation

    def half_walk():  # type: ignore[no-untyped-def]
        yield route("2a00::/16")
        raise RuntimeError("walk interrupted")

    with pytest.raises(RuntimeError):
        fib.replace(half_walk())
    assert fib.generation == gen and len(fib) == 1
    assert fib.lookup(ip6("2001:db8::1"))[1] == NH[1]  # type: ignore[index]
    assert fib.lookup(ip6("2a00::1")) is None


def test_bad_input_is_rejected_by_name_and_changes_nothing() -> None:
    fib = Fib([route("2001:db8::/32")])
    gen = fib.generation
    bad = Route(ipaddress.IPv4Network("192.0.2.0/24"), (NH[0],))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="IPv6Network"):
        fib.update(add=[route("2a00::/16"), bad])
    assert fib.generation == gen and len(fib) == 1 and fib.get(net("2a00::/16")) is None
    with pytest.raises(ValueError, match="16 bytes"):
        fib.lookup(b"\x20\x01")
    with pytest.raises(ValueError, match="cache_size"):
        Fib(cache_size=0)


def test_snapshot_is_immutable_while_table_changes() -> None:
    fib = Fib([route("2001:db8::/32", NH[0])])
    snap = fib.snapshot()
    assert isinstance(snap, FibSnapshot)
    fib.add(route("2001:db8:1::/48", NH[1]))
    fib.remove(net("2001:db8::/32"))
    assert len(snap) == 1 and snap.generation < fib.generation
    assert snap.lookup(ip6("2001:db8:1::1"))[1] == NH[0]  # type: ignore[index]
    assert fib.lookup(ip6("2001:db8:1::1"))[1] == NH[1]  # type: ignore[index]
    assert fib.lookup(ip6("2001:db8:2::1")) is None


def test_cache_bound_is_respected() -> None:
    fib = Fib([route("::/0")], cache_size=100)
    rng = random.Random(1)
    for _ in range(1000):
        fib.lookup(rng.randbytes(16))
        assert fib.stats()["cache_entries"] <= 100  # type: ignore[operator]


def test_lookup_accepts_memoryview_slices() -> None:
    fib = Fib([route("2001:db8::/32", NH[2])])
    buf = bytes(8) + ip6("2001:db8::7") + bytes(8)
    view = memoryview(buf)[8:24]
    assert fib.lookup(view)[1] == NH[2]  # type: ignore[arg-type,index]
    assert fib.lookup(view)[1] == NH[2]  # type: ignore[arg-type,index]


def _table(hop: NextHop, shift: int) -> list[Route]:
    # Two tables with different prefix sets covering the same destinations, so a reader that
    # saw a mix would get answers from both next hops within one snapshot.
    return [Route(Net((0x2001_0DB8 << 96 | i << 80, 48 - shift)), (hop,)) for i in range(0, 2000, 1 << shift)]


def test_concurrent_readers_never_see_a_mixed_table() -> None:
    table_a, table_b = _table(NH[0], 0), _table(NH[1], 1)
    fib = Fib(table_a)
    dsts = [((0x2001_0DB8 << 96) | (i << 80) | 1).to_bytes(16, "big") for i in range(0, 2000, 2)]
    stop = threading.Event()
    problems: list[str] = []
    rounds = [0]

    def reader() -> None:
        while not stop.is_set():
            snap = fib.snapshot()
            hops = {r[1] for r in snap.lookup_many(dsts) if r is not None}
            # The covering /32 the incremental writer toggles never wins over the /47-/48s.
            sizes = (len(table_a), len(table_a) + 1, len(table_b), len(table_b) + 1)
            if len(hops) != 1 or len(snap) not in sizes:
                problems.append(f"gen {snap.generation}: hops {hops}, {len(snap)} routes")
            one = fib.lookup(dsts[rounds[0] % len(dsts)])
            if one is None:
                problems.append("destination unresolved mid-replace")
            rounds[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            fib.replace(table_b if i % 2 == 0 else table_a)
            # Incremental writers too: add and remove a covering route while readers run.
            fib.add(route("2001:db8::/32", NH[0] if i % 2 else NH[1]))
            fib.remove(net("2001:db8::/32"))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not problems, problems[:5]
    assert rounds[0] > 0


def test_internet_scale_table_matches_reference() -> None:
    routes = internet_table(250_000, seed=3)
    fib = Fib(routes)
    assert len(fib) == 250_000
    lengths = {r.prefix.prefixlen for r in routes}
    assert {29, 32, 48, 64, 128} <= lengths
    by_len: dict[int, dict[int, Route]] = {}
    for r in routes:
        by_len.setdefault(r.prefix.prefixlen, {})[int(r.prefix.network_address)] = r

    def reference(dst: bytes) -> Route | None:
        a = int.from_bytes(dst, "big")
        for n in sorted(by_len, reverse=True):
            m = ((1 << n) - 1) << (128 - n)
            hit = by_len[n].get(a & m)
            if hit is not None:
                return hit
        return None

    rng = random.Random(4)
    for r in rng.sample(routes, 3000):
        dst = address_in(r.prefix, rng)
        assert fib.lookup_route(dst) == reference(dst)
    # Group sharing at scale: 250k routes, a handful of group objects.
    assert fib.stats()["nexthop_groups_interned"] == len({r.nexthops for r in routes})
    assert len({id(x.nexthops) for x in fib.routes()}) == len({r.nexthops for r in routes})
    # 1,000 incremental changes leave exactly the expected table.
    extra = internet_table(1000, seed=99)
    fresh = [r for r in extra if fib.get(r.prefix) is None]
    for r in fresh:
        fib.add(r)
    assert len(fib) == 250_000 + len(fresh)
    for r in fresh:
        assert fib.remove(r.prefix)
    assert len(fib) == 250_000


def test_long_prefixes_sharing_a_slash32_bucket() -> None:
    """Removing one long prefix must not hide another of the same length in the same /32."""
    fib = Fib([route("2001:db8::/32", NH[0]), route("2001:db8:1::/48", NH[1])])
    fib.add(route("2001:db8:2::/48", NH[2]))
    fib.add(route("2001:db8:2:5::/64", NH[3]))
    assert fib.remove(net("2001:db8:1::/48"))
    assert fib.lookup(ip6("2001:db8:2::9"))[1] == NH[2]  # type: ignore[index]
    assert fib.lookup(ip6("2001:db8:2:5::9"))[1] == NH[3]  # type: ignore[index]
    assert fib.lookup(ip6("2001:db8:1::9"))[1] == NH[0]  # type: ignore[index]
    assert fib.remove(net("2001:db8:2:5::/64"))
    assert fib.remove(net("2001:db8:2::/48"))
    assert fib.lookup(ip6("2001:db8:2:5::9"))[1] == NH[0]  # type: ignore[index]
    # Same low 10 bits of the /32 (same shard), different /32: independent buckets.
    other = "2001:1db8"  # 0x0db8 and 0x1db8 share their low 10 bits
    fib.update(add=[route(f"{other}:7::/48", NH[1]), route("2001:db8:7::/48", NH[2])])
    assert fib.remove(net("2001:db8:7::/48"))
    assert fib.lookup(ip6(f"{other}:7::1"))[1] == NH[1]  # type: ignore[index]
    assert fib.lookup(ip6("2001:db8:7::1"))[1] == NH[0]  # type: ignore[index]
