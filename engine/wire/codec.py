"""XCAST6 v2.0 wire codec: parse and validate, build sender packets.

The packet layout (outer IPv6, inner IPv6, routing header type 253, bitmap, destinations,
transport) is drawn and named once, in :mod:`engine.wire.layout`; see also
shared/docs/xcast6-wire-format.md.

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

import struct
from collections.abc import Callable

from engine.wire import checksum
from engine.wire.layout import (
    ALL_XCAST_NODES,
    BITMAP_LEN,
    BITMAP_OFF,
    DEST_LEN,
    DEST_OFF,
    DOPT_HDR_EXT_LEN_OFF,
    DOPT_NH_OFF,
    DOPT_OPTIONS_OFF,
    DOPT_UNIT,
    ETH_HLEN,
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IPV6,
    ETH_TYPE_OFF,
    FAST_MIN_LEN,
    FLAG_ANONYMOUS,
    FLAG_DONT_X2U,
    INNER_DST_END,
    INNER_DST_OFF,
    INNER_OFF,
    IP6_HLEN,
    IP6_PLEN_OFF,
    MAX_DESTS,
    NH_DSTOPTS,
    NH_ICMPV6,
    NH_IPV6,
    NH_ROUTING,
    NH_UDP,
    OPT_PAD1,
    OPT_PADN,
    PORT_LIST_OPTION,
    RH_FIXED_LEN,
    RH_OFF,
    RH_TYPE_XCAST,
    UDP_HLEN,
    UDP_LEN_OFF,
    VLAN_TAG_LEN,
    VLAN_TCI_OFF,
    VLAN_VID_MASK,
    XCAST_FLOW,
    XCAST_TC,
    XCAST_TC_MASK,
    XOU_FLOW,
    XOU_MARK_DST,
)
from engine.wire.packet import Encoding, Reject, XcastPacket, XouPacket, bitmap_bytes
from engine.wire.packet import addr_text as _txt
from engine.wire.packet import ipv6_header as _ipv6_header
from engine.wire.reasons import DropReason
from engine.wire.xou import parse_xou_body

# The codec is where callers have always found the wire constants and the packet model; their
# one definition is in engine.wire.layout and engine.wire.packet, re-exported here.
__all__ = [
    "ALL_XCAST_NODES", "BITMAP_LEN", "ETH_P_8021AD", "ETH_P_8021Q", "ETH_P_IPV6", "FLAG_ANONYMOUS",
    "FLAG_DONT_X2U", "MAX_DESTS", "NH_DSTOPTS", "NH_ICMPV6", "NH_IPV6", "NH_ROUTING", "NH_UDP",
    "PORT_LIST_OPTION", "RH_TYPE_XCAST", "XCAST_FLOW", "XCAST_TC", "XCAST_TC_MASK", "XOU_FLOW",
    "XOU_MARK_DST", "Encoding", "Reject", "XcastPacket", "XouPacket", "bitmap_bytes", "build_l2",
    "build_xcast", "parse", "parse_checked", "port_list_header", "strip_l2",
]

_u16 = struct.Struct("!H")
_outer = struct.Struct("!IHBB")       # vtf, payload length, next header, hop limit
_rh = struct.Struct("!BBBBBBBB")

def strip_l2(buf: bytes | bytearray | memoryview) -> tuple[memoryview, int | None] | Reject:
    """Skip an Ethernet header and any 802.1Q/802.1ad tags; return (IPv6 bytes, innermost VLAN id)."""
    mv = memoryview(buf)
    if len(mv) < ETH_HLEN:
        return Reject(DropReason.L2_TRUNCATED, f"frame of {len(mv)} bytes is shorter than an Ethernet header")
    off = ETH_TYPE_OFF
    vlan: int | None = None
    etype = mv[off] << 8 | mv[off + 1]
    while etype in (ETH_P_8021Q, ETH_P_8021AD):
        if len(mv) < off + VLAN_TAG_LEN + 2:
            return Reject(DropReason.L2_TRUNCATED, f"frame ends inside the VLAN tag at offset {off}")
        vlan = (mv[off + VLAN_TCI_OFF] << 8 | mv[off + VLAN_TCI_OFF + 1]) & VLAN_VID_MASK
        off += VLAN_TAG_LEN
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
        if blen >= IP6_HLEN:
            plen = mv[IP6_PLEN_OFF] << 8 | mv[IP6_PLEN_OFF + 1]
            if blen > IP6_HLEN + plen:
                mv = mv[: IP6_HLEN + plen]   # Ethernet padding / FCS
        data = bytes(mv)
    else:
        data = buf if type(buf) is bytes else bytes(buf)
    return _parse_ipv6(data, vlan)


_HDRS = struct.Struct("!IHBB32xIHBB32xBBBBBBBB")   # outer, inner (no addresses), RH fixed part
assert _HDRS.size == RH_OFF + RH_FIXED_LEN
# version 6 and the top six traffic-class bits 010111 (the ECN bits are free): vtf >> 22
_V6_XCAST_TC = 6 << 6 | XCAST_TC >> 2          # 0x197
_INNER_DST = slice(INNER_DST_OFF, INNER_DST_END)   # a constant slice: cheaper than building one
_BITMAP = slice(BITMAP_OFF, DEST_OFF)


def _parse_ipv6(
    data: bytes,
    vlan: int | None,
    # Layout constants bound as positional defaults (never passed): locals instead of module
    # globals.  This runs once per packet; the global loads cost it ~5-10 % in a process with a
    # full table (bench engine), where the module dict is out of the CPU caches.
    _hdrs: Callable[[bytes], tuple[int, ...]] = _HDRS.unpack_from,
    _min_len: int = FAST_MIN_LEN,
    _v6_xcast_tc: int = _V6_XCAST_TC,
    _nh_ipv6: int = NH_IPV6,
    _ip6_hlen: int = IP6_HLEN,
    _nh_routing: int = NH_ROUTING,
    _rh_type: int = RH_TYPE_XCAST,
    _nh_udp: int = NH_UDP,
    _max_dests: int = MAX_DESTS,
    _inner_dst: slice = _INNER_DST,
    _all_xcast_nodes: bytes = ALL_XCAST_NODES,
    _bitmap: slice = _BITMAP,
    _dest_off: int = DEST_OFF,
    _dest_len: int = DEST_LEN,
    _udp_len_off: int = UDP_LEN_OFF,
    _udp_hlen: int = UDP_HLEN,
    _packet: type[XcastPacket] = XcastPacket,
) -> XcastPacket | Reject:
    """Fast path for the common well-formed RH253+UDP packet; anything else takes the full checker."""
    blen = len(data)
    if blen >= _min_len:
        (vtf, plen, nh, hl, ivtf, iplen, inh, _, rh_nh, hel, rtype, _, n, flags, icmpoff,
         _) = _hdrs(data)
        if (
            vtf >> 22 == _v6_xcast_tc
            and nh == _nh_ipv6
            and plen + _ip6_hlen == blen
            and ivtf >> 28 == 6
            and iplen == plen - _ip6_hlen
            and inh == _nh_routing
            and rtype == _rh_type
            and rh_nh == _nh_udp
            and 0 < n <= _max_dests
            and hel == 2 + 2 * n
            and data[_inner_dst] == _all_xcast_nodes
        ):
            toff = _dest_off + _dest_len * n
            bitmap = int.from_bytes(data[_bitmap], "little")
            u = toff + _udp_len_off
            if (
                blen >= toff + _udp_hlen
                and not bitmap >> n
                and data[u] << 8 | data[u + 1] == blen - toff
            ):
                return _packet(data, hl, n, flags, icmpoff, bitmap, _nh_udp, _nh_udp, toff,
                               toff + _udp_hlen, None, vlan)
    return parse_checked(data, vlan)


def parse_quoted(quote: bytes) -> XcastPacket | Reject:
    """An XCAST6 packet as an ICMPv6 error quotes it: the same validation, cut short allowed.

    A quote holds the packet from its first byte but often not to its end (RFC 4443 §2.4(c):
    the error stays within 1,280 bytes; some routers quote less).  When the outer payload
    length says the packet was longer than the quote, every check on bytes that are present
    is made as for a whole packet (lengths against the *declared* length), and validation
    stops where the quote ends, at the earliest after the bitmap: the headers up to the bitmap
    must be there.  Offsets of the returned packet (``transport_off``, ``payload_off``) may then
    point past ``data``.  Bytes after the declared end (an RFC 4884 zero pad) are ignored.
    """
    if len(quote) >= IP6_HLEN:
        declared = IP6_HLEN + (quote[IP6_PLEN_OFF] << 8 | quote[IP6_PLEN_OFF + 1])
        if declared <= len(quote):
            return parse_checked(quote[:declared])
        return parse_checked(quote, cut=True)
    return parse_checked(quote)


def parse_checked(data: bytes, vlan: int | None = None, *, cut: bool = False) -> XcastPacket | Reject:
    """Full validation with a precise reason for every failure (also the reference for the fast path).

    ``cut``: ``data`` is the first part of a longer packet (:func:`parse_quoted`).
    """
    blen = len(data)
    if blen < IP6_HLEN:
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
    if plen + IP6_HLEN != blen and not (cut and plen + IP6_HLEN > blen):
        if plen + IP6_HLEN > blen:
            return Reject(DropReason.TRUNCATED,
                          f"payload length {plen} but only {blen - IP6_HLEN} bytes follow")
        return Reject(DropReason.BAD_PAYLOAD_LENGTH,
                      f"payload length {plen} but {blen - IP6_HLEN} bytes follow")
    if blen < INNER_OFF + IP6_HLEN:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes ends inside the inner IPv6 header")
    ivtf, iplen, inh, _ihl = _outer.unpack_from(data, INNER_OFF)
    if ivtf >> 28 != 6:
        return Reject(DropReason.INNER_NOT_IPV6, f"inner IP version {ivtf >> 28}, expected 6")
    if iplen != plen - IP6_HLEN:
        return Reject(
            DropReason.BAD_INNER_PAYLOAD_LENGTH, f"inner payload length {iplen}, expected {plen - IP6_HLEN}"
        )
    inner_dst = data[INNER_DST_OFF:INNER_DST_END]
    if inner_dst != ALL_XCAST_NODES:
        if inner_dst == XOU_MARK_DST:
            return parse_xou_body(data, vlan)
        return Reject(
            DropReason.WRONG_INNER_DESTINATION,
            f"inner destination {_txt(inner_dst)} is neither ff0e::114 nor the XOU mark ff35::ffff:ffff",
        )
    if inh != NH_ROUTING:
        return Reject(DropReason.INNER_NEXT_HEADER, f"inner next header {inh}, expected 43 (routing)")
    if blen < DEST_OFF:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes ends inside the routing header/bitmap")
    rh_nh, hel, rtype, _segleft, n, flags, icmpoff, _rsv = _rh.unpack_from(data, RH_OFF)
    if rtype != RH_TYPE_XCAST:
        return Reject(DropReason.WRONG_ROUTING_TYPE, f"routing type {rtype}, expected 253")
    if not 1 <= n <= MAX_DESTS:
        return Reject(DropReason.N_OUT_OF_RANGE, f"N = {n}, must be 1..126")
    if hel != 2 + 2 * n:
        return Reject(DropReason.BAD_HDR_EXT_LEN, f"hdr ext len {hel}, expected 2+2N = {2 + 2 * n}")
    toff = DEST_OFF + DEST_LEN * n
    if blen < toff and not cut:
        return Reject(DropReason.TRUNCATED, f"{blen} bytes ends inside the destination list ({toff} needed)")
    bitmap = int.from_bytes(data[BITMAP_OFF:DEST_OFF], "little")
    if bitmap >> n:
        return Reject(
            DropReason.BITMAP_BEYOND_N,
            f"bitmap bit {bitmap.bit_length() - 1} set but N = {n}",
        )
    ports: tuple[int, ...] | None = None
    transport = rh_nh
    end = plen + IP6_HLEN          # the declared end: blen, unless the packet is cut
    if rh_nh == NH_DSTOPTS and blen >= toff:
        whole = (blen >= toff + DOPT_UNIT
                 and blen >= toff + DOPT_UNIT + DOPT_UNIT * data[toff + DOPT_HDR_EXT_LEN_OFF])
        if whole or not cut:       # a cut port list: validation ends here
            r = _parse_port_list(data, toff, n)
            if isinstance(r, Reject):
                return r
            transport, ports, toff = r
    payload_off = toff
    if transport == NH_UDP and blen >= toff:
        if end - toff < UDP_HLEN or (blen - toff < UDP_HLEN and not cut):
            return Reject(DropReason.BAD_TRANSPORT_LENGTH, f"{end - toff} bytes left for the UDP header")
        if blen - toff >= UDP_HLEN:
            ulen = data[toff + UDP_LEN_OFF] << 8 | data[toff + UDP_LEN_OFF + 1]
            if ulen != end - toff:
                return Reject(
                    DropReason.BAD_TRANSPORT_LENGTH, f"UDP length {ulen} but {end - toff} bytes follow"
                )
        payload_off = toff + UDP_HLEN
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
    if blen < off + DOPT_UNIT:
        return Reject(DropReason.BAD_PORT_LIST, "destination-options header truncated")
    nh = data[off + DOPT_NH_OFF]
    end = off + DOPT_UNIT + DOPT_UNIT * data[off + DOPT_HDR_EXT_LEN_OFF]
    if end > blen:
        return Reject(DropReason.BAD_PORT_LIST, f"destination-options header length {end - off} past the end")
    ports: tuple[int, ...] | None = None
    p = off + DOPT_OPTIONS_OFF
    while p < end:
        otype = data[p]
        if otype == OPT_PAD1:
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


def port_list_header(ports: list[int] | tuple[int, ...], next_header: int = NH_UDP) -> bytes:
    """Destination-options header carrying the port list (layout in the module docstring)."""
    body = bytes([PORT_LIST_OPTION, 2 * len(ports)]) + struct.pack(f"!{len(ports)}H", *ports)
    total = DOPT_OPTIONS_OFF + len(body)
    pad = (-total) % DOPT_UNIT
    if pad == 1:
        body += bytes([OPT_PAD1])
    elif pad:
        body += bytes([OPT_PADN, pad - 2]) + bytes(pad - 2)
    total += pad
    return bytes([next_header, total // DOPT_UNIT - 1]) + body


def _check_dests(dests: list[bytes] | tuple[bytes, ...]) -> None:
    if not 1 <= len(dests) <= MAX_DESTS:
        raise ValueError(f"{len(dests)} destinations: XCAST6 carries 1..126")
    for d in dests:
        if len(d) != DEST_LEN:
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
        ulen = UDP_HLEN + len(payload)
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
    plen = IP6_HLEN + len(inner_payload)
    if plen > 0xFFFF:
        raise ValueError(f"packet payload of {plen} bytes needs a jumbogram")
    outer = _ipv6_header(tc, flow, plen, NH_IPV6, hop_limit, outer_src or src, outer_dst)
    return outer + inner + inner_payload


def build_l2(ipv6: bytes, *, dst_mac: bytes, src_mac: bytes, vlan: int | None = None) -> bytes:
    """Frame an IPv6 packet in Ethernet, optionally 802.1Q-tagged (for tests and tools)."""
    tag = b"" if vlan is None else struct.pack("!HH", ETH_P_8021Q, vlan & 0x0FFF)
    return dst_mac + src_mac + tag + _u16.pack(ETH_P_IPV6) + ipv6
