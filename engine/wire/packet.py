"""The parsed-packet model both encodings share: :class:`XcastPacket`, :class:`XouPacket`, :class:`Reject`.

It sits below :mod:`engine.wire.codec` (RH253 parsing and building) and :mod:`engine.wire.xou`
(XCAST6 over UDP) so that neither has to import the other for it: the codec dispatches to the
XOU parser, the XOU module builds :class:`XouPacket` objects, and both use the header builders
here.  Offsets come from :mod:`engine.wire.layout`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from engine.wire import checksum
from engine.wire.layout import (
    ALL_XCAST_NODES,
    BITMAP_LEN,
    BITMAP_OFF,
    DEST_LEN,
    DEST_OFF,
    FLAG_ANONYMOUS,
    FLAG_DONT_X2U,
    INNER_DST_END,
    INNER_DST_OFF,
    INNER_OFF,
    INNER_SRC_END,
    INNER_SRC_OFF,
    IP6_ADDR_LEN,
    IP6_HLEN,
    NH_ICMPV6,
    NH_UDP,
    OUTER_DST_END,
    OUTER_DST_OFF,
    OUTER_SRC_END,
    OUTER_SRC_OFF,
    XOU_BITMAP_OFF,
    XOU_DEST_OFF,
    XOU_ORIG_OFF,
)
from engine.wire.reasons import DropReason


class Encoding(StrEnum):
    """Which XCAST6 encoding a packet uses."""

    XCAST6 = "xcast6"   # IPv6-in-IPv6 + routing header 253
    XOU = "xou"         # XCAST6 over UDP (WIDE report §7)


@dataclass(slots=True, frozen=True)
class Reject:
    """Why a buffer is not a valid XCAST6 packet: a reason code and a human detail."""

    reason: DropReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(slots=True)
class XcastPacket:
    """A validated XCAST6 packet (either encoding).  ``data`` is the IPv6 packet without L2.

    Offsets (``bitmap_off``, ``dest_off``, ``transport_off``, ``payload_off``) index ``data``.
    ``transport`` is the protocol at ``transport_off`` (17 = UDP); for XOU the application's
    UDP header sits at ``transport_off`` and the real payload at ``payload_off``.
    """

    # per-encoding constants (class attributes; XouPacket overrides them)
    encoding: ClassVar[Encoding] = Encoding.XCAST6
    bitmap_off: ClassVar[int] = BITMAP_OFF
    dest_off: ClassVar[int] = DEST_OFF
    orig_off: ClassVar[int] = INNER_SRC_OFF   # where the original sender's address is

    data: bytes
    hop_limit: int
    n: int
    flags: int
    icmpoff: int
    bitmap: int                # LSB-first: bit i of this int <=> destination i live
    rh_next_header: int        # next header after the routing header (XOU: 17)
    transport: int             # protocol of the header at transport_off
    transport_off: int
    payload_off: int           # application payload (after UDP header / XOU header)
    ports: tuple[int, ...] | None = None
    vlan: int | None = None

    # --- header fields, derived on demand (the hot path does not need them) --------------
    @property
    def tc(self) -> int:
        return (self.data[0] << 4 | self.data[1] >> 4) & 0xFF

    @property
    def flow(self) -> int:
        return (self.data[1] & 0x0F) << 16 | self.data[2] << 8 | self.data[3]

    @property
    def src(self) -> bytes:
        """Outer source."""
        return self.data[OUTER_SRC_OFF:OUTER_SRC_END]

    @property
    def dst(self) -> bytes:
        """Outer destination."""
        return self.data[OUTER_DST_OFF:OUTER_DST_END]

    @property
    def inner_tc(self) -> int:
        return (self.data[INNER_OFF] << 4 | self.data[INNER_OFF + 1] >> 4) & 0xFF

    @property
    def inner_flow(self) -> int:
        d, o = self.data, INNER_OFF
        return (d[o + 1] & 0x0F) << 16 | d[o + 2] << 8 | d[o + 3]

    @property
    def inner_src(self) -> bytes:
        """Inner header source (XCAST6: the original sender; XOU: the dummy-source mark)."""
        return self.data[INNER_SRC_OFF:INNER_SRC_END]

    @property
    def inner_dst(self) -> bytes:
        return self.data[INNER_DST_OFF:INNER_DST_END]

    @property
    def orig_src(self) -> bytes:
        """The original sender."""
        return self.data[self.orig_off : self.orig_off + IP6_ADDR_LEN]

    # --- convenience (not hot path) -------------------------------------------------------
    def dest(self, i: int) -> bytes:
        """Destination *i* as 16 raw bytes."""
        o = self.dest_off + DEST_LEN * i
        return self.data[o : o + DEST_LEN]

    @property
    def destinations(self) -> list[bytes]:
        return [self.dest(i) for i in range(self.n)]

    def is_live(self, i: int) -> bool:
        return bool(self.bitmap >> i & 1)

    @property
    def live_indexes(self) -> list[int]:
        return [i for i in range(self.n) if self.bitmap >> i & 1]

    @property
    def anonymous(self) -> bool:
        return bool(self.flags & FLAG_ANONYMOUS)

    @property
    def dont_x2u(self) -> bool:
        return bool(self.flags & FLAG_DONT_X2U)

    @property
    def payload(self) -> bytes:
        return self.data[self.payload_off :]

    @property
    def udp_ports(self) -> tuple[int, int] | None:
        """(source port, destination port) of the UDP header, if the transport is UDP."""
        if self.transport != NH_UDP:
            return None
        o = self.transport_off
        sport, dport = struct.unpack_from("!HH", self.data, o)
        return sport, dport

    def udp_checksum_ok(self) -> bool | None:
        """Is the UDP checksum right for XCAST6 (pseudo-header: original sender, ff0e::114)?

        XOU: computed over the mark header's pseudo-header with the bitmap zeroed.  ``None``
        when the transport is not UDP.
        """
        if self.transport != NH_UDP:
            return None
        d = self.data
        t = self.transport_off
        if self.encoding is Encoding.XOU:
            udp = d[t : self.bitmap_off] + bytes(BITMAP_LEN) + d[self.dest_off :]
            src, dst = self.inner_src, self.inner_dst
        else:
            udp = d[t:]
            src, dst = self.orig_src, ALL_XCAST_NODES
        total = checksum.pseudo_header_sum(src, dst, len(udp)) + checksum.ones_sum(udp)
        return checksum.fold(total) == 0xFFFF

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description (addresses as text) for ``decode --json`` and the API."""
        ports = self.udp_ports
        return {
            "encoding": self.encoding.value,
            "vlan": self.vlan,
            "outer": {
                "src": addr_text(self.src),
                "dst": addr_text(self.dst),
                "traffic_class": self.tc,
                "flow_label": self.flow,
                "hop_limit": self.hop_limit,
                "payload_length": len(self.data) - IP6_HLEN,
            },
            "inner": {
                "src": addr_text(self.inner_src),
                "dst": addr_text(self.inner_dst),
                "traffic_class": self.inner_tc,
                "flow_label": self.inner_flow,
            },
            "original_source": addr_text(self.orig_src),
            "n": self.n,
            "flags": {
                "value": self.flags,
                "anonymous": self.anonymous,
                "dont_x2u": self.dont_x2u,
            },
            "icmpoff": self.icmpoff,
            "bitmap": self.bitmap.to_bytes(BITMAP_LEN, "little").hex(),
            "destinations": [
                {
                    "index": i,
                    "address": addr_text(self.dest(i)),
                    "live": self.is_live(i),
                    **({"port": self.ports[i]} if self.ports is not None else {}),
                }
                for i in range(self.n)
            ],
            "transport": {
                "protocol": self.transport,
                "name": {NH_UDP: "udp", NH_ICMPV6: "icmpv6"}.get(self.transport, str(self.transport)),
                **({"sport": ports[0], "dport": ports[1], "checksum_ok": self.udp_checksum_ok()}
                   if ports else {}),
            },
            "payload_length": len(self.data) - self.payload_off,
        }


class XouPacket(XcastPacket):
    """An XCAST6-over-UDP packet: same fields, XOU offsets (see :mod:`engine.wire.xou`)."""

    __slots__ = ()
    encoding: ClassVar[Encoding] = Encoding.XOU
    bitmap_off: ClassVar[int] = XOU_BITMAP_OFF
    dest_off: ClassVar[int] = XOU_DEST_OFF
    orig_off: ClassVar[int] = XOU_ORIG_OFF


def addr_text(a: bytes) -> str:
    """An address as text (for details, ``to_dict`` and tools; not hot path)."""
    return str(ipaddress.IPv6Address(a))


def ipv6_header(tc: int, flow: int, plen: int, nh: int, hl: int, src: bytes, dst: bytes) -> bytes:
    """One IPv6 header (version 6, the given traffic class and flow label) for the builders."""
    return struct.pack("!IHBB", 6 << 28 | (tc & 0xFF) << 20 | (flow & 0xFFFFF), plen, nh, hl) + src + dst


def bitmap_bytes(bitmap: int) -> bytes:
    """16-byte LSB-first bitmap field for an int where bit i = destination i."""
    return bitmap.to_bytes(BITMAP_LEN, "little")
