"""Hypothesis properties: build->parse round trip and branching invariants for any packet+table."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from engine.forwarding.branch import Brancher
from engine.forwarding.fib import Fib
from engine.model import NextHop, Route
from engine.wire.codec import FLAG_ANONYMOUS, FLAG_DONT_X2U, XcastPacket, build_xcast, parse
from engine.wire.xou import build_xou, xou_checksum_ok

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# destinations come from 16 /48 "sites"; a random subset of sites is routed, over a few next hops
site = st.integers(0, 15)
host = st.integers(1, 0xFFFF)
dest = st.builds(lambda s, h: ipaddress.IPv6Address(f"2001:db8:{s:x}::{h:x}").packed, site, host)
dest_lists = st.lists(dest, min_size=1, max_size=126, unique=True)
IFS = [f"ge-0/0/{k}" for k in range(8)]


@st.composite
def tables(draw: st.DrawFn) -> Fib:
    routes = []
    for s in range(16):
        kind = draw(st.sampled_from(["none", "gw", "gw", "connected", "ecmp"]))
        if kind == "none":
            continue
        ifname = draw(st.sampled_from(IFS))
        gw = ipaddress.IPv6Address(f"fe80::{draw(st.integers(1, 4))}").packed
        nhs: tuple[NextHop, ...]
        if kind == "gw":
            nhs = (NextHop(ifname, gw),)
        elif kind == "connected":
            nhs = (NextHop(ifname),)
        else:
            nhs = (NextHop(ifname, gw), NextHop(draw(st.sampled_from(IFS)), bytes(15) + b"\x09"))
        routes.append(Route(ipaddress.IPv6Network(f"2001:db8:{s:x}::/48"), nhs))
    return Fib(routes)


@st.composite
def packets(draw: st.DrawFn) -> tuple[bytes, list[bytes], int, int, bytes]:
    dests = draw(dest_lists)
    n = len(dests)
    bitmap = draw(st.integers(1, (1 << n) - 1))
    flags = draw(st.sampled_from([0, FLAG_ANONYMOUS, FLAG_DONT_X2U, FLAG_ANONYMOUS | FLAG_DONT_X2U]))
    hl = draw(st.integers(2, 255))
    payload = draw(st.binary(max_size=64))
    xou = draw(st.booleans())
    sender = ipaddress.IPv6Address("2001:db8:ff::1").packed
    if xou:
        pkt = build_xou(sender, dests, payload, sport=5000, dport=6000, bitmap=bitmap, flags=flags,
                        hop_limit=hl)
    else:
        ports = draw(st.one_of(st.none(), st.lists(st.integers(1, 65535), min_size=n, max_size=n)))
        pkt = build_xcast(sender, dests, payload, sport=5000, dport=6000, bitmap=bitmap, flags=flags,
                          hop_limit=hl, ports=ports)
    return pkt, dests, bitmap, hl, payload


@SETTINGS
@given(packets())
def test_build_parse_round_trip(case: tuple[bytes, list[bytes], int, int, bytes]) -> None:
    pkt, dests, bitmap, hl, payload = case
    p = parse(pkt)
    assert isinstance(p, XcastPacket), p
    assert p.destinations == dests and p.bitmap == bitmap and p.hop_limit == hl and p.payload == payload
    assert p.dst == dests[(bitmap & -bitmap).bit_length() - 1]
    assert p.udp_checksum_ok()


def engine_addr(ifname: str) -> bytes:
    return ipaddress.IPv6Address(f"2001:db8:e::{IFS.index(ifname) + 1}").packed


@SETTINGS
@given(packets(), tables())
def test_branch_invariants(case: tuple[bytes, list[bytes], int, int, bytes], fib: Fib) -> None:
    pkt, dests, bitmap, hl, payload = case
    parent = parse(pkt)
    assert isinstance(parent, XcastPacket)
    r = Brancher(fib, engine_addr).branch(parent)
    routable = {i for i in range(len(dests)) if bitmap >> i & 1 and fib.lookup(dests[i]) is not None}
    unroutable = bin(bitmap).count("1") - len(routable)
    assert r.drops.get("no_route", 0) == unroutable

    covered: list[int] = []
    for c in r.copies:
        covered.extend(c.dest_indexes)
        if c.x2u:
            assert len(c.dest_indexes) == 1 and not parent.dont_x2u
            ip = IPv6(c.data)
            assert ip.hlim == hl - 1 and ip.dst == str(ipaddress.IPv6Address(dests[c.dest_indexes[0]]))
            assert bytes(ip[UDP].payload) == payload
            got = ip[UDP].chksum
            del ip[UDP].chksum
            assert IPv6(bytes(ip))[UDP].chksum == got          # independent (scapy) checksum
            continue
        p = parse(c.data)
        assert isinstance(p, XcastPacket), p
        assert p.hop_limit == hl - 1
        assert p.bitmap & ~parent.bitmap == 0                      # never more live bits
        assert p.bitmap.bit_count() <= parent.bitmap.bit_count()
        assert p.live_indexes == list(c.dest_indexes)
        assert p.dst == dests[c.dest_indexes[0]] and p.src == engine_addr(c.nexthop.ifname)
        if p.encoding == "xou":
            assert xou_checksum_ok(p)
    # every live routable destination is live in exactly one copy; copies are disjoint
    assert sorted(covered) == sorted(routable)
    # one copy per next hop (connected: per destination)
    hops = [c.nexthop for c in r.copies]
    assert len(hops) == len(set(hops))
