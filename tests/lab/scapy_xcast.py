"""An XCAST6 packet builder written from docs/xcast6-wire-format.md with scapy only.

Deliberately independent of engine.wire.codec: it plays the part of the reference (WIDE/libxcast)
senders, so the engine is checked against the note, not against itself.
"""

from __future__ import annotations

import struct

from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

ALL_XCAST_NODES = "ff0e::114"
XCAST_TC = 0x5C
XCAST_FLOW = 0x58000
RH_TYPE_XCAST = 253
F_ANONYMOUS = 0x80
F_DONT_X2U = 0x40


def xcast_packet(src: str, dests: list[str], payload: bytes, sport: int = 40000, dport: int = 5000,
                 hlim: int = 64, flags: int = 0, live: list[int] | None = None,
                 outer_src: str | None = None, inner_tc: int = 0) -> bytes:
    """A full IPv6 XCAST6 packet (no L2): outer IPv6 / inner IPv6 / RH253 / UDP / payload."""
    n = len(dests)
    live = list(range(n)) if live is None else live
    bitmap = bytearray(16)
    for i in live:
        bitmap[i >> 3] |= 1 << (i & 7)
    udp = bytes(IPv6(src=src, dst=ALL_XCAST_NODES) / UDP(sport=sport, dport=dport) / payload)[40:]
    addrs = b"".join(bytes(IPv6(dst=d))[24:40] for d in dests)
    rh = struct.pack("!BBBBBBBB", 17, 2 + 2 * n, RH_TYPE_XCAST, 0, n, flags, 0, 0) + bytes(bitmap) + addrs
    inner = bytes(IPv6(tc=inner_tc, nh=43, hlim=64, src=src, dst=ALL_XCAST_NODES, plen=len(rh) + len(udp)))
    first = dests[min(live)] if live else dests[0]
    outer = IPv6(tc=XCAST_TC, fl=XCAST_FLOW, nh=41, hlim=hlim, src=outer_src or src, dst=first,
                 plen=len(inner) + len(rh) + len(udp))
    return bytes(outer) + inner + rh + udp


def ethernet(dst_mac: bytes, src_mac: bytes, packet: bytes) -> bytes:
    return dst_mac + src_mac + b"\x86\xdd" + packet
