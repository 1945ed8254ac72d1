"""Worker ICMPv6 errors through real veths: Time Exceeded, Packet Too Big, Destination
Unreachable leave on the arrival link to the router, from the engine's address there; the rate
limit holds back the rest and counts them; routers' errors about the engine's copies are relayed
to the original sender (with and without the TC program)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import WorkerPool
from engine.forwarding.fib import Fib
from engine.model import LinkMap, NextHop, Route
from engine.wire.icmp6 import build_error, parse_icmp6, parse_quote
from lab import netns
from tests.engine.test_worker import (
    ROUTER_MACS,
    ROUTES,
    SRC,
    _capture,
    _drain,
    _links,
    ip6,
)
from tests.engine.test_worker import pair as pair  # the fixture
from tests.lab.scapy_xcast import ethernet, xcast_packet

pytestmark = [pytest.mark.root, pytest.mark.netns]

D1, D2, NOROUTE = "2001:db8:1::10", "2001:db8:2::10", "2001:db8:99::1"


def _errors(frames: list[bytes], mac: bytes) -> list[bytes]:
    return [f[14:] for f in frames if f[6:12] == mac and f[14 + 6] == 58 and f[14 + 40] < 128]


@pytest.fixture
def pool(pair: tuple[str, str], tmp_path: Path) -> Iterator[tuple[WorkerPool, str, str]]:
    r, e = pair
    links = _links(e).links()
    links[1] = dataclasses.replace(links[1], mtu=1280)      # r-if2: a small-MTU link
    p = WorkerPool(Fib(ROUTES), LinkMap(links), ["to-r-if1", "to-r-if2"], workers=1,
                   counters_path=tmp_path / "stats.shm", icmp_rate=1.0, icmp_burst=3)
    with netns.in_netns(e):
        p.start()
    try:
        yield p, r, e
    finally:
        p.stop()


def _send(r: str, e: str, pkts: list[bytes]) -> dict[str, list[bytes]]:
    socks = _capture(r)
    with netns.in_netns(r):
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.bind(("r-if1", 0))
    try:
        for pkt in pkts:
            tx.send(ethernet(netns.mac(e, "to-r-if1"), ROUTER_MACS["r-if1"], pkt))
        return _drain(socks)
    finally:
        tx.close()
        for s in socks.values():
            s.close()


def test_errors_leave_on_arrival_link_and_are_rate_limited(pool: tuple[WorkerPool, str, str],
                                                           tmp_path: Path) -> None:
    _p, r, e = pool
    mac1 = netns.mac(e, "to-r-if1")
    expiring = xcast_packet(SRC, [D1, D2], b"ttl", sport=40000, hlim=1)
    too_big = xcast_packet(SRC, [D1, D2], b"B" * 1300, sport=40001, hlim=9)
    unroutable = xcast_packet(SRC, [NOROUTE], b"nr", sport=40002, hlim=9)
    got = _send(r, e, [expiring, too_big, unroutable])
    errs = [parse_icmp6(f) for f in _errors(got["r-if1"], mac1)]
    assert [(m.icmp_type, m.code, m.param) for m in errs if m] == [(3, 0, 0), (2, 0, 1280), (1, 0, 0)]
    for m in errs:
        assert m is not None and m.checksum_ok
        assert m.src == ip6("2001:db8:e1::2") and m.dst == ip6(SRC)      # arrival link's address
    assert errs[0] is not None and errs[0].body == expiring                # quoted as received
    q = parse_quote(errs[1].body if errs[1] else b"")
    assert q is not None and q.kind == "xcast" and q.live == (ip6(D1), ip6(D2))
    assert _errors(got["r-if2"], netns.mac(e, "to-r-if2")) == []
    # the copy that fits (D1's X2U copy on r-if1) still left
    assert any(f[14 + 6] == 17 and f[6:12] == mac1 for f in got["r-if1"])

    # never answered: a source that is no unicast address (counted, not sent)
    got = _send(r, e, [xcast_packet("ff05::1", [D1], b"m", sport=40003, hlim=1, outer_src=SRC)])
    assert _errors(got["r-if1"], mac1) == []
    # burst 3 spent: a flood of expiring packets is held back and counted
    got = _send(r, e, [xcast_packet(SRC, [D1], b"f", sport=41000 + i, hlim=1) for i in range(20)])
    n_err = len(_errors(got["r-if1"], mac1))
    assert n_err <= 1                 # at most the one token refilled at 1/s meanwhile
    t = CounterFile.open(tmp_path / "stats.shm").snapshot().totals
    assert t["icmp_sent.time_exceeded"] == 1 + n_err
    assert t["icmp_sent.packet_too_big"] == 1 and t["icmp_sent.dest_unreachable"] == 1
    assert t["icmp_suppressed.time_exceeded"] == 20 - n_err
    assert t["egress_mtu"] == 1 and t["icmp_not_eligible"] == 1


def test_ingress_without_engine_link_answers_via_the_route_to_the_sender(
        pair: tuple[str, str], tmp_path: Path) -> None:
    """Ingress on an interface no engine link names (like the trunk in vlan mode): the error
    leaves where the route to the sender points, from the engine's address on that link."""
    r, e = pair
    links = _links(e).links()
    links[0] = dataclasses.replace(links[0], engine_ifname="xc-trunk")   # the ingress is no link
    routes = [*ROUTES, Route(ipaddress.IPv6Network("2001:db8:a::/48"), (NextHop("r-if2"),))]
    p = WorkerPool(Fib(routes), LinkMap(links), ["to-r-if1"], workers=1, counters_path=tmp_path / "s.shm")
    with netns.in_netns(e):
        p.start()
    try:
        got = _send(r, e, [xcast_packet(SRC, [D1], b"ttl", sport=40000, hlim=1)])
    finally:
        p.stop()
    assert _errors(got["r-if1"], netns.mac(e, "to-r-if1")) == []
    errs = [parse_icmp6(f) for f in _errors(got["r-if2"], netns.mac(e, "to-r-if2"))]
    assert len(errs) == 1 and errs[0] is not None and errs[0].src == ip6("2001:db8:e2::2")


# ---------------------------------------------------------------------------- relaying routers' errors
D2B = "2001:db8:2::11"
RB = "2001:db8:ab::2"       # a router beyond the engine's r-if2 link, answering the engine's copy


def _router_error(icmp_type: int, param: int, copy: bytes, engine: str = "2001:db8:e2::2") -> bytes:
    """What a router sends the engine about one of its copies (to the copy's outer source)."""
    return build_error(icmp_type, 0, param, ip6(RB), ip6(engine), copy)


@pytest.mark.parametrize("dataplane", ["python", "bpf"])
def test_routers_errors_about_our_copies_are_relayed_to_the_sender(
        pair: tuple[str, str], tmp_path: Path, dataplane: str) -> None:
    """Time Exceeded / Packet Too Big from a router about a copy the engine sent on r-if2 (its
    outer source: the engine's r-if2 address) arrive on r-if2; the engine relays them to the
    original sender out of the link towards it (r-if1), from its address there: Time Exceeded
    quoting the inner packet and naming the router (RFC 5837), Packet Too Big with the router's
    MTU quoting the packet as the sender sent it (its outer source and destination back).  With
    the TC program attached (``bpf``) too: it passes them to the stack and the worker's socket."""
    r, e = pair
    routes = [*ROUTES, Route(ipaddress.IPv6Network("2001:db8:a::/48"), (NextHop("r-if1"),))]
    pins = Path(f"/sys/fs/bpf/xcast6-relay-test-{os.getpid()}")
    p = WorkerPool(Fib(routes), _links(e), ["to-r-if1", "to-r-if2"], workers=1,
                   counters_path=tmp_path / "s.shm", dataplane=dataplane, pin_dir=pins)
    with netns.in_netns(e):
        p.start()
    copy = xcast_packet(SRC, [D2, D2B], b"probe", sport=40000, hlim=1, outer_src="2001:db8:e2::2")
    other = xcast_packet(SRC, [D2], b"x", sport=40001, hlim=1, outer_src="2001:db8:77::2")   # not our copy
    socks = _capture(r)
    try:
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if2", 0))
        mac2 = netns.mac(e, "to-r-if2")
        for err in (_router_error(3, 0, copy), _router_error(2, 1400, copy), _router_error(3, 0, other)):
            tx.send(ethernet(mac2, ROUTER_MACS["r-if2"], err))
        tx.close()
        got = _drain(socks)
        t = CounterFile.open(tmp_path / "s.shm").snapshot().totals
    finally:
        p.stop()
        for s in socks.values():
            s.close()
    assert _errors(got["r-if2"], mac2) == []
    errs = [parse_icmp6(f) for f in _errors(got["r-if1"], netns.mac(e, "to-r-if1"))]
    assert [(m.icmp_type, m.param if m.icmp_type == 2 else 0) for m in errs if m] == [(3, 0), (2, 1400)]
    te, ptb = errs
    assert te is not None and ptb is not None
    for m in (te, ptb):
        assert m.checksum_ok and m.src == ip6("2001:db8:e1::2") and m.dst == ip6(SRC)
    assert te.interface == (0, ip6(RB)) and ptb.interface is None
    q = parse_quote(te.quote)
    assert q is not None and q.inner_only and q.source == ip6(SRC) and q.live == (ip6(D2), ip6(D2B))
    assert te.quote[: len(copy) - 40] == copy[40:]
    assert ptb.quote[8:24] == ip6(SRC) and ptb.quote[24:40] == ip6(D2) and ptb.quote[40:] == copy[40:]
    assert t["icmp_relayed.time_exceeded"] == 1 and t["icmp_relayed.packet_too_big"] == 1
    assert t["icmp_relay_refused"] == 1


def test_relays_share_the_rate_limit(pair: tuple[str, str], tmp_path: Path) -> None:
    """A flood of routers' errors is relayed only as far as the token bucket allows; the rest is
    counted per type as held back."""
    r, e = pair
    routes = [*ROUTES, Route(ipaddress.IPv6Network("2001:db8:a::/48"), (NextHop("r-if1"),))]
    p = WorkerPool(Fib(routes), _links(e), ["to-r-if1", "to-r-if2"], workers=1,
                   counters_path=tmp_path / "s.shm", icmp_rate=1.0, icmp_burst=3)
    with netns.in_netns(e):
        p.start()
    socks = _capture(r)
    try:
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if2", 0))
        mac2 = netns.mac(e, "to-r-if2")
        for i in range(20):
            copy = xcast_packet(SRC, [D2], b"f", sport=41000 + i, hlim=1, outer_src="2001:db8:e2::2")
            tx.send(ethernet(mac2, ROUTER_MACS["r-if2"], _router_error(3, 0, copy)))
        tx.close()
        got = _drain(socks)
        t = CounterFile.open(tmp_path / "s.shm").snapshot().totals
    finally:
        p.stop()
        for s in socks.values():
            s.close()
    n = len(_errors(got["r-if1"], netns.mac(e, "to-r-if1")))
    assert 3 <= n <= 4                   # the burst, and at most one token refilled at 1/s meanwhile
    assert t["icmp_relayed.time_exceeded"] == n and t["icmp_relay_suppressed.time_exceeded"] == 20 - n
