"""Codec: parse/validate every field, every rejection reason, builders, L2 framing, XOU."""

from __future__ import annotations

import struct

import pytest

from engine.wire import codec
from engine.wire.codec import Encoding, Reject, XcastPacket, build_xcast, parse
from engine.wire.reasons import DropReason
from engine.wire.xou import X6BONE_DUMMY_SOURCE, build_xou, xou_checksum_ok
from tests.engine.helpers import SENDER, a

DESTS = [a("2001:db8:1::1"), a("2001:db8:2::1"), a("2001:db8:3::1")]


def ok(buf: bytes, **kw: bool) -> XcastPacket:
    p = parse(buf, **kw)
    assert isinstance(p, XcastPacket), p
    return p


def rejected(buf: bytes | bytearray, reason: DropReason, **kw: bool) -> Reject:
    p = parse(bytes(buf), **kw)
    assert isinstance(p, Reject), p
    assert p.reason is reason, p
    assert p.detail
    return p


def test_parse_fields() -> None:
    pkt = build_xcast(SENDER, DESTS, b"hello", sport=4000, dport=5000, hop_limit=9, flags=0x80, icmpoff=2,
                      inner_tc=0x20, inner_flow=0x12345)
    p = ok(pkt)
    assert p.encoding is Encoding.XCAST6
    assert p.tc == 0x5C and p.flow == 0x58000 and p.hop_limit == 9
    assert p.src == SENDER and p.dst == DESTS[0]
    assert p.orig_src == SENDER and p.inner_dst == codec.ALL_XCAST_NODES
    assert p.inner_tc == 0x20 and p.inner_flow == 0x12345
    assert p.n == 3 and p.flags == 0x80 and p.anonymous and not p.dont_x2u and p.icmpoff == 2
    assert p.bitmap == 0b111 and p.destinations == DESTS
    assert p.udp_ports == (4000, 5000) and p.payload == b"hello"
    assert p.transport == 17 and p.ports is None
    d = p.to_dict()
    assert d["destinations"][2] == {"index": 2, "address": "2001:db8:3::1", "live": True}
    assert d["transport"] == {"protocol": 17, "name": "udp", "sport": 4000, "dport": 5000,
                              "checksum_ok": True}
    bad = bytearray(pkt)
    bad[-1] ^= 0xFF
    q = parse(bytes(bad))
    assert isinstance(q, XcastPacket) and q.udp_checksum_ok() is False


def test_bitmap_is_lsb_first() -> None:
    dests = [a(f"2001:db8:1::{i + 1:x}") for i in range(12)]
    pkt = build_xcast(SENDER, dests, b"", bitmap=(1 << 9) | (1 << 2))
    assert pkt[88:104] == bytes([0b100, 0b10]) + bytes(14)   # bit 2 in octet 0, bit 9 = octet 1 bit 1
    p = ok(pkt)
    assert p.live_indexes == [2, 9]
    assert p.dst == dests[2]


def test_wire_offsets_match_the_note() -> None:
    pkt = build_xcast(SENDER, DESTS, b"xy", sport=1, dport=2)
    assert pkt[0] >> 4 == 6 and pkt[6] == 41
    assert pkt[40 + 6] == 43 and pkt[64:80] == codec.ALL_XCAST_NODES
    assert pkt[80:88] == bytes([17, 2 + 2 * 3, 253, 0, 3, 0, 0, 0])
    assert pkt[104:152] == b"".join(DESTS)
    assert struct.unpack("!HHH", pkt[152:158]) == (1, 2, 10)


def test_max_and_min_destinations() -> None:
    dests = [a(f"2001:db8:1::{i + 1:x}") for i in range(126)]
    p = ok(build_xcast(SENDER, dests, b"p"))
    assert p.n == 126 and p.bitmap == (1 << 126) - 1
    with pytest.raises(ValueError, match=r"1\.\.126"):
        build_xcast(SENDER, [*dests, a("2001:db8::1")])
    with pytest.raises(ValueError, match=r"1\.\.126"):
        build_xcast(SENDER, [])


@pytest.mark.parametrize("l2vlan", [None, 101])
def test_l2_and_vlan(l2vlan: int | None) -> None:
    pkt = build_xcast(SENDER, DESTS, b"abc")
    frame = codec.build_l2(pkt, dst_mac=b"\x02" * 6, src_mac=b"\x04" * 6, vlan=l2vlan) + bytes(4)  # FCS
    p = ok(frame, l2=True)
    assert p.vlan == l2vlan and p.data == pkt
    p2 = parse(memoryview(frame), l2=True)
    assert isinstance(p2, XcastPacket) and p2.data == pkt


def test_l2_rejections() -> None:
    rejected(b"\x00" * 10, DropReason.L2_TRUNCATED, l2=True)
    rejected(b"\x00" * 12 + b"\x08\x00" + b"\x45" * 40, DropReason.NOT_IPV6_ETHERTYPE, l2=True)
    rejected(b"\x00" * 12 + b"\x81\x00\x00", DropReason.L2_TRUNCATED, l2=True)


def _mut(pkt: bytes, off: int, val: int) -> bytearray:
    b = bytearray(pkt)
    b[off] = val
    return b


BASE = build_xcast(SENDER, DESTS, b"hello", sport=1, dport=2)


def test_reject_reasons() -> None:
    rejected(BASE[:39], DropReason.TRUNCATED)
    rejected(_mut(BASE, 0, 0x45), DropReason.NOT_IPV6)
    rejected(_mut(_mut(BASE, 0, 0x60), 1, 0x00), DropReason.NOT_XCAST_TRAFFIC_CLASS)
    rejected(_mut(BASE, 6, 17), DropReason.OUTER_NEXT_HEADER)
    rejected(BASE[:-1], DropReason.TRUNCATED)
    rejected(BASE + b"\x00", DropReason.BAD_PAYLOAD_LENGTH)
    rejected(_mut(BASE, 40, 0x40), DropReason.INNER_NOT_IPV6)
    rejected(_mut(BASE, 45, BASE[45] + 1), DropReason.BAD_INNER_PAYLOAD_LENGTH)
    rejected(_mut(BASE, 79, 0x15), DropReason.WRONG_INNER_DESTINATION)
    rejected(_mut(BASE, 46, 60), DropReason.INNER_NEXT_HEADER)
    rejected(_mut(BASE, 82, 0), DropReason.WRONG_ROUTING_TYPE)
    rejected(_mut(BASE, 84, 0), DropReason.N_OUT_OF_RANGE)
    rejected(_mut(BASE, 84, 127), DropReason.N_OUT_OF_RANGE)
    rejected(_mut(BASE, 84, 2), DropReason.BAD_HDR_EXT_LEN)
    rejected(_mut(BASE, 81, 9), DropReason.BAD_HDR_EXT_LEN)
    rejected(_mut(BASE, 88, 0b1111), DropReason.BITMAP_BEYOND_N)
    rejected(_mut(BASE, 103, 0x80), DropReason.BITMAP_BEYOND_N)
    rejected(_mut(BASE, 157, 99), DropReason.BAD_TRANSPORT_LENGTH)


def test_ecn_bits_are_free_and_any_flow_label_accepted() -> None:
    b = bytearray(BASE)
    b[1] = 0xFA                          # TC low nibble F (TC 0x5F: ECN CE), flow label nibble A
    b[2:4] = b"\x12\x34"
    p = ok(bytes(b))
    assert p.tc == 0x5F and p.flow == 0xA1234


def test_truncated_routing_header_and_destinations() -> None:
    # consistent outer/inner lengths, but the buffer ends inside the RH / destination list
    for cut in (90, 110):
        b = bytearray(BASE[:cut])
        b[4:6] = struct.pack("!H", cut - 40)
        b[44:46] = struct.pack("!H", cut - 80)
        r = parse(bytes(b))
        assert isinstance(r, Reject) and r.reason is DropReason.TRUNCATED


def test_port_list_round_trip_and_layout() -> None:
    pkt = build_xcast(SENDER, DESTS, b"data", sport=7, dport=9, ports=[1001, 1002, 1003])
    p = ok(pkt)
    assert p.ports == (1001, 1002, 1003)
    assert p.rh_next_header == 60 and p.transport == 17
    assert p.udp_ports == (7, 0)           # RFC 5058 §8.1: dport 0 when the list is present
    o = 104 + 48
    assert pkt[o] == 17 and pkt[o + 2] == 0x27 and pkt[o + 3] == 6
    assert (pkt[o + 1] + 1) * 8 == len(codec.port_list_header([1, 2, 3]))
    assert p.payload == b"data"


def test_port_list_rejections() -> None:
    pkt = bytearray(build_xcast(SENDER, DESTS, b"data", ports=[1, 2, 3]))
    o = 104 + 48
    bad = bytearray(pkt)
    bad[o + 3] = 4                          # option length != 2N (still inside the header)
    rejected(bad, DropReason.BAD_PORT_LIST)
    bad = bytearray(pkt)
    bad[o + 1] = 30                         # header length past the end
    rejected(bad, DropReason.BAD_PORT_LIST)


def test_xou_round_trip() -> None:
    pkt = build_xou(SENDER, DESTS, b"payload", sport=1234, dport=5678, hop_limit=30, bitmap=0b110)
    p = ok(pkt)
    assert p.encoding is Encoding.XOU
    assert p.flow == 0x78580 and p.inner_dst == codec.XOU_MARK_DST and p.inner_src == X6BONE_DUMMY_SOURCE
    assert p.orig_src == SENDER and p.n == 3 and p.bitmap == 0b110 and p.dst == DESTS[1]
    assert p.destinations == DESTS and p.payload == b"payload" and p.udp_ports == (1234, 5678)
    assert xou_checksum_ok(p)
    # bitmap changes do not change the checksum (it is computed with the bitmap zeroed)
    b = bytearray(pkt)
    b[108] = 0b010
    p2 = ok(bytes(b))
    assert xou_checksum_ok(p2)


def test_xou_rejections() -> None:
    pkt = build_xou(SENDER, DESTS, b"payload", sport=1, dport=2)
    rejected(_mut(pkt, 46, 6), DropReason.XOU_NOT_UDP)
    rejected(_mut(pkt, 88 + 16, 0), DropReason.N_OUT_OF_RANGE)
    rejected(_mut(pkt, 88 + 16, 100), DropReason.XOU_BAD_HEADER)
    rejected(_mut(pkt, 108, 0xFF), DropReason.BITMAP_BEYOND_N)
    rejected(_mut(pkt, 85, 1), DropReason.BAD_TRANSPORT_LENGTH)


def test_reasons_are_prometheus_safe() -> None:
    import re

    for r in DropReason:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", r.value), r
    assert len({r.value for r in DropReason}) == len(DropReason)
