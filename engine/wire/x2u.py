"""X2U: turn an XCAST6/XOU packet into a plain unicast UDP packet for one destination.

The UDP checksum is updated incrementally (RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m')) instead
of being recomputed over the payload: only the words that change are subtracted/added.

* XCAST6: the pseudo-header destination changes from ff0e::114 to the destination, and with a
  port list the UDP destination port changes from 0 to the listed port.  The upper-layer length
  is unchanged (the UDP datagram is carried as is).
* XOU: the pseudo-header changes (mark source/ff35::ffff:ffff -> original source/destination),
  the XOU header (summed with its bitmap zeroed, as the sender computed it) leaves the datagram
  and the UDP length shrinks by the XOU header length in both pseudo-header and UDP header.

Everything that does not depend on the destination is computed once per packet
(:class:`X2uMaker`); per destination only the address word sum (cached by the brancher), one
fold and one ``bytes.join`` remain.
"""

from __future__ import annotations

import struct

from engine.wire import checksum
from engine.wire.layout import (
    ALL_XCAST_NODES,
    INNER_FLOW_END,
    INNER_OFF,
    NH_UDP,
    UDP_CSUM_OFF,
    UDP_DPORT_OFF,
    UDP_HLEN,
    UDP_LEN_OFF,
)
from engine.wire.packet import Encoding, XcastPacket

_ALL_XCAST_SUM = checksum.ones_sum(ALL_XCAST_NODES)
_hdr = struct.Struct("!HBB")
_u16 = struct.Struct("!H")


def addr_sum(addr: bytes) -> int:
    """One's-complement word sum of an address (cached per destination by the brancher)."""
    return int.from_bytes(addr, "big") % 0xFFFF   # == word sum mod 0xFFFF (see checksum.ones_sum)


def _fold(x: int) -> int:
    x = (x & 0xFFFF) + (x >> 16)
    x = (x & 0xFFFF) + (x >> 16)
    return (x & 0xFFFF) + (x >> 16)


class X2uMaker:
    """Builds the X2U unicast packets of one packet (prepared once, then one call per destination)."""

    __slots__ = ("_base", "_body", "_full", "_hdr", "_mid", "_orig", "_ports", "_sport", "_vtf", "pkt")

    def __init__(self, pkt: XcastPacket, hop_limit: int) -> None:
        self.pkt = pkt
        data = pkt.data
        t = pkt.transport_off
        old_ck = data[t + UDP_CSUM_OFF] << 8 | data[t + UDP_CSUM_OFF + 1]
        self._vtf = data[INNER_OFF:INNER_FLOW_END]   # TC / flow label of the inner header
        self._orig = pkt.orig_src
        self._sport = data[t : t + UDP_DPORT_OFF]
        self._ports = pkt.ports
        self._full = False
        if pkt.encoding is Encoding.XOU:
            old_len = len(data) - t
            new_len = len(data) - pkt.payload_off + UDP_HLEN
            header_sum = checksum.ones_sum(data[t + UDP_HLEN : pkt.bitmap_off]) + checksum.ones_sum(
                data[pkt.dest_off : pkt.payload_off]
            )
            old_words = addr_sum(pkt.inner_src) + addr_sum(pkt.inner_dst) + 2 * old_len + header_sum
            new_words = addr_sum(self._orig) + 2 * new_len
            # a sender that left the checksum out (0 is invalid over IPv6): compute it fully
            self._full = old_ck == 0
            self._base = ((~old_ck) & 0xFFFF) + (0xFFFF - _fold(old_words)) + _fold(new_words)
            self._hdr = _hdr.pack(new_len, NH_UDP, hop_limit)
            self._mid = data[t + UDP_DPORT_OFF : t + UDP_LEN_OFF] + _u16.pack(new_len)   # dport, new length
            self._body = data[pkt.payload_off :]
            self._ports = None
        else:
            ulen = len(data) - t
            old_dport = data[t + UDP_DPORT_OFF] << 8 | data[t + UDP_DPORT_OFF + 1]
            # a sender that left the checksum out (0 is invalid over IPv6): compute it fully
            self._full = old_ck == 0
            self._base = ((~old_ck) & 0xFFFF) + (0xFFFF - _fold(_ALL_XCAST_SUM + old_dport))
            self._hdr = _hdr.pack(ulen, NH_UDP, hop_limit)
            self._mid = data[t + UDP_DPORT_OFF : t + UDP_CSUM_OFF]         # dport, length
            self._body = data[t + UDP_HLEN :]

    def make(self, index: int, dest: bytes, dest_sum: int) -> bytes:
        """The unicast IPv6+UDP packet for destination ``index`` (address ``dest``)."""
        ports = self._ports
        if ports is None:
            mid = self._mid
            extra = 0 if self.pkt.encoding is Encoding.XOU else (mid[0] << 8 | mid[1])
        else:
            extra = ports[index]
            mid = _u16.pack(extra) + self._mid[2:4]
        if self._full:
            udp = self._sport + mid + b"\x00\x00" + self._body
            ck = checksum.udp6_checksum(self._orig, dest, udp)
        else:
            ck = (~_fold(self._base + dest_sum + extra)) & 0xFFFF or 0xFFFF
        return b"".join((self._vtf, self._hdr, self._orig, dest, self._sport, mid, _u16.pack(ck), self._body))


def x2u(pkt: XcastPacket, index: int, dest: bytes, hop_limit: int) -> bytes:
    """One-off X2U (tools and tests); the brancher reuses an :class:`X2uMaker` per packet."""
    return X2uMaker(pkt, hop_limit).make(index, dest, addr_sum(dest))
