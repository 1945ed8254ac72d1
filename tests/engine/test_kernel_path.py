"""The TC eBPF fast path against the Python brancher: same frames byte for byte, or a punt.

Pure checks (no root): the C program's offsets come from engine/wire/layout.py, its counter
enum is kernel_path.COUNTERS, the map encodings.  Root checks: the verifier accepts the program
on this kernel, and a differential corpus (explicit rules, 126 destinations, ANONYMOUS,
DONT_X2U, invalid destinations, link states, the fuzz mutations, hypothesis packets and tables)
goes through the program on real veths (tests/engine/kernel_harness.py) and through the brancher.
"""

from __future__ import annotations

import ipaddress
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.dataplane import kernel_path as kpm
from engine.dataplane.kernel import build as kbuild
from engine.model import LinkMap, NextHop, Route
from engine.wire import layout
from engine.wire.codec import build_xcast
from engine.wire.xou import build_xou
from tests.engine.helpers import a, route
from tests.engine.kernel_harness import Harness, harness

SENDER = a("2001:db8:ff::1")


# ------------------------------------------------------------------------------ pure
def test_header_is_generated_from_layout() -> None:
    h = kbuild.layout_header()
    for name in ("ETH_HLEN", "OUTER_HLIM_OFF", "OUTER_SRC_OFF", "OUTER_DST_OFF", "INNER_OFF",
                 "INNER_DST_OFF", "RH_N_OFF", "RH_FLAGS_OFF", "BITMAP_OFF", "DEST_OFF", "MAX_DESTS",
                 "UDP_CSUM_OFF", "FLAG_ANONYMOUS", "FLAG_DONT_X2U", "XCAST_TC"):
        assert f"#define XC_{name} {getattr(layout, name)}\n" in h
    assert "XC_ALL_XCAST_NODES_LE0 0x0000000000000eff" in h.replace("0x00000000000e0ff", "")
    # the C source uses no bare offsets for the packet: every XC_* it names exists in the header
    src = kbuild.SOURCE.read_text()
    used = set(re.findall(r"\bXC_([A-Z0-9_]+)", src))
    local = set(re.findall(r"#define XC_([A-Z0-9_]+)", src))
    assert used - local <= set(re.findall(r"#define XC_([A-Z0-9_]+)", h))


def test_counter_enum_matches() -> None:
    names = kpm.c_enum_counters(kbuild.SOURCE.read_text())
    assert len(names) == len(kpm.COUNTERS)
    assert names[0] == "C_RECEIVED" and names[7] == "C_DROP_NO_ROUTE"
    assert kpm.COUNTERS[7] == "drop.no_route"
    assert set(kpm.PUNT_REASONS) == {c[5:] for c in kpm.COUNTERS if c.startswith("punt.")}
    # every punt reason has its row in the workers' counter file (stats, /stats, /metrics)
    from engine.dataplane.counters import BASE_COUNTERS

    assert {f"kernel_punt_{r}" for r in kpm.PUNT_REASONS} <= set(BASE_COUNTERS)


def test_route_and_link_values() -> None:
    reg = kpm.Registry()
    v = kpm.route_value(route("2001:db8:1::/48", "r0", "fe80::1"), reg)
    assert reg.ifnames == {"r0": 1} and v == kpm._ROUTE.pack(1, 1, 0)
    v = kpm.route_value(route("2001:db8:2::/64", "r0"), reg)
    assert v == kpm._ROUTE.pack(2, 1, kpm.F_CONNECTED)
    hops = (NextHop("r0", a("fe80::1")), NextHop("r1"))
    ecmp = Route(ipaddress.IPv6Network("2001:db8:9::/48"), hops)
    assert kpm.route_value(ecmp, reg) == kpm._ROUTE.pack(1, 0, kpm.F_ECMP)
    # the same set again: the same id; another order is another set (the order is the index)
    other = replace(ecmp, prefix=ipaddress.IPv6Network("2001:db8:8::/48"))
    assert kpm.route_value(other, reg)[:4] == b"\1\0\0\0"
    assert kpm.route_value(replace(ecmp, nexthops=hops[::-1]), reg)[:4] == b"\2\0\0\0"
    val = kpm.ecmp_value(hops, reg, LinkMap([]))        # no engine links: nothing usable
    assert len(val) == 32 + 12 * kpm.ECMP_MAX
    assert val[:32] == kpm._ECMP_HEAD.pack(2, 0, 0, b"")
    assert val[32:44] == kpm._MEMBER.pack(1, 1, 0)                # r0's gateway: hop 1
    assert val[44:56] == kpm._MEMBER.pack(3, 2, kpm.F_CONNECTED)  # r1 connected: hop 3
    many = tuple(NextHop(f"r{i}", a(f"fe80::{i + 1:x}")) for i in range(kpm.ECMP_MAX + 1))
    assert kpm.route_value(replace(ecmp, nexthops=many), reg) == kpm._ROUTE.pack(0, 0, kpm.F_ECMP_PUNT)
    assert kpm.lpm_key(ipaddress.IPv6Network("2001:db8::/32")) == b"\x20\0\0\0" + a("2001:db8::")
    assert kpm.link_value("nope", LinkMap([]))[:4] == kpm._U32.pack(kpm.LINK_NONE)


_SETS = [tuple(NextHop(f"r{(k + j) % 5}", a(f"fe80::{k + 1:x}:{j + 1:x}")) for j in range(2 + k % 3))
         for k in range(6)]
_PREFIXES = [ipaddress.IPv6Network(f"2001:db8:{i:x}::/48") for i in range(8)]


class _FakeMap:
    """What the control plane's writes leave in the ecmp map (a dict), and the other maps' calls."""

    def __init__(self) -> None:
        self.ecmp: dict[int, bytes] = {}

    def update(self, m: str, key: bytes, value: bytes) -> None:
        if m == "ecmp":
            self.ecmp[kpm._U32.unpack(key)[0]] = value

    def delete(self, m: str, key: bytes) -> None:
        if m == "ecmp":
            self.ecmp.pop(kpm._U32.unpack(key)[0], None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, len(_PREFIXES) - 1),
                                   st.none() | st.integers(0, len(_SETS) - 1) | st.just(-1)),
                         max_size=6), max_size=12),
       st.integers(2, 7))
def test_ecmp_set_ids_are_freed_with_their_last_route(diffs: list[list[tuple[int, int | None]]],
                                                       capacity: int) -> None:
    """Diffs of adds (a prefix to an ECMP set, or -1: to one next hop) and removes (None) through
    the control plane, against a model: the ecmp map holds exactly the sets the table's routes use,
    each under one id in 1..ECMP_SETS, an id freed by a diff is not reused within it, and a set
    that finds no free id is punted (never shares an id)."""
    import unittest.mock

    fake = _FakeMap()
    kp = kpm.KernelPath(fake)  # type: ignore[arg-type]
    table: dict[ipaddress.IPv6Network, Route] = {}
    with unittest.mock.patch.object(kpm, "ECMP_SETS", capacity):
        for diff in diffs:
            before = dict(kp.reg.ecmp)
            adds: dict[ipaddress.IPv6Network, Route] = {}
            removes = []
            for i, k in diff:
                p = _PREFIXES[i]
                if k is None:
                    if p in table and p not in adds:
                        removes.append(p)
                        del table[p]
                else:
                    hops = _SETS[k] if k >= 0 else (NextHop("r0", a("fe80::1")),)
                    adds[p] = table[p] = Route(p, hops)
                    if p in removes:
                        removes.remove(p)
            kp.apply(list(adds.values()), removes)
            in_use = {r.nexthops for r in table.values() if len(r.nexthops) > 1}
            ids = kp.reg.ecmp
            assert set(ids) <= in_use and len(set(ids.values())) == len(ids)
            assert all(1 <= g <= capacity for g in ids.values())
            assert set(fake.ecmp) == set(ids.values())           # written, and deleted when unused
            # punted for want of an id only while none was free (ids freed by this diff are not)
            released = set(before.values()) - set(ids.values())
            punted = in_use - set(ids)
            assert not punted or len(ids) + len(released) >= capacity, (ids, punted)
            assert set(kp.reg.ecmp_waiting) == {p for p, r in table.items() if r.nexthops in punted}
            # an id another set held before this diff is not handed to a new set in it
            assert not released & {g for h, g in ids.items() if h not in before}
            assert sum(kp.reg.ecmp_users.values()) == sum(
                1 for r in table.values() if r.nexthops in ids)


def test_ecmp_set_id_reused_after_its_diff() -> None:
    reg = kpm.Registry()
    one, two = _SETS[0], _SETS[1]
    assert kpm.route_value(Route(_PREFIXES[0], one), reg)[:4] == b"\1\0\0\0"
    assert kpm.route_value(Route(_PREFIXES[1], one), reg)[:4] == b"\1\0\0\0"    # shared
    reg.bind(_PREFIXES[0], None)
    assert reg.ecmp == {one: 1} and reg.ecmp_users == {one: 1}
    kpm.route_value(Route(_PREFIXES[1], two), reg)            # the last user of `one` moves
    assert reg.ecmp == {one: 1, two: 2} and reg.ecmp_unused == {one}
    # taken again in the same diff: it keeps its id (its entry stays as it is)
    assert kpm.route_value(Route(_PREFIXES[2], one), reg)[:4] == b"\1\0\0\0"
    assert reg.settle() == []
    reg.bind(_PREFIXES[2], None)
    kpm.route_value(Route(_PREFIXES[3], _SETS[3]), reg)       # the same diff: not id 1 again
    assert reg.ecmp[_SETS[3]] == 3
    assert reg.settle() == [1] and reg.settle() == [] and reg.ecmp == {two: 2, _SETS[3]: 3}
    kpm.route_value(Route(_PREFIXES[3], _SETS[4]), reg)
    assert reg.ecmp[_SETS[4]] == 1                            # the next diff: the lowest freed id


# ------------------------------------------------------------------------------ kernel
@pytest.fixture(scope="module")
def kp() -> Iterator[kpm.KernelPath]:
    k = kpm.KernelPath.load()
    yield k
    k.prog.close()


@pytest.fixture(scope="module")
def h(kp: kpm.KernelPath) -> Iterator[Harness]:
    with harness(kp, nlinks=4) as hh:
        yield hh


TABLE = [
    route("2001:db8:1::/48", "r0", "fe80::1"),
    route("2001:db8:2::/48", "r1", "fe80::2"),
    route("2001:db8:20::/44", "r1", "fe80::2"),          # same next hop as :2::/48
    route("2001:db8:3::/64", "r2"),                      # connected
    route("2001:db8:4::/48", "r3", "fe80::4"),
    route("2001:db8:5::/48", "r4", "fe80::5"),           # r4: no engine link -> no_route
    route("2001:db8:6::/48", "r0", "fe80::6"),           # r0, another gateway: another copy
]
POOL = ([f"2001:db8:1::{i:x}" for i in range(1, 9)] + [f"2001:db8:2::{i:x}" for i in range(1, 5)]
        + [f"2001:db8:2a::{i:x}" for i in range(1, 3)] + [f"2001:db8:3::{i:x}" for i in range(1, 9)]
        + [f"2001:db8:4::{i:x}" for i in range(1, 3)] + ["2001:db8:5::1", "2001:db8:6::1",
                                                         "2001:db8:77::1"])


def agree(h: Harness, pkt: bytes, *, punt: bool | None = False) -> str:
    """Both paths on one packet; ``punt``: True must punt, False must not, None either."""
    p = h.python(pkt)
    k = h.kernel(pkt, sum(p.frames.values()))
    if k.punted:
        if not p.frames and set(p.drops) == {"no_route"} and punt is not True:
            return "none_routable"   # the worker answers with Destination Unreachable (ICMP)
        assert punt is not False, f"kernel punted a packet it should handle: {pkt.hex()}"
        return "punt"
    assert punt is not True, "kernel handled a packet it should punt"
    assert not p.punted
    assert k.frames == p.frames, (sorted(p.frames - k.frames), sorted(k.frames - p.frames))
    assert k.drops == p.drops
    return "same"


@pytest.mark.root
def test_verifier_accepts_on_this_kernel(kp: kpm.KernelPath) -> None:
    assert kp.prog.prog_fd > 0
    assert set(kp.prog.memory()) >= {"routes_a", "links", "counters"}


@pytest.mark.root
def test_rules(h: Harness) -> None:
    h.set_table(TABLE)
    d = [a(x) for x in ("2001:db8:1::1", "2001:db8:1::2", "2001:db8:2::1", "2001:db8:2a::1",
                        "2001:db8:3::1", "2001:db8:3::2", "2001:db8:5::1", "2001:db8:77::1",
                        "2001:db8:6::1", "2001:db8:4::1")]
    for flags in (0, layout.FLAG_ANONYMOUS, layout.FLAG_DONT_X2U,
                  layout.FLAG_ANONYMOUS | layout.FLAG_DONT_X2U):
        for bitmap in (None, 0b1, 0b1010101010, 0b1100000000, 0b0011000000):
            pkt = build_xcast(SENDER, d, b"payload" * 5, sport=7, dport=9, flags=flags, bitmap=bitmap)
            assert agree(h, pkt) in ("same", "none_routable")
    # invalid destinations drop the whole packet; a dead invalid one does not
    for bad in ("ff02::1", "fe80::1", "::1", "::", "fec0::1", "::ffff:10.0.0.1"):
        pkt = build_xcast(SENDER, [d[0], a(bad), d[2]], b"x")
        assert agree(h, pkt) == "same"
        assert agree(h, build_xcast(SENDER, [d[0], a(bad), d[2]], b"x", bitmap=0b101)) == "same"
    # no live destination routable: the Python worker's (ICMP destination unreachable)
    unroutable = [a("2001:db8:5::1"), a("2001:db8:77::1")]
    assert agree(h, build_xcast(SENDER, unroutable, b"x")) == "none_routable"
    # hop limit 2 leaves with 1; hop limit 1 and 0 are the Python worker's (ICMP errors)
    assert agree(h, build_xcast(SENDER, d[:3], b"x", hop_limit=2)) == "same"
    for hl in (0, 1):
        assert agree(h, build_xcast(SENDER, d[:3], b"x", hop_limit=hl), punt=True) == "punt"


@pytest.mark.root
def test_126_destinations(h: Harness) -> None:
    h.set_table(TABLE)
    gw = [a(f"2001:db8:1:{i:x}::1") for i in range(126)]          # one next hop
    mixed = [a(f"2001:db8:{(1, 2, 4, 6)[i % 4]:x}::{i + 1:x}") for i in range(126)]
    conn = [a(f"2001:db8:3::{i + 1:x}") for i in range(126)]       # 126 next hops > 32: punt
    for flags in (0, layout.FLAG_ANONYMOUS, layout.FLAG_DONT_X2U):
        assert agree(h, build_xcast(SENDER, gw, b"p" * 64, flags=flags)) == "same"
        assert agree(h, build_xcast(SENDER, mixed, b"p" * 64, flags=flags)) == "same"
        assert agree(h, build_xcast(SENDER, conn, b"p", flags=flags), punt=True) == "punt"
    assert agree(h, build_xcast(SENDER, conn, b"p", bitmap=(1 << 32) - 1 << 90)) == "same"
    assert agree(h, build_xcast(SENDER, conn, b"p", bitmap=(1 << 33) - 1 << 90), punt=True) == "punt"


@pytest.mark.root
def test_punts(h: Harness) -> None:
    ecmp = Route(ipaddress.IPv6Network("2001:db8:9::/48"),
                 (NextHop("r0", a("fe80::1")), NextHop("r1", a("fe80::2"))))
    many = Route(ipaddress.IPv6Network("2001:db8:a::/48"),
                 tuple(NextHop(f"r{i % 4}", a(f"fe80::{i + 1:x}")) for i in range(kpm.ECMP_MAX + 1)))
    h.set_table([*TABLE, ecmp, many])
    d = [a("2001:db8:1::1"), a("2001:db8:2::1")]
    assert agree(h, build_xcast(SENDER, [*d, a("2001:db8:9::1")], b"x")) == "same"        # ECMP
    assert agree(h, build_xcast(SENDER, [*d, a("2001:db8:a::1")], b"x"), punt=True) == "punt"   # 17 hops
    assert agree(h, build_xou(SENDER, d, b"xou", sport=1, dport=2), punt=True) == "punt"
    assert agree(h, build_xcast(SENDER, d, b"x", ports=[1, 2]), punt=True) == "punt"
    assert agree(h, build_xcast(SENDER, d, b"x", bitmap=0, outer_dst=d[0]), punt=True) == "punt"
    zero = bytearray(build_xcast(SENDER, d, b"x"))
    c = layout.DEST_OFF + 16 * len(d) + layout.UDP_CSUM_OFF
    zero[c : c + 2] = b"\0\0"       # UDP checksum 0: X2U would need a full checksum: punted
    assert agree(h, bytes(zero), punt=True) == "punt"
    assert agree(h, bytes(zero[:84]) + bytes([zero[84], layout.FLAG_DONT_X2U]) + bytes(zero[86:])) == "same"
    # link down / router MAC not learned: punted (Python counts egress_no_link / egress_no_mac)
    down = [replace(lk, oper_up=False) if lk.router_ifname == "r1" else lk for lk in h.engine_links]
    h.set_table(TABLE, down)
    assert agree(h, build_xcast(SENDER, d, b"x"), punt=True) == "punt"
    assert agree(h, build_xcast(SENDER, d[:1] * 2, b"x")) == "same"   # r0 only: still handled
    nomac = [replace(lk, router_mac=None) if lk.router_ifname == "r0" else lk for lk in h.engine_links]
    h.set_table(TABLE, nomac)
    assert agree(h, build_xcast(SENDER, d, b"x"), punt=True) == "punt"
    small = [replace(lk, mtu=200) for lk in h.engine_links]
    h.set_table(TABLE, small)
    assert agree(h, build_xcast(SENDER, d * 3, b"y" * 200, flags=layout.FLAG_DONT_X2U), punt=True) == "punt"
    h.set_table(TABLE)
    assert h.kp.counters()["punt.ecmp"] >= 1


ECMP_TABLE = [
    *TABLE,
    # two gateways on two links; the same gateway as :1::/48 is one of them (shared group)
    Route(ipaddress.IPv6Network("2001:db8:e1::/48"),
          (NextHop("r0", a("fe80::1")), NextHop("r1", a("fe80::e1")))),
    # four members, one connected, one on r4 (no engine link: Brancher._usable_member's turn)
    Route(ipaddress.IPv6Network("2001:db8:e2::/48"),
          (NextHop("r2", a("fe80::e2")), NextHop("r4", a("fe80::e4")), NextHop("r3"),
           NextHop("r1", a("fe80::2")))),
    # no member has an engine link: no_route
    Route(ipaddress.IPv6Network("2001:db8:e3::/48"),
          (NextHop("r4", a("fe80::4")), NextHop("r5", a("fe80::5")))),
    # sixteen members (the bound)
    Route(ipaddress.IPv6Network("2001:db8:e4::/48"),
          tuple(NextHop(f"r{i % 6}", a(f"fe80::4:{i:x}")) for i in range(kpm.ECMP_MAX))),
]
ECMP_POOL = [a(f"2001:db8:e{k}:{i:x}::{j:x}") for k in (1, 2, 3, 4) for i in range(6) for j in (1, 7)]


@pytest.mark.root
def test_ecmp_member_choice(h: Harness) -> None:
    """The program picks Fib.lookup's member (CRC-32 of the destination), and among the members
    with an engine link the brancher's fallback; groups by the chosen next hop."""
    h.set_table(ECMP_TABLE)
    for i in range(0, len(ECMP_POOL), 4):       # a handful of destinations per packet
        for flags in (0, layout.FLAG_DONT_X2U, layout.FLAG_ANONYMOUS):
            pkt = build_xcast(SENDER, [*ECMP_POOL[i:i + 4], a("2001:db8:1::1")], b"ecmp", flags=flags)
            assert agree(h, pkt) == "same"
    # every destination alone (X2U: its own copy), so each member choice shows in its own frame
    for d in ECMP_POOL:
        assert agree(h, build_xcast(SENDER, [d], b"one")) in ("same", "none_routable")
    # 126 destinations over the ECMP routes: more than 32 groups punt, fewer are handled
    dests = [a(f"2001:db8:e1:{i:x}::1") for i in range(126)]
    assert agree(h, build_xcast(SENDER, dests, b"p", flags=layout.FLAG_DONT_X2U)) == "same"
    # r2's engine link goes away (link map change): its members are no longer usable, the
    # fallback moves their destinations to the others (the ecmp entries are rewritten)
    without_r2 = [lk for lk in h.engine_links if lk.router_ifname != "r2"]
    h.set_table(ECMP_TABLE, without_r2)
    for d in ECMP_POOL:
        assert agree(h, build_xcast(SENDER, [d], b"moved")) in ("same", "none_routable")
    # the chosen member's link goes down: punted (the worker counts egress_no_link)
    down = [replace(lk, oper_up=False) if lk.router_ifname == "r1" else lk for lk in h.engine_links]
    h.set_table(ECMP_TABLE, down)
    for d in ECMP_POOL[:12]:
        assert agree(h, build_xcast(SENDER, [d, a("2001:db8:1::1")], b"x"), punt=None) in ("same", "punt")
    h.set_table(TABLE)


@pytest.mark.root
def test_ecmp_sets_leave_the_map_with_their_last_route(h: Harness) -> None:
    """The real map: an ECMP set no route uses any more is deleted, its id handed out again from
    the next diff on, and packets to a route that took it are branched as the brancher does."""
    size = kpm._ECMP_HEAD.size + kpm._MEMBER.size * kpm.ECMP_MAX
    h.set_table(ECMP_TABLE)
    ids = dict(h.kp.reg.ecmp)
    assert len(ids) == 4 and all(h.kp.prog.lookup("ecmp", kpm._U32.pack(g), size) for g in ids.values())
    h.set_table(TABLE)                                        # no ECMP route left
    assert h.kp.reg.ecmp == {} and sorted(h.kp.reg.ecmp_free) == sorted(ids.values())
    assert all(h.kp.prog.lookup("ecmp", kpm._U32.pack(g), size) is None for g in ids.values())
    # a new set (another member order) takes the lowest freed id, and forwards
    hops = next(r for r in ECMP_TABLE if str(r.prefix) == "2001:db8:e2::/48").nexthops[::-1]
    other = [*TABLE, Route(ipaddress.IPv6Network("2001:db8:e2::/48"), hops)]
    h.set_table(other)
    assert h.kp.reg.ecmp == {hops: min(ids.values())}
    assert h.kp.prog.lookup("ecmp", kpm._U32.pack(min(ids.values())), size)
    for d in ECMP_POOL:
        assert agree(h, build_xcast(SENDER, [d], b"reused")) in ("same", "none_routable")
    h.set_table(TABLE)


def redirect_failures_are_counted(h: Harness) -> bool:
    """A copy that cannot leave (its link went down before the control plane saw it) is counted in
    egress_errors and not in x2u_out/copies_out/bytes_out: the clones (bpf_clone_redirect's
    result) and the packet's last copy, which leaves by bpf_redirect after the program returned
    (the redirect watch, fexit on skb_do_redirect).  Without the watch (the kernel refused it:
    ``watch_problem``) the last copy's failure is not counted and the engine's log says so.
    Returns whether the watch ran."""
    import subprocess

    h.set_table(TABLE)
    watched = h.kp.prog.watch_problem is None
    one = build_xcast(SENDER, [a("2001:db8:1::1")], b"last")                   # X2U on r0
    two = build_xcast(SENDER, [a("2001:db8:1::1"), a("2001:db8:2::1")], b"2")  # r0 and r1

    def run(pkt: bytes) -> dict[str, int]:
        before = h.kp.counters()
        out = h.kernel(pkt, 0, wait=0.1)
        assert not out.frames and not out.punted
        after = h.kp.counters()
        return {k: after[k] - before[k] for k in ("egress_errors", "copies_out", "x2u_out", "bytes_out")}

    assert agree(h, one) == "same"              # up: one copy leaves, nothing counted as an error
    for dev in ("ke0", "ke1"):
        subprocess.run(["ip", "-n", h.ns, "link", "set", dev, "down"], check=True)
    try:
        last = run(one)
        both = run(two)
    finally:
        for dev in ("ke0", "ke1"):
            subprocess.run(["ip", "-n", h.ns, "link", "set", dev, "up"], check=True)
    if watched:
        assert last == {"egress_errors": 1, "copies_out": 0, "x2u_out": 0, "bytes_out": 0}, last
        assert both == {"egress_errors": 2, "copies_out": 0, "x2u_out": 0, "bytes_out": 0}, both
    else:
        assert last["egress_errors"] == 0 and last["x2u_out"] == 1, last
        assert both["egress_errors"] == 1, both            # the clone's failure only
    time.sleep(0.05)
    assert agree(h, one) == "same"
    return watched


@pytest.mark.root
def test_failed_redirects_are_egress_errors(h: Harness, kp: kpm.KernelPath) -> None:
    watched = redirect_failures_are_counted(h)
    print(f"redirect watch: {'on' if watched else kp.prog.watch_problem}")


@pytest.mark.root
def test_fuzz_mutations(h: Harness) -> None:
    """Mutated packets: the program either gives the brancher's bytes or punts."""
    h.set_table(TABLE)
    rng = random.Random(17)
    seeds = [build_xcast(SENDER, [a(x) for x in POOL[:12]], b"seed" * 8, sport=1, dport=2),
             build_xcast(SENDER, [a(x) for x in POOL[::3]], b"s", flags=layout.FLAG_ANONYMOUS)]
    seen = {"same": 0, "punt": 0}
    for k in range(120):
        b = bytearray(seeds[k % 2])
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.2:
            del b[rng.randrange(40, len(b)):]
        b[0] = 0x65
        b[1] = (b[1] & 0x0F) | 0xC0          # keep the XCAST traffic class: the program looks
        seen[agree(h, bytes(b), punt=None)] += 1
    assert seen["same"] and seen["punt"]


@pytest.mark.root
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=40),
       live=st.integers(0, (1 << 40) - 1),
       flags=st.sampled_from([0, 0x80, 0x40, 0xC0, 0x01]),
       hl=st.integers(2, 255), payload=st.binary(max_size=300),
       connected_r0=st.booleans(), ecmp=st.lists(st.integers(0, len(ECMP_POOL) - 1), max_size=6))
def test_hypothesis_packets_and_tables(h: Harness, idx: list[int], live: int, flags: int, hl: int,
                                       payload: bytes, connected_r0: bool, ecmp: list[int]) -> None:
    table = list(ECMP_TABLE)
    if connected_r0:      # the table varies too: :1::/48 connected on r0
        table[0] = route("2001:db8:1::/48", "r0")
    if h.fib.get(table[0].prefix) != table[0] or h.fib.get(table[-1].prefix) is None:
        h.set_table(table)
    d = [a(POOL[i]) for i in idx] + [ECMP_POOL[i] for i in ecmp]
    bitmap = live & ((1 << len(d)) - 1)
    if not bitmap:
        bitmap = 1
    pkt = build_xcast(SENDER, d, payload, sport=1000, dport=2000, flags=flags, hop_limit=hl,
                      bitmap=bitmap)
    agree(h, pkt, punt=None if connected_r0 else False)


@pytest.mark.root
def test_route_change_is_seen(h: Harness) -> None:
    """A diff applied while traffic flows: the next packet uses the new table (both tries)."""
    h.set_table(TABLE)
    d = [a("2001:db8:1::1"), a("2001:db8:2::1")]
    assert agree(h, build_xcast(SENDER, d, b"x")) == "same"
    new = [r for r in TABLE if r.prefix != ipaddress.IPv6Network("2001:db8:2::/48")]
    h.set_table(new)
    assert agree(h, build_xcast(SENDER, d, b"x")) == "same"      # :2::1 is no_route now
    h.set_table(TABLE)
    assert agree(h, build_xcast(SENDER, d, b"x")) == "same"



def test_dataplane_config() -> None:
    from pathlib import Path

    from engine.dataplane.config import DataplaneConfig, parse_dataplane

    assert parse_dataplane({}) == (DataplaneConfig(), [])
    assert DataplaneConfig().mode == "auto"
    cfg, problems = parse_dataplane({"mode": "bpf", "pin_dir": "/sys/fs/bpf/x"})
    assert cfg == DataplaneConfig("bpf", Path("/sys/fs/bpf/x")) and not problems
    _, problems = parse_dataplane({"mode": "ebpf"})
    assert len(problems) == 1 and problems[0].startswith("dataplane.mode:") and "bpf" in problems[0]
    _, problems = parse_dataplane({"pin_dir": "/tmp/x"})
    assert problems and "dataplane.pin_dir" in problems[0] and "/sys/fs/bpf/" in problems[0]
    _, problems = parse_dataplane({"mod": "bpf"})
    assert problems and "mode" in problems[0]


def test_auto_mode_falls_back_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> kpm.KernelPath:
        raise kpm.KernelPathError("clang is not installed (scripts/bootstrap.sh installs it)")

    monkeypatch.setattr(kpm.KernelPath, "load", refuse)
    kp, why = kpm.start("auto", [], LinkMap([]), ["eth1"], None)
    assert kp is None and "Python workers" in why and "clang is not installed" in why
    with pytest.raises(kpm.KernelPathError, match='mode = "bpf"'):
        kpm.start("bpf", [], LinkMap([]), ["eth1"], None)
    assert kpm.start("python", [], LinkMap([]), ["eth1"], None)[0] is None


@pytest.mark.root
def test_attach_replace_pin_detach() -> None:
    """One filter per link whatever restarts do (an upgrade swaps the program in place), pins
    under pin_dir while attached, nothing left after stop."""
    import os
    import subprocess
    from pathlib import Path

    from lab import netns

    pins = Path(f"/sys/fs/bpf/xcast6-test-{os.getpid()}")
    with netns.temporary("bpf-kp") as (ns,):
        netns.veth(ns, "kin", ns, "kinp")

        def filters() -> list[str]:
            out = subprocess.run(["tc", "-n", ns, "filter", "show", "dev", "kin", "ingress"],
                                 capture_output=True, text=True, check=True).stdout
            return [ln for ln in out.splitlines() if " handle " in ln]

        first = kpm.KernelPath.load(pin_dir=pins)
        second = kpm.KernelPath.load(pin_dir=pins)
        try:
            with netns.in_netns(ns):
                first.attach(["kin"])
                assert len(filters()) == 1 and "xcast6_ingress" in filters()[0]
                assert {p.name for p in pins.iterdir()} >= {"prog", "routes_a", "links", "counters"}
                # the old daemon died without detaching (SIGKILL): its filter stays and forwards;
                # the new one replaces the program in place (same handle) and re-pins
                first.prog.close()
                assert len(filters()) == 1
                second.attach(["kin"])
                assert len(filters()) == 1
                tag = subprocess.run(["bpftool", "prog", "show", "pinned", str(pins / "prog")],
                                     capture_output=True, text=True, check=True).stdout.split()[0]
                assert f"id {tag.rstrip(':')}" in filters()[0]
                second.detach()
                assert filters() == []
                assert not pins.exists()
        finally:
            second.prog.close()


@pytest.mark.root
def test_libbpf_messages_go_through_logging() -> None:
    """libbpf's own messages reach the log (under systemd: journal lines with a priority), never
    bare stderr. Loading twice with the redirect watch asked for gives libbpf something to say
    where the kernel refuses the watch; where it takes it, stderr must still be empty."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format='LOG %(name)s %(message)s')\n"
        "from engine.dataplane import kernel_path as kpm\n"
        "k = kpm.KernelPath.load(); k.prog.close()\n"
        "print('watch_problem', k.prog.watch_problem)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    assert "libbpf:" not in res.stderr and not res.stderr.strip(), res.stderr
    if "watch_problem None" not in res.stdout:       # refused: libbpf explained why, through logging
        assert "LOG xcast6.libbpf" in res.stdout, res.stdout
