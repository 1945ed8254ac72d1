"""XCAST6 v2.0 wire codec: parse and validate, build sender packets.

Layout (offsets from the outer IPv6 header; see shared/docs/xcast6-wire-format.md)::

    0   outer IPv6  TC 010111xx, next header 41, src = sender/last branch, dst = lowest live dest
    40  inner IPv6  next header 43, src = original sender, dst = ff0e::114 (ALL_XCAST_NODES)
    80  routing hdr nh, hdr-ext-len = 2+2N, type 253, segleft 0, N, flags, icmpoff, reserved
    88  bitmap      16 bytes, destination i live when bitmap[i>>3] & (1 << (i&7))
    104 dests       N x 16 bytes
    104+16N         [destination options with the port list] transport (UDP) + payload

Port list (our exact layout; RFC 5058 §8.1/§9.3.2.2 leaves Figure 7 out).  When the routing
header's next header is 60, a destination-options header follows it::

    +0 next header (17)   +1 hdr ext len (8-octet units, first 8 not counted)
    +2 option type 0x27   +3 option data len = 2N
    +4 N x 16-bit ports, big-endian, in destination-index order
    then Pad1 / PadN options up to a multiple of 8 octets

Other options in that header are skipped; option data length != 2N is ``bad_port_list``.  With a
port list the UDP destination port is 0 and X2U writes the destination's listed port.

XCAST6-over-UDP (XOU) is in :mod:`engine.wire.xou`; :func:`parse` recognises both encodings.

Hot path: only ``struct``/slicing/``int.from_bytes``; no scapy, no ``ipaddress`` objects.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from engine.wire import checksum
from engine.wire.reasons import DropReason

ALL_XCAST_NODES = bytes.fromhex("ff0e0000000000000000000000000114")  # ff0e::114
XCAST_TC = 0x5C            # 010111xx with ECN 00
XCAST_TC_MASK = 0xFC       # ECN bits are free
XCAST_FLOW = 0x58000       # flow label the WIDE implementations emit
RH_TYPE_XCAST = 253
MAX_DESTS = 126
FLAG_ANONYMOUS = 0x80
FLAG_DONT_X2U = 0x40
PORT_LIST_OPTION = 0x27
BITMAP_LEN = 16
XOU_FLOW = 0x78580         # XOU flow label: 0x, 'o', 'u', 0 (WIDE report §7)
XOU_MARK_DST = bytes.fromhex("ff3500000000000000000000ffffffff")  # ALL_XCAST_SSM_ID ff35::ffff:ffff

NH_IPV6 = 41
NH_ROUTING = 43
NH_UDP = 17
NH_ICMPV6 = 58
NH_DSTOPTS = 60

ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

_RH_OFF = 80
_BITMAP_OFF = 88
_DEST_OFF = 104

_u16 = struct.Struct("!H")
_outer = struct.Struct("!IHBB")       # vtf, payload length, next header, hop limit
_rh = struct.Struct("!BBBBBBBB")


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
    bitmap_off: ClassVar[int] = 88
    dest_off: ClassVar[int] = 104
    orig_off: ClassVar[int] = 48   # where the original sender's address is

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
        return self.data[8:24]

    @property
    def dst(self) -> bytes:
        """Outer destination."""
        return self.data[24:40]

    @property
    def inner_tc(self) -> int:
        return (self.data[40] << 4 | self.data[41] >> 4) & 0xFF

    @property
    def inner_flow(self) -> int:
        return (self.data[41] & 0x0F) << 16 | self.data[42] << 8 | self.data[43]

    @property
    def inner_src(self) -> bytes:
        """Inner header source (XCAST6: the original sender; XOU: the dummy-source mark)."""
        return self.data[48:64]

    @property
    def inner_dst(self) -> bytes:
        return self.data[64:80]

    @property
    def orig_src(self) -> bytes:
        """The original sender."""
        return self.data[self.orig_off : self.orig_off + 16]

    # --- convenience (not hot path) -------------------------------------------------------
    def dest(self, i: int) -> bytes:
        """Destination *i* as 16 raw bytes."""
        o = self.dest_off + 16 * i
        return self.data[o : o + 16]

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
            udp = d[t : self.bitmap_off] + bytes(16) + d[self.dest_off :]
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
                "src": _txt(self.src),
                "dst": _txt(self.dst),
                "traffic_class": self.tc,
                "flow_label": self.flow,
                "hop_limit": self.hop_limit,
                "payload_length": len(self.data) - 40,
            },
            "inner": {
                "src": _txt(self.inner_src),
                "dst": _txt(self.inner_dst),
                "traffic_class": self.inner_tc,
                "flow_label": self.inner_flow,
            },
            "original_source": _txt(self.orig_src),
            "n": self.n,
            "flags": {
                "value": self.flags,
                "anonymous": self.anonymous,
                "dont_x2u": self.dont_x2u,
            },
            "icmpoff": self.icmpoff,
            "bitmap": self.bitmap.to_bytes(16, "little").hex(),
            "destinations": [
                {
                    "index": i,
                    "address": _txt(self.dest(i)),
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
    bitmap_off: ClassVar[int] = 108
    dest_off: ClassVar[int] = 124
    orig_off: ClassVar[int] = 88


def _txt(a: bytes) -> str:
    return str(ipaddress.IPv6Address(a))


def strip_l2(buf: bytes | bytearray | memoryview) -> tuple[memoryview, int | None] | Reject:
    """Skip an Ethernet header and any 802.1Q/802.1ad tags; return (IPv6 bytes, innermost VLAN id)."""
    mv = memoryview(buf)
    if len(mv) < 14:
        return Reject(DropReason.L2_TRUNCATED, f"frame of {len(mv)} bytes is shorter than an Ethernet header")
    off = 12
    vlan: int | None = None
    etype = mv[off] << 8 | mv[off + 1]
    while etype in (ETH_P_8021Q, ETH_P_8021AD):
        if len(mv) < off + 6:
            return Reject(DropReason.L2_TRUNCATED, f"frame ends inside the VLAN tag at offset {off}")
        vlan = (mv[off + 2] << 8 | mv[off + 3]) & 0x0FFF
        off += 4
        etype = mv[off] << 8 | mv[off + 1]
    if etype != ETH_P_IPV6:
        return Reject(DropReason.NOT_IPV6_ETHERTYPE, f"ethertype 0x{etype:04x} is not IPv6 (0x86dd)")
    return mv[off + 2 :], vlan


def parse(buf: bytes | bytearray | memoryview, *, l2: bool = False) -> XcastPacket | Reject:
    """Parse and validate one XCAST6 (or XOU) packet; never raises for any input bytes.

    ``l2=True``: ``buf`` starts with an Ethernet header, optionally 802.1Q-tagged; trailing
    Ethernet padding beyond the IPv6 payload length is ignored.  Without L2 the buffer must be
    exactly one IPv6 packet.
    """
    vlan: int | None = None
    if l2:
        r = strip_l2(buf)
        if isinstance(r, Reject):
            return r
        mv, vlan = r
        blen = len(mv)
        if blen >= 40:
            plen = mv[4] << 8 | mv[5]
            if blen > 40 + plen:
                mv = mv[: 40 + plen]   # Ethernet padding / FCS
        data = bytes(mv)
    else:
        data = buf if type(buf) is bytes else bytes(buf)
    return _parse_ipv6(data, vlan)


_HDRS = struct.Struct("!IHBB32xIHBB32xBBBBBBBB")   # outer, inner (no addresses), RH fixed part
_XCAST6 = Encoding.XCAST6


def _parse_ipv6(data: bytes, vlan: int | None) -> XcastPacket | Reject:
    """Fast path for the common well-formed RH253+UDP packet; anything else takes the full checker."""
    blen = len(data)
    if blen >= 112:
        (vtf, plen, nh, hl, ivtf, iplen, inh, _, rh_nh, hel, rtype, _, n, flags, icmpoff,
         _) = _HDRS.unpack_from(data)
        if (
            vtf >> 22 == 0x197           # version 6 + TC 010111
            and nh == 41
            and plen + 40 == blen
            and ivtf >> 28 == 6
            and iplen == plen - 40
            and inh == 43
            and rtype == 253
            and rh_nh == 17
            and 0 < n <= 126
            and hel == 2 + 2 * n
            and data[64:80] == ALL_XCAST_NODES
        ):
            toff = 104 + 16 * n
            bitmap = int.from_bytes(data[88:104], "little")
            if (
                blen >= toff + 8
                and not bitmap >> n
                and data[toff + 4] << 8 | data[toff + 5] == blen - toff
            ):
                return XcastPacket(data, hl, n, flags, icmpoff, bitmap, 17, 17, toff, toff + 8, None, vlan)
    return parse_checked(data, vlan)


def parse_checked(data: bytes, vlan: int | None = None) -> XcastPacket | Reject:
    """Full validation with a precise reason for every failure (also the reference for the fast path)."""
    blen = len(data)
    if blen < 40:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes is shorter than an IPv6 header (40)")
    vtf, plen, nh, hl = _outer.unpack_from(data, 0)
    if vtf >> 28 != 6:
        return Reject(DropReason.NOT_IPV6, f"IP version {vtf >> 28}, expected 6")
    tc = vtf >> 20 & 0xFF
    flow = vtf & 0xFFFFF
    if tc & XCAST_TC_MASK != XCAST_TC and flow != XOU_FLOW:
        return Reject(
            DropReason.NOT_XCAST_TRAFFIC_CLASS,
            f"traffic class 0x{tc:02x} is not 010111xx (0x5c-0x5f) and flow label is not the XOU mark",
        )
    if nh != NH_IPV6:
        return Reject(DropReason.OUTER_NEXT_HEADER, f"outer next header {nh}, expected 41 (IPv6)")
    if plen + 40 != blen:
        if plen + 40 > blen:
            return Reject(DropReason.TRUNCATED, f"payload length {plen} but only {blen - 40} bytes follow")
        return Reject(DropReason.BAD_PAYLOAD_LENGTH, f"payload length {plen} but {blen - 40} bytes follow")
    if blen < 80:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes ends inside the inner IPv6 header")
    ivtf, iplen, inh, _ihl = _outer.unpack_from(data, 40)
    if ivtf >> 28 != 6:
        return Reject(DropReason.INNER_NOT_IPV6, f"inner IP version {ivtf >> 28}, expected 6")
    if iplen != plen - 40:
        return Reject(
            DropReason.BAD_INNER_PAYLOAD_LENGTH, f"inner payload length {iplen}, expected {plen - 40}"
        )
    inner_dst = data[64:80]
    if inner_dst != ALL_XCAST_NODES:
        if inner_dst == XOU_MARK_DST:
            return engine.wire.xou.parse_xou_body(data, vlan)
        return Reject(
            DropReason.WRONG_INNER_DESTINATION,
            f"inner destination {_txt(inner_dst)} is neither ff0e::114 nor the XOU mark ff35::ffff:ffff",
        )
    if inh != NH_ROUTING:
        return Reject(DropReason.INNER_NEXT_HEADER, f"inner next header {inh}, expected 43 (routing)")
    if blen < _DEST_OFF:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes ends inside the routing header/bitmap")
    rh_nh, hel, rtype, _segleft, n, flags, icmpoff, _rsv = _rh.unpack_from(data, _RH_OFF)
    if rtype != RH_TYPE_XCAST:
        return Reject(DropReason.WRONG_ROUTING_TYPE, f"routing type {rtype}, expected 253")
    if not 1 <= n <= MAX_DESTS:
        return Reject(DropReason.N_OUT_OF_RANGE, f"N = {n}, must be 1..126")
    if hel != 2 + 2 * n:
        return Reject(DropReason.BAD_HDR_EXT_LEN, f"hdr ext len {hel}, expected 2+2N = {2 + 2 * n}")
    toff = _DEST_OFF + 16 * n
    if blen < toff:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes ends inside the destination list ({toff} needed)")
    bitmap = int.from_bytes(data[_BITMAP_OFF:_DEST_OFF], "little")
    if bitmap >> n:
        return Reject(
            DropReason.BITMAP_BEYOND_N,
            f"bitmap bit {bitmap.bit_length() - 1} set but N = {n}",
        )
    ports: tuple[int, ...] | None = None
    transport = rh_nh
    if rh_nh == NH_DSTOPTS:
        r = _parse_port_list(data, toff, n)
        if isinstance(r, Reject):
            return r
        transport, ports, toff = r
    payload_off = toff
    if transport == NH_UDP:
        if blen - toff < 8:
            return Reject(DropReason.BAD_TRANSPORT_LENGTH, f"{blen - toff} bytes left for the UDP header")
        ulen = data[toff + 4] << 8 | data[toff + 5]
        if ulen != blen - toff:
            return Reject(
                DropReason.BAD_TRANSPORT_LENGTH, f"UDP length {ulen} but {blen - toff} bytes follow"
            )
        payload_off = toff + 8
    return XcastPacket(
        data=data,
        hop_limit=hl,
        n=n,
        flags=flags,
        icmpoff=icmpoff,
        bitmap=bitmap,
        rh_next_header=rh_nh,
        transport=transport,
        transport_off=toff,
        payload_off=payload_off,
        ports=ports,
        vlan=vlan,
    )


def _parse_port_list(data: bytes, off: int, n: int) -> tuple[int, tuple[int, ...] | None, int] | Reject:
    """Destination-options header at ``off``: (next header, ports or None, offset after it)."""
    blen = len(data)
    if blen < off + 8:
        return Reject(DropReason.BAD_PORT_LIST, "destination-options header truncated")
    nh = data[off]
    end = off + 8 + 8 * data[off + 1]
    if end > blen:
        return Reject(DropReason.BAD_PORT_LIST, f"destination-options header length {end - off} past the end")
    ports: tuple[int, ...] | None = None
    p = off + 2
    while p < end:
        otype = data[p]
        if otype == 0:          # Pad1
            p += 1
            continue
        if p + 2 > end:
            return Reject(DropReason.BAD_PORT_LIST, f"option at offset {p} truncated")
        olen = data[p + 1]
        if p + 2 + olen > end:
            return Reject(DropReason.BAD_PORT_LIST, f"option 0x{otype:02x} at {p} runs past the header")
        if otype == PORT_LIST_OPTION:
            if olen != 2 * n:
                return Reject(DropReason.BAD_PORT_LIST, f"port list has {olen} bytes, expected 2N = {2 * n}")
            ports = struct.unpack_from(f"!{n}H", data, p + 2)
        p += 2 + olen
    return nh, ports, end


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------


def _ipv6_header(tc: int, flow: int, plen: int, nh: int, hl: int, src: bytes, dst: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28 | (tc & 0xFF) << 20 | (flow & 0xFFFFF), plen, nh, hl) + src + dst


def bitmap_bytes(bitmap: int) -> bytes:
    """16-byte LSB-first bitmap field for an int where bit i = destination i."""
    return bitmap.to_bytes(BITMAP_LEN, "little")


def port_list_header(ports: list[int] | tuple[int, ...], next_header: int = NH_UDP) -> bytes:
    """Destination-options header carrying the port list (layout in the module docstring)."""
    body = bytes([PORT_LIST_OPTION, 2 * len(ports)]) + struct.pack(f"!{len(ports)}H", *ports)
    total = 2 + len(body)
    pad = (-total) % 8
    if pad == 1:
        body += b"\x00"
    elif pad:
        body += bytes([1, pad - 2]) + bytes(pad - 2)
    total += pad
    return bytes([next_header, total // 8 - 1]) + body


def _check_dests(dests: list[bytes] | tuple[bytes, ...]) -> None:
    if not 1 <= len(dests) <= MAX_DESTS:
        raise ValueError(f"{len(dests)} destinations: XCAST6 carries 1..126")
    for d in dests:
        if len(d) != 16:
            raise ValueError(f"destination must be 16 bytes, got {len(d)}")


def build_xcast(
    src: bytes,
    dests: list[bytes] | tuple[bytes, ...],
    payload: bytes = b"",
    *,
    sport: int = 0,
    dport: int = 0,
    ports: list[int] | tuple[int, ...] | None = None,
    hop_limit: int = 64,
    flags: int = 0,
    icmpoff: int = 0,
    bitmap: int | None = None,
    outer_src: bytes | None = None,
    outer_dst: bytes | None = None,
    tc: int = XCAST_TC,
    flow: int = XCAST_FLOW,
    inner_tc: int = 0,
    inner_flow: int = 0,
    inner_hop_limit: int = 64,
    transport: int = NH_UDP,
    transport_bytes: bytes | None = None,
) -> bytes:
    """Build an XCAST6 v2.0 packet as a sender emits it (all bits live unless ``bitmap``).

    With ``transport=17`` (default) a UDP header is built around ``payload`` with the checksum
    over the pseudo-header (original source, ff0e::114).  With ``ports`` a port-list
    destination-options header is added and the UDP destination port is 0.  For another
    transport pass its complete bytes in ``transport_bytes``.
    """
    _check_dests(dests)
    n = len(dests)
    if bitmap is None:
        bitmap = (1 << n) - 1
    if bitmap >> n:
        raise ValueError(f"bitmap has bits at or beyond N = {n}")
    if ports is not None and len(ports) != n:
        raise ValueError(f"port list has {len(ports)} entries for {n} destinations")
    if transport == NH_UDP and transport_bytes is None:
        ulen = 8 + len(payload)
        if ulen > 0xFFFF:
            raise ValueError(f"UDP datagram of {ulen} bytes is too long")
        dp = 0 if ports is not None else dport
        hdr = struct.pack("!HHHH", sport, dp, ulen, 0)
        ck = checksum.udp6_checksum(src, ALL_XCAST_NODES, hdr + payload)
        tbytes = struct.pack("!HHHH", sport, dp, ulen, ck) + payload
    else:
        tbytes = transport_bytes if transport_bytes is not None else payload
    rh_nh = transport
    opts = b""
    if ports is not None:
        opts = port_list_header(ports, transport)
        rh_nh = NH_DSTOPTS
    rh = bytes([rh_nh, 2 + 2 * n, RH_TYPE_XCAST, 0, n, flags & 0xFF, icmpoff & 0xFF, 0])
    rh += bitmap_bytes(bitmap) + b"".join(dests)
    inner_payload = rh + opts + tbytes
    inner = _ipv6_header(inner_tc, inner_flow, len(inner_payload), NH_ROUTING, inner_hop_limit,
                         src, ALL_XCAST_NODES)
    if outer_dst is None:
        if not bitmap:
            raise ValueError("no live destination to put in the outer destination")
        outer_dst = dests[(bitmap & -bitmap).bit_length() - 1]
    plen = 40 + len(inner_payload)
    if plen > 0xFFFF:
        raise ValueError(f"packet payload of {plen} bytes needs a jumbogram")
    outer = _ipv6_header(tc, flow, plen, NH_IPV6, hop_limit, outer_src or src, outer_dst)
    return outer + inner + inner_payload


def build_l2(ipv6: bytes, *, dst_mac: bytes, src_mac: bytes, vlan: int | None = None) -> bytes:
    """Frame an IPv6 packet in Ethernet, optionally 802.1Q-tagged (for tests and tools)."""
    tag = b"" if vlan is None else struct.pack("!HH", ETH_P_8021Q, vlan & 0x0FFF)
    return dst_mac + src_mac + tag + _u16.pack(ETH_P_IPV6) + ipv6


# XOU lives in its own module but parse() dispatches to it; imported last (module reference,
# resolved at call time) so either module can be imported first.
import engine.wire.xou  # noqa: E402
