"""X2U: turn an XCAST6/XOU packet into a plain unicast UDP packet for one destination.

The UDP checksum is updated incrementally (RFC 1624) instead of recomputed over the payload:
only the words that change are subtracted/added.

* XCAST6: the pseudo-header destination changes from ff0e::114 to the destination, and with a
  port list the UDP destination port changes from 0 to the listed port.  The upper-layer length
  is unchanged (the UDP datagram is carried as is).
* XOU: the pseudo-header changes (mark source/ff35::ffff:ffff -> original source/destination),
  the XOU header (summed with its bitmap zeroed, as the sender computed it) leaves the datagram
  and the UDP length shrinks by the XOU header length in both pseudo-header and UDP header.
"""

from __future__ import annotations

import struct

from engine import checksum
from engine.codec import ALL_XCAST_NODES, XcastPacket

_ALL_XCAST_SUM = checksum.ones_sum(ALL_XCAST_NODES)
_hdr = struct.Struct("!HBB")
_u16 = struct.Struct("!H")


def addr_sum(addr: bytes) -> int:
    """Unfolded 16-bit word sum of an address (cached per destination by the brancher)."""
    return sum(struct.unpack("!8H", addr))


def x2u_xcast(pkt: XcastPacket, index: int, dest: bytes, hop_limit: int, dest_sum: int) -> bytes:
    """Unicast IPv6+UDP packet for destination ``index`` of an XCAST6 (RH253) packet."""
    data = pkt.data
    t = pkt.transport_off
    ulen = len(data) - t
    old_ck = data[t + 6] << 8 | data[t + 7]
    old_dport = data[t + 2] << 8 | data[t + 3]
    dport = pkt.ports[index] if pkt.ports is not None else old_dport
    if old_ck == 0:
        # a sender that left the checksum out: compute it fully (zero is invalid over IPv6)
        udp = data[t : t + 2] + _u16.pack(dport) + data[t + 4 : t + 6] + b"\x00\x00" + data[t + 8 :]
        ck = checksum.udp6_checksum(pkt.orig_src, dest, udp)
    else:
        ck = checksum.incremental(old_ck, _ALL_XCAST_SUM + old_dport, dest_sum + dport)
    return b"".join(
        (
            data[40:44],                       # version / TC / flow label of the inner header
            _hdr.pack(ulen, 17, hop_limit),
            data[48:64],                       # original sender
            dest,
            data[t : t + 2],
            _u16.pack(dport),
            data[t + 4 : t + 6],
            _u16.pack(ck),
            data[t + 8 :],
        )
    )


def xou_header_sum(pkt: XcastPacket) -> int:
    """Word sum of the XOU header as covered by the checksum (bitmap zero-filled)."""
    d = pkt.data
    return (
        checksum.ones_sum(d[pkt.transport_off + 8 : pkt.bitmap_off])
        + checksum.ones_sum(d[pkt.dest_off : pkt.payload_off])
    )


def x2u_xou(
    pkt: XcastPacket, dest: bytes, hop_limit: int, dest_sum: int, header_sum: int
) -> bytes:
    """Unicast IPv6+UDP packet for one destination of an XOU datagram (XOU header removed)."""
    data = pkt.data
    t = pkt.transport_off
    old_len = len(data) - t
    new_len = len(data) - pkt.payload_off + 8
    old_ck = data[t + 6] << 8 | data[t + 7]
    orig = pkt.orig_src
    old_words = addr_sum(pkt.inner_src) + addr_sum(pkt.inner_dst) + 2 * old_len + header_sum
    new_words = addr_sum(orig) + dest_sum + 2 * new_len
    ck = checksum.incremental(old_ck, old_words, new_words)
    return b"".join(
        (
            data[40:44],
            _hdr.pack(new_len, 17, hop_limit),
            orig,
            dest,
            data[t : t + 4],
            _u16.pack(new_len),
            _u16.pack(ck),
            data[pkt.payload_off :],
        )
    )
