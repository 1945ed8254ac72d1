"""Branching: one test per rule of the wire-format note, X2U checksums checked with scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from engine.forwarding.branch import Brancher, BranchResult, is_valid_unicast
from engine.forwarding.fib import Fib
from engine.model import NextHop
from engine.wire.codec import FLAG_ANONYMOUS, FLAG_DONT_X2U, XcastPacket, build_xcast, parse
from engine.wire.reasons import DropReason
from engine.wire.xou import build_xou, xou_checksum_ok
from tests.engine.helpers import ENGINE_ADDR, SENDER, a, example_fib, route


def brancher(fib: Fib | None = None, **kw: object) -> Brancher:
    return Brancher(fib or example_fib(), ENGINE_ADDR.get, **kw)  # type: ignore[arg-type]


def run(pkt: bytes, b: Brancher | None = None) -> BranchResult:
    return (b or brancher()).branch(pkt, explain=True)


def scapy_udp_checksum_ok(data: bytes) -> bool:
    """Independent check: scapy recomputes the UDP checksum of a unicast IPv6/UDP packet."""
    p = IPv6(data)
    got = p[UDP].chksum
    del p[UDP].chksum
    return IPv6(bytes(p))[UDP].chksum == got


G1, G2, G3, G4 = "2001:db8:1::", "2001:db8:2::", "2001:db8:3::", "2001:db8:4::"


def test_groups_per_next_hop_with_disjoint_bitmaps() -> None:
    dests = [a(G1 + "1"), a(G2 + "1"), a(G1 + "2"), a("2001:db8:21::5"), a(G4 + "1")]
    r = run(build_xcast(SENDER, dests, b"pay", sport=1, dport=2, flags=FLAG_DONT_X2U))
    assert not r.drops
    by_if = {c.nexthop.ifname: c for c in r.copies}
    assert set(by_if) == {"ge-0/0/1", "ge-0/0/2", "ge-0/0/4"}
    assert by_if["ge-0/0/1"].dest_indexes == (0, 2)
    assert by_if["ge-0/0/2"].dest_indexes == (1, 3)     # two prefixes, one next hop: one copy
    assert by_if["ge-0/0/4"].dest_indexes == (4,)
    seen = 0
    for c in r.copies:
        p = parse(c.data)
        assert isinstance(p, XcastPacket)
        assert seen & p.bitmap == 0
        seen |= p.bitmap
        assert p.live_indexes == list(c.dest_indexes)
        # rule 6: outer src = engine address on that link, outer dst = lowest live index
        assert p.src == ENGINE_ADDR[c.nexthop.ifname]
        assert p.dst == dests[c.dest_indexes[0]]
        # inner header and destination list unchanged
        assert p.orig_src == SENDER and p.destinations == dests
        assert p.data[40:88] == parse_or_fail(r).data[40:88]
    assert seen == 0b11111


def parse_or_fail(r: BranchResult) -> XcastPacket:
    assert r.packet is not None
    return r.packet


def test_invalid_destination_drops_whole_packet() -> None:
    for bad in ("ff02::1", "fe80::1", "::1", "::", "::ffff:10.0.0.1", "fec0::1"):
        assert not is_valid_unicast(a(bad))
        r = run(build_xcast(SENDER, [a(G1 + "1"), a(bad)], b""))
        assert r.copies == [] and r.drops == {DropReason.INVALID_DESTINATION: 1}, bad
        assert r.detail is not None and "destination 1" in r.detail
    assert is_valid_unicast(a("fd00::1")) and is_valid_unicast(a("2001:db8::1"))


def test_invalid_destination_not_live_is_ignored() -> None:
    r = run(build_xcast(SENDER, [a(G1 + "1"), a("ff02::1")], b"", bitmap=0b01))
    assert not r.drops and len(r.copies) == 1


def test_no_route_clears_bit_and_counts_each() -> None:
    dests = [a(G1 + "1"), a("2001:db8:99::1"), a(G1 + "2"), a("2001:db8:98::1")]
    r = run(build_xcast(SENDER, dests, b"", flags=FLAG_DONT_X2U))
    assert r.drops == {DropReason.NO_ROUTE: 2}
    assert len(r.copies) == 1
    p = parse(r.copies[0].data)
    assert isinstance(p, XcastPacket) and p.bitmap == 0b0101
    assert r.outcomes is not None and [o.status for o in r.outcomes] == [
        "forwarded", "no_route", "forwarded", "no_route"]


@pytest.mark.parametrize("hl", [0, 1])
def test_hop_limit_exhausted(hl: int) -> None:
    r = run(build_xcast(SENDER, [a(G1 + "1"), a(G2 + "1")], b"", hop_limit=hl))
    assert r.copies == [] and r.drops == {DropReason.HOP_LIMIT_EXCEEDED: 1}


def test_hop_limit_decrements_in_every_copy() -> None:
    r = run(build_xcast(SENDER, [a(G1 + "1"), a(G1 + "2"), a(G2 + "1")], b"x", sport=1, dport=2, hop_limit=7))
    assert len(r.copies) == 2 and {c.data[7] for c in r.copies} == {6}


def test_anonymous_zeroes_other_destinations() -> None:
    dests = [a(G1 + "1"), a(G2 + "1"), a(G1 + "2")]
    r = run(build_xcast(SENDER, dests, b"", flags=FLAG_ANONYMOUS | FLAG_DONT_X2U))
    for c in r.copies:
        p = parse(c.data)
        assert isinstance(p, XcastPacket)
        for i in range(3):
            assert p.dest(i) == (dests[i] if i in c.dest_indexes else bytes(16))


def test_x2u_single_destination_groups() -> None:
    dests = [a(G1 + "1"), a(G1 + "2"), a(G2 + "7")]
    pkt = build_xcast(SENDER, dests, b"hello x2u", sport=4000, dport=5000, hop_limit=20,
                      inner_tc=0x28, inner_flow=0xABCDE)
    r = run(pkt)
    assert [c.x2u for c in r.copies] == [False, True]
    u = r.copies[1]
    ip = IPv6(u.data)
    assert ip.src == "2001:db8:ff::1" and ip.dst == "2001:db8:2::7"   # original sender kept
    assert ip.hlim == 19 and ip.nh == 17 and ip.tc == 0x28 and ip.fl == 0xABCDE
    assert ip[UDP].sport == 4000 and ip[UDP].dport == 5000 and bytes(ip[UDP].payload) == b"hello x2u"
    assert scapy_udp_checksum_ok(u.data)


def test_dont_x2u_keeps_xcast_form() -> None:
    r = run(build_xcast(SENDER, [a(G2 + "7")], b"z", flags=FLAG_DONT_X2U))
    assert len(r.copies) == 1 and not r.copies[0].x2u
    p = parse(r.copies[0].data)
    assert isinstance(p, XcastPacket) and p.src == ENGINE_ADDR["ge-0/0/2"]


def test_x2u_writes_port_from_port_list() -> None:
    dests = [a(G1 + "1"), a(G2 + "1"), a(G4 + "1")]
    r = run(build_xcast(SENDER, dests, b"ports", sport=9, ports=[1111, 2222, 3333]))
    assert all(c.x2u for c in r.copies)
    assert [IPv6(c.data)[UDP].dport for c in r.copies] == [1111, 2222, 3333]
    assert all(scapy_udp_checksum_ok(c.data) for c in r.copies)


def test_connected_route_each_destination_own_x2u() -> None:
    dests = [a(G3 + "1"), a(G3 + "2"), a(G3 + "3")]
    r = run(build_xcast(SENDER, dests, b"c", sport=1, dport=2))
    assert len(r.copies) == 3 and all(c.x2u for c in r.copies)
    assert [c.nexthop for c in r.copies] == [NextHop("ge-0/0/3", d) for d in dests]
    assert all(scapy_udp_checksum_ok(c.data) for c in r.copies)


def test_no_source_address_counted_per_copy() -> None:
    fib = Fib([route("2001:db8:1::/48", "xe-9/9/9", "fe80::9")])
    r = run(build_xcast(SENDER, [a(G1 + "1"), a(G1 + "2")], b""), brancher(fib))
    assert r.copies == [] and r.drops == {DropReason.NO_SOURCE_ADDRESS: 1}


def test_local_delivery() -> None:
    me = a(G1 + "abc")
    b = brancher(local_addresses=frozenset({me}))
    r = b.branch(build_xcast(SENDER, [me, a(G2 + "1"), a(G2 + "2")], b"for me", sport=5, dport=6),
                 explain=True)
    assert len(r.local) == 1 and r.local[0].dest_indexes == (0,)
    ip = IPv6(r.local[0].data)
    assert ip.dst == "2001:db8:1::abc" and bytes(ip[UDP].payload) == b"for me"
    assert scapy_udp_checksum_ok(r.local[0].data)
    assert len(r.copies) == 1 and r.copies[0].dest_indexes == (1, 2)
    assert r.outcomes is not None and r.outcomes[0].status == "local"


def test_reject_passed_through_as_drop() -> None:
    r = brancher().branch(b"\x60" + bytes(50))
    assert r.reject is not None and r.drops == {r.reject.reason: 1}


def test_no_live_destination() -> None:
    r = run(build_xcast(SENDER, [a(G1 + "1")], b"", bitmap=0, outer_dst=a(G1 + "1")))
    assert r.drops == {DropReason.NO_LIVE_DESTINATION: 1}


def test_icmp_echo_policy() -> None:
    echo = bytes([128, 0, 0, 0, 0, 1, 0, 1])
    pkt = build_xcast(SENDER, [a(G1 + "1"), a(G2 + "1")], transport=58, transport_bytes=echo)
    assert len(brancher().branch(pkt).copies) == 2
    r = brancher(drop_icmp_echo=True).branch(pkt)
    assert r.drops == {DropReason.ICMP_ECHO_BLOCKED: 1}


def test_icmp_echo_policy_on_an_icmpv6_packet_without_transport_bytes() -> None:
    """Issue 15 (LOW): the echo check read the ICMPv6 type past the end (IndexError)."""
    pkt = build_xcast(SENDER, [a(G1 + "1"), a(G2 + "1")], transport=58, transport_bytes=b"")
    r = brancher(drop_icmp_echo=True).branch(pkt)
    assert DropReason.ICMP_ECHO_BLOCKED not in r.drops and len(r.copies) == 2


def test_fib_change_invalidates_caches() -> None:
    fib = example_fib()
    b = brancher(fib)
    pkt = build_xcast(SENDER, [a(G1 + "1"), a(G1 + "2")], b"")
    assert b.branch(pkt).copies[0].nexthop.ifname == "ge-0/0/1"
    fib.add(route("2001:db8:1::/64", "ge-0/0/4", "fe80::4"))
    assert b.branch(pkt).copies[0].nexthop.ifname == "ge-0/0/4"


def test_xou_branch_and_x2u() -> None:
    dests = [a(G1 + "1"), a(G1 + "2"), a(G2 + "1"), a(G3 + "1")]
    pkt = build_xou(SENDER, dests, b"xou data", sport=3000, dport=3001, hop_limit=10)
    r = run(pkt)
    assert [c.x2u for c in r.copies] == [False, True, True]
    p = parse(r.copies[0].data)
    assert isinstance(p, XcastPacket) and p.bitmap == 0b11 and xou_checksum_ok(p)
    assert p.src == ENGINE_ADDR["ge-0/0/1"] and p.hop_limit == 9
    for c in r.copies[1:]:
        ip = IPv6(c.data)
        assert ip.src == "2001:db8:ff::1" and bytes(ip[UDP].payload) == b"xou data"
        assert ip[UDP].dport == 3001 and ip[UDP].len == 16
        assert scapy_udp_checksum_ok(c.data)


def test_x2u_of_an_xou_packet_without_checksum_gets_a_valid_one() -> None:
    """Issue 15 (LOW): an XOU datagram whose UDP checksum is 0 (left out by its sender) was
    updated incrementally from 0, giving a wrong non-zero checksum on every X2U copy."""
    dests = [a(G2 + "1"), a(G3 + "1")]
    pkt = bytearray(build_xou(SENDER, dests, b"no checksum", sport=3000, dport=3001, hop_limit=10))
    p = parse(bytes(pkt))
    assert isinstance(p, XcastPacket)
    pkt[p.transport_off + 6 : p.transport_off + 8] = b"\x00\x00"
    r = run(bytes(pkt))
    assert [c.x2u for c in r.copies] == [True, True]
    for c in r.copies:
        assert scapy_udp_checksum_ok(c.data) and IPv6(c.data)[UDP].chksum != 0


def test_xou_anonymous_keeps_checksum_valid() -> None:
    dests = [a(G1 + "1"), a(G1 + "2"), a(G2 + "1"), a(G2 + "2")]
    pkt = build_xou(SENDER, dests, b"anon", sport=1, dport=2, flags=FLAG_ANONYMOUS)
    r = run(pkt)
    for c in r.copies:
        p = parse(c.data)
        assert isinstance(p, XcastPacket) and xou_checksum_ok(p)
        assert sum(p.dest(i) == bytes(16) for i in range(4)) == 2


def test_x2u_with_sender_checksum_zero_is_computed_fully() -> None:
    pkt = bytearray(build_xcast(SENDER, [a(G1 + "1"), a(G2 + "1")], b"nocsum", sport=1, dport=2))
    t = 104 + 32
    pkt[t + 6 : t + 8] = b"\x00\x00"
    r = run(bytes(pkt))
    assert all(c.x2u for c in r.copies) and all(scapy_udp_checksum_ok(c.data) for c in r.copies)


def test_xou_local_delivery_strips_xou_header() -> None:
    me = a(G2 + "abc")
    b = brancher(local_addresses=frozenset({me}))
    r = b.branch(build_xou(SENDER, [a(G1 + "1"), me], b"xou-local", sport=5, dport=6))
    ip = IPv6(r.local[0].data)
    assert ip.src == "2001:db8:ff::1" and bytes(ip[UDP].payload) == b"xou-local"
    assert scapy_udp_checksum_ok(r.local[0].data)
