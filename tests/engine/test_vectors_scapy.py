"""Test vectors built independently by scapy from raw fields must decode identically."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from engine.wire.codec import XcastPacket, build_xcast, parse


def scapy_xcast(src: str, dests: list[str], bitmap: int, flags: int, payload: bytes, *, hl: int = 64,
                sport: int = 1, dport: int = 2, ports: list[int] | None = None) -> bytes:
    """XCAST6 v2.0 from scapy layers: the bitmap rides as the RH's first 16-byte 'address'."""
    bm = str(ipaddress.IPv6Address(bitmap.to_bytes(16, "little")))
    rh = IPv6ExtHdrRouting(type=253, segleft=0, reserved=(len(dests) << 24) | (flags << 16),
                           addresses=[bm, *dests])
    inner = IPv6(src=src, dst="ff0e::114", hlim=64) / rh
    if ports is not None:
        opt = HBHOptUnknown(otype=0x27, optdata=struct.pack(f"!{len(ports)}H", *ports))
        inner = inner / IPv6ExtHdrDestOpt(options=[opt])
        dport = 0
    inner = inner / UDP(sport=sport, dport=dport) / Raw(payload)
    first = dests[(bitmap & -bitmap).bit_length() - 1]
    return bytes(IPv6(tc=0x5C, fl=0x58000, nh=41, hlim=hl, src=src, dst=first) / inner)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=40, unique=True),
    st.data(),
    st.binary(max_size=40),
    st.sampled_from([0, 0x80, 0x40, 0xC0]),
)
def test_scapy_vectors_decode_identically(hosts: list[int], data: st.DataObject, payload: bytes,
                                          flags: int) -> None:
    dests = [f"2001:db8:7::{h:x}" for h in hosts]
    bitmap = data.draw(st.integers(1, (1 << len(dests)) - 1))
    ports = data.draw(st.one_of(st.none(), st.lists(st.integers(1, 65535), min_size=len(dests),
                                                    max_size=len(dests))))
    raw = scapy_xcast("2001:db8:ff::1", dests, bitmap, flags, payload, ports=ports)
    p = parse(raw)
    assert isinstance(p, XcastPacket), p
    assert [str(ipaddress.IPv6Address(d)) for d in p.destinations] == dests
    assert p.bitmap == bitmap and p.flags == flags and p.payload == payload
    assert p.ports == (tuple(ports) if ports is not None else None)
    # and our builder produces the same bytes as scapy
    ours = build_xcast(ipaddress.IPv6Address("2001:db8:ff::1").packed,
                       [ipaddress.IPv6Address(d).packed for d in dests], payload, sport=1, dport=2,
                       bitmap=bitmap, flags=flags, ports=ports)
    assert ours == raw


def test_scapy_vlan_frame_decodes() -> None:
    raw = scapy_xcast("2001:db8:ff::1", ["2001:db8:1::1", "2001:db8:2::1"], 0b11, 0, b"vlan")
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=301) / IPv6(raw))
    p = parse(frame, l2=True)
    assert isinstance(p, XcastPacket) and p.vlan == 301 and p.data == raw


def test_scapy_dissects_our_packets() -> None:
    ours = build_xcast(ipaddress.IPv6Address("2001:db8:ff::1").packed,
                       [ipaddress.IPv6Address("2001:db8:1::1").packed], b"hi", sport=10, dport=20)
    s = IPv6(ours)
    assert s.nh == 41 and s.tc == 0x5C and s.fl == 0x58000
    inner = s.payload
    assert isinstance(inner, IPv6) and inner.dst == "ff0e::114"
    rh = inner[IPv6ExtHdrRouting]
    assert rh.type == 253 and rh.len == 4 and rh.segleft == 0
    u = s[UDP]
    assert u.sport == 10 and u.dport == 20 and bytes(u.payload) == b"hi"
    # scapy's own checksum for (orig src, ff0e::114) matches ours
    got = u.chksum
    del u.chksum
    assert IPv6(bytes(s))[UDP].chksum == got
