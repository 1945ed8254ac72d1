"""XCAST6 over UDP (XOU), WIDE XCAST WG 2003 report §7.

The report's detailed figure (7.2) is missing, so the exact layout below is **our reading** of
its prose (§7.2, §7.3), fixed here so sender, engine and tests agree::

    0    outer IPv6   TC 010111xx (so routers divert it like XCAST6; not in the report),
                      flow label 0x78580, next header 41, src = last XOU branch node's
                      egress address, dst = lowest-index live destination
    40   mark IPv6    src = X6Bone_DUMMY_SOURCE, dst = ALL_XCAST_SSM_ID ff35::ffff:ffff,
                      next header 17; TC/flow label are the application's
    80   UDP          sport, dport (the application's), length = 8 + XOU header + payload,
                      checksum over pseudo-header (mark src, ff35::ffff:ffff) and the whole
                      UDP datagram **with the bitmap field zero-filled**
    88   XOU header   +0  original source          16 bytes
                      +16 N (1..126)               1 byte
                      +17 flags                    1 byte  (0x80 ANONYMOUS, 0x40 DONT_X2U)
                      +18 icmpoff                  1 byte
                      +19 reserved (0)             1 byte
                      +20 bitmap                   16 bytes, LSB-first like XCAST6
                      +36 destinations             N x 16 bytes
    124+16N           real UDP payload

The header is 36 + 16N bytes (a multiple of 4), so the payload keeps 16-bit alignment and the
UDP checksum can be updated incrementally when the header is removed (X2U).  The parser
classifies on the mark destination only: X6Bone_DUMMY_SOURCE was never assigned, so any
source is accepted and :data:`X6BONE_DUMMY_SOURCE` is just what we emit.  The offsets are named
in :mod:`engine.wire.layout` (``XOU_*``); the packet model is :mod:`engine.wire.packet`, so this
module and the codec (which dispatches here) do not import each other.
"""

from __future__ import annotations

import struct

from engine.wire import checksum
from engine.wire.layout import (
    BITMAP_LEN,
    DEST_LEN,
    INNER_NH_OFF,
    IP6_HLEN,
    MAX_DESTS,
    NH_IPV6,
    NH_UDP,
    OUTER_HLIM_OFF,
    UDP_HLEN,
    UDP_LEN_OFF,
    XCAST_TC,
    XOU_BITMAP_OFF,
    XOU_DEST_OFF,
    XOU_FIXED_LEN,
    XOU_FLAGS_OFF,
    XOU_FLOW,
    XOU_ICMPOFF_OFF,
    XOU_MARK_DST,
    XOU_N_OFF,
    XOU_UDP_OFF,
)
from engine.wire.packet import Reject, XcastPacket, XouPacket, bitmap_bytes, ipv6_header
from engine.wire.reasons import DropReason

#: What we write as the mark header's source (documentation prefix; the real one was never assigned).
X6BONE_DUMMY_SOURCE = bytes.fromhex("20010db8ffffffff00000000ffffffff")  # 2001:db8:ffff:ffff::ffff:ffff

def xou_header_len(n: int) -> int:
    """Bytes of the XOU header for ``n`` destinations (36 + 16N)."""
    return XOU_FIXED_LEN + DEST_LEN * n


def parse_xou_body(data: bytes, vlan: int | None) -> XcastPacket | Reject:
    """Validate the part after the mark header (outer + mark headers already checked by codec)."""
    blen = len(data)
    if data[INNER_NH_OFF] != NH_UDP:
        return Reject(DropReason.XOU_NOT_UDP,
                      f"XOU mark header next header {data[INNER_NH_OFF]}, expected 17 (UDP)")
    if blen < XOU_DEST_OFF:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes ends inside the UDP/XOU header")
    ulen = data[XOU_UDP_OFF + UDP_LEN_OFF] << 8 | data[XOU_UDP_OFF + UDP_LEN_OFF + 1]
    if ulen != blen - XOU_UDP_OFF:
        return Reject(DropReason.BAD_TRANSPORT_LENGTH,
                      f"UDP length {ulen} but {blen - XOU_UDP_OFF} bytes follow")
    n = data[XOU_N_OFF]
    if not 1 <= n <= MAX_DESTS:
        return Reject(DropReason.N_OUT_OF_RANGE, f"N = {n}, must be 1..126")
    poff = XOU_DEST_OFF + DEST_LEN * n
    if blen < poff:
        return Reject(DropReason.XOU_BAD_HEADER, f"{blen} bytes ends inside the XOU destination list")
    bitmap = int.from_bytes(data[XOU_BITMAP_OFF:XOU_DEST_OFF], "little")
    if bitmap >> n:
        return Reject(DropReason.BITMAP_BEYOND_N, f"bitmap bit {bitmap.bit_length() - 1} set but N = {n}")
    return XouPacket(
        data=data,
        hop_limit=data[OUTER_HLIM_OFF],
        n=n,
        flags=data[XOU_FLAGS_OFF],
        icmpoff=data[XOU_ICMPOFF_OFF],
        bitmap=bitmap,
        rh_next_header=NH_UDP,
        transport=NH_UDP,
        transport_off=XOU_UDP_OFF,
        payload_off=poff,
        ports=None,
        vlan=vlan,
    )


def build_xou(
    src: bytes,
    dests: list[bytes] | tuple[bytes, ...],
    payload: bytes = b"",
    *,
    sport: int = 0,
    dport: int = 0,
    hop_limit: int = 64,
    flags: int = 0,
    icmpoff: int = 0,
    bitmap: int | None = None,
    outer_src: bytes | None = None,
    tc: int = XCAST_TC,
    inner_tc: int = 0,
    inner_flow: int = 0,
    mark_src: bytes = X6BONE_DUMMY_SOURCE,
) -> bytes:
    """Build an XOU datagram as a sender emits it (layout in the module docstring)."""
    n = len(dests)
    if not 1 <= n <= MAX_DESTS:
        raise ValueError(f"{n} destinations: XOU carries 1..126")
    if any(len(d) != DEST_LEN for d in dests):
        raise ValueError("destinations must be 16 bytes each")
    if bitmap is None:
        bitmap = (1 << n) - 1
    if not bitmap or bitmap >> n:
        raise ValueError("bitmap must have live bits only below N")
    ulen = UDP_HLEN + xou_header_len(n) + len(payload)
    if ulen > 0xFFFF - IP6_HLEN:
        raise ValueError(f"XOU datagram of {ulen} bytes is too long")
    head = src + bytes([n, flags & 0xFF, icmpoff & 0xFF, 0])
    body = b"".join(dests) + payload
    # checksum over the datagram with the bitmap zero-filled (WIDE report §7.2)
    zeroed = struct.pack("!HHHH", sport, dport, ulen, 0) + head + bytes(BITMAP_LEN) + body
    ck = checksum.udp6_checksum(mark_src, XOU_MARK_DST, zeroed)
    udp = struct.pack("!HHHH", sport, dport, ulen, ck) + head + bitmap_bytes(bitmap) + body
    mark = ipv6_header(inner_tc, inner_flow, ulen, NH_UDP, 64, mark_src, XOU_MARK_DST)
    first = dests[(bitmap & -bitmap).bit_length() - 1]
    outer = ipv6_header(tc, XOU_FLOW, IP6_HLEN + ulen, NH_IPV6, hop_limit, outer_src or src, first)
    return outer + mark + udp


def xou_checksum_ok(pkt: XcastPacket) -> bool:
    """Verify an XOU datagram's UDP checksum (bitmap zeroed) — for tools and tests."""
    return bool(pkt.udp_checksum_ok())


__all__ = ["X6BONE_DUMMY_SOURCE", "build_xou", "parse_xou_body", "xou_checksum_ok"]
