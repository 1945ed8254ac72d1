"""ICMPv6 error messages (RFC 4443): build the engine's errors, read the ones OAM tools receive.

An error is an IPv6 header (next header 58), the 8-byte ICMPv6 header (type, code, checksum,
32-bit parameter: the MTU of Packet Too Big, zero for Time Exceeded and Destination
Unreachable) and as much of the invoking packet as fits without the error exceeding the IPv6
minimum MTU of 1,280 bytes (RFC 4443 §2.4(c)): up to 1,232 bytes of it.  The quote starts with
the invoking packet's outer IPv6 header, so a sender's kernel reads the destination its path-MTU
entry is for from it (the outer destination), and its bitmap says which destinations the
reporting node held.

The reading side (:func:`parse_icmp6`, :func:`parse_quote`) is for ``ping``/``traceroute``:
it never raises, and a quote cut short (by the 1,280-byte rule or a router quoting less) yields
what fits (destinations, UDP ports).  Offsets and type numbers are in :mod:`engine.wire.layout`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from engine.wire.checksum import fold, icmp6_checksum, ones_sum, pseudo_header_sum
from engine.wire.layout import (
    ALL_XCAST_NODES,
    BITMAP_LEN,
    BITMAP_OFF,
    DEST_LEN,
    DEST_OFF,
    DOPT_HDR_EXT_LEN_OFF,
    DOPT_NH_OFF,
    DOPT_UNIT,
    ICMP6_CSUM_OFF,
    ICMP6_DEST_UNREACH,
    ICMP6_EXT_LEN_OFF,
    ICMP6_EXT_UNIT,
    ICMP6_HLEN,
    ICMP6_INFO_MIN,
    ICMP6_PARAM_OFF,
    ICMP6_TIME_EXCEEDED,
    ICMP_EXT_CLASS_IIO,
    ICMP_EXT_HLEN,
    ICMP_EXT_MIN_ORIG,
    ICMP_EXT_OBJ_HLEN,
    ICMP_EXT_VERSION,
    IIO_AFI_IPV6,
    IIO_CTYPE_IFINDEX,
    IIO_CTYPE_IPADDR,
    IIO_ROLE_INCOMING,
    IIO_ROLE_SHIFT,
    INNER_DST_END,
    INNER_DST_OFF,
    INNER_NH_OFF,
    INNER_OFF,
    INNER_SRC_END,
    INNER_SRC_OFF,
    IP6_DST_OFF,
    IP6_HLEN,
    IP6_HLIM_OFF,
    IP6_NH_OFF,
    IP6_PLEN_OFF,
    IP6_SRC_OFF,
    IPV6_MIN_MTU,
    NH_DSTOPTS,
    NH_ICMPV6,
    NH_IPV6,
    NH_ROUTING,
    NH_UDP,
    OUTER_DST_END,
    OUTER_DST_OFF,
    OUTER_SRC_END,
    OUTER_SRC_OFF,
    RH_FLAGS_OFF,
    RH_N_OFF,
    RH_OFF,
    RH_TYPE_OFF,
    RH_TYPE_XCAST,
)
from engine.wire.packet import ipv6_header

#: The most of the invoking packet an error carries (1280 - IPv6 header - ICMPv6 header).
MAX_QUOTE = IPV6_MIN_MTU - IP6_HLEN - ICMP6_HLEN
#: Hop limit of the errors the engine originates (what Linux and Junos use for their own packets).
ERROR_HOP_LIMIT = 64

_icmp_hdr = struct.Struct("!BBHI")


def is_error_type(icmp_type: int) -> bool:
    """ICMPv6 types 0-127 are errors, 128-255 informational (RFC 4443 §2.1)."""
    return icmp_type < ICMP6_INFO_MIN


# The RFC 4884 length byte within the 32-bit parameter (a big-endian int here): its top byte.
_EXT_LEN_SHIFT = 8 * (3 - (ICMP6_EXT_LEN_OFF - ICMP6_PARAM_OFF))

#: The error types RFC 4884 gives a length field, hence extensions (ICMPv6: §4.5 and §4.6 of it).
EXTENSIBLE_TYPES = frozenset({ICMP6_DEST_UNREACH, ICMP6_TIME_EXCEEDED})


def build_error(icmp_type: int, code: int, param: int, src: bytes, dst: bytes, invoking: bytes,
                hop_limit: int = ERROR_HOP_LIMIT, extension: bytes = b"") -> bytes:
    """One complete ICMPv6 error (IPv6 header included), at most 1,280 bytes.

    ``param`` is the 32-bit field after the checksum (the MTU of Packet Too Big); ``invoking``
    is quoted from its first byte, cut at :data:`MAX_QUOTE` bytes.  ``extension``: an RFC 4884
    extension structure (:func:`interface_extension`), Destination Unreachable and Time
    Exceeded only; the quote is then cut to a multiple of 8 bytes that leaves room for it,
    zero-padded to at least 128 bytes, and its length in 64-bit words goes into the first byte
    of ``param``.
    """
    if not is_error_type(icmp_type):
        raise ValueError(f"ICMPv6 type {icmp_type} is not an error type (0-127)")
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("source and destination must be 16-byte IPv6 addresses")
    if extension:
        if icmp_type not in EXTENSIBLE_TYPES:
            raise ValueError(f"ICMPv6 type {icmp_type} has no RFC 4884 length field for an extension")
        room = (MAX_QUOTE - len(extension)) // ICMP6_EXT_UNIT * ICMP6_EXT_UNIT
        if room < ICMP_EXT_MIN_ORIG:
            raise ValueError(f"extension of {len(extension)} bytes leaves no room for the quote")
        orig = invoking[:room]
        padded = max(ICMP_EXT_MIN_ORIG, -(-len(orig) // ICMP6_EXT_UNIT) * ICMP6_EXT_UNIT)
        invoking = orig + bytes(padded - len(orig)) + extension
        param = (param & ~(0xFF << _EXT_LEN_SHIFT)) | (padded // ICMP6_EXT_UNIT) << _EXT_LEN_SHIFT
    msg = bytearray(_icmp_hdr.pack(icmp_type, code, 0, param & 0xFFFFFFFF))
    msg += invoking[:MAX_QUOTE]
    ck = icmp6_checksum(src, dst, msg)
    msg[ICMP6_CSUM_OFF] = ck >> 8
    msg[ICMP6_CSUM_OFF + 1] = ck & 0xFF
    return ipv6_header(0, 0, len(msg), NH_ICMPV6, hop_limit, src, dst) + bytes(msg)


def interface_extension(address: bytes, role: int = IIO_ROLE_INCOMING) -> bytes:
    """An RFC 4884 extension structure with one RFC 5837 Interface Information Object naming
    an interface by its IPv6 address (IP Address Sub-Object only; role: which interface)."""
    if len(address) != 16:
        raise ValueError("the interface address must be a 16-byte IPv6 address")
    obj = _obj_hdr.pack(ICMP_EXT_OBJ_HLEN + 4 + 16, ICMP_EXT_CLASS_IIO,
                        (role & 3) << IIO_ROLE_SHIFT | IIO_CTYPE_IPADDR)
    ip_sub = struct.pack("!HH", IIO_AFI_IPV6, 0) + address
    ext = bytearray(bytes([ICMP_EXT_VERSION << 4, 0, 0, 0]) + obj + ip_sub)
    ck = ~fold(ones_sum(ext)) & 0xFFFF
    ext[2], ext[3] = ck >> 8, ck & 0xFF
    return bytes(ext)


_obj_hdr = struct.Struct("!HBB")


@dataclass(frozen=True, slots=True)
class ExtensionObject:
    """One RFC 4884 extension object: class-num, c-type and the bytes after its 4-byte header."""

    class_num: int
    c_type: int
    payload: bytes


def split_extensions(icmp_type: int, param: int, body: bytes) -> tuple[bytes, tuple[ExtensionObject, ...]]:
    """(original datagram, extension objects) of an error's body.

    Only Destination Unreachable and Time Exceeded whose RFC 4884 length is set carry
    extensions; a body whose extension structure does not check out (version, checksum,
    object lengths) is all original datagram, as for a sender that knows no RFC 4884.
    Never raises.
    """
    words = param >> _EXT_LEN_SHIFT & 0xFF
    if icmp_type not in EXTENSIBLE_TYPES or not words:
        return body, ()
    cut = words * ICMP6_EXT_UNIT
    ext = body[cut:]
    if len(ext) < ICMP_EXT_HLEN or ext[0] >> 4 != ICMP_EXT_VERSION:
        return body, ()
    if (ext[2] or ext[3]) and ones_sum(ext) % 0xFFFF != 0:
        return body, ()
    objs: list[ExtensionObject] = []
    off = ICMP_EXT_HLEN
    while off < len(ext):
        if len(ext) - off < ICMP_EXT_OBJ_HLEN:
            return body, ()
        olen, cls, ctype = _obj_hdr.unpack_from(ext, off)
        if olen < ICMP_EXT_OBJ_HLEN or off + olen > len(ext):
            return body, ()
        objs.append(ExtensionObject(cls, ctype, bytes(ext[off + ICMP_EXT_OBJ_HLEN : off + olen])))
        off += olen
    return body[:cut], tuple(objs)


def interface_address(objects: tuple[ExtensionObject, ...]) -> tuple[int, bytes] | None:
    """(role, IPv6 address) of the first RFC 5837 Interface Information Object with an IPv6
    IP Address Sub-Object, or None."""
    for o in objects:
        if o.class_num != ICMP_EXT_CLASS_IIO or not o.c_type & IIO_CTYPE_IPADDR:
            continue
        off = 4 if o.c_type & IIO_CTYPE_IFINDEX else 0       # the ifIndex sub-object comes first
        p = o.payload
        if len(p) >= off + 4 + 16 and (p[off] << 8 | p[off + 1]) == IIO_AFI_IPV6:
            return o.c_type >> IIO_ROLE_SHIFT, bytes(p[off + 4 : off + 20])
    return None


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """One ICMPv6 message: who sent it, its type/code/parameter, and (errors) the quote."""

    src: bytes
    dst: bytes
    icmp_type: int
    code: int
    param: int           # Packet Too Big: MTU; echo: identifier << 16 | sequence
    body: bytes          # after the 8-byte header: the quoted packet of an error
    checksum_ok: bool

    @property
    def is_error(self) -> bool:
        return is_error_type(self.icmp_type)

    @property
    def mtu(self) -> int:
        return self.param

    @property
    def quote(self) -> bytes:
        """The quoted packet without an RFC 4884 extension structure (and its zero pad, if any)."""
        return split_extensions(self.icmp_type, self.param, self.body)[0]

    @property
    def interface(self) -> tuple[int, bytes] | None:
        """(role, address) of the RFC 5837 interface the error names, if it carries one."""
        return interface_address(split_extensions(self.icmp_type, self.param, self.body)[1])


def parse_icmp_message(src: bytes, dst: bytes, msg: bytes) -> IcmpMessage | None:
    """An ICMPv6 message without its IPv6 header (what a raw ICMPv6 socket returns)."""
    if len(msg) < ICMP6_HLEN:
        return None
    t, c, _ck, param = _icmp_hdr.unpack_from(msg)
    # A right checksum makes the one's-complement sum over pseudo-header and message zero.
    ok = (pseudo_header_sum(src, dst, len(msg), NH_ICMPV6) + ones_sum(msg)) % 0xFFFF == 0
    return IcmpMessage(src, dst, t, c, param, bytes(msg[ICMP6_HLEN:]), ok)


def parse_icmp6(packet: bytes) -> IcmpMessage | None:
    """A whole IPv6 packet whose next header is ICMPv6 (no extension headers), else None."""
    if len(packet) < IP6_HLEN + ICMP6_HLEN or packet[0] >> 4 != 6 or packet[IP6_NH_OFF] != NH_ICMPV6:
        return None
    plen = packet[IP6_PLEN_OFF] << 8 | packet[IP6_PLEN_OFF + 1]
    end = min(len(packet), IP6_HLEN + plen)
    return parse_icmp_message(packet[OUTER_SRC_OFF:OUTER_SRC_END], packet[OUTER_DST_OFF:OUTER_DST_END],
                              packet[IP6_HLEN:end])


@dataclass(frozen=True, slots=True)
class Quote:
    """What an error's quoted packet says (as much as it holds).

    ``kind`` is ``xcast`` (an XCAST6 packet: ``dests`` and ``bitmap`` are the ones it carried),
    ``udp`` (a plain UDP packet: an X2U copy), or ``other``.  ``source`` is the original sender
    (the inner source of XCAST6), ``destination`` the outer destination.  ``sport``/``dport``
    are None when the quote ends before the UDP header.  ``flow`` is the flow label of the
    header that carries the sender's (XCAST6: the inner header, which an X2U copy keeps as
    its own; UDP: the only one): OAM probes number themselves with it.
    """

    kind: str
    source: bytes
    destination: bytes
    hop_limit: int
    bitmap: int = 0
    dests: tuple[bytes, ...] = ()
    flags: int = 0
    sport: int | None = None
    dport: int | None = None
    flow: int = 0
    inner_only: bool = False     # the quote starts at the inner header (an engine's relayed error)

    @property
    def live(self) -> tuple[bytes, ...]:
        """The destinations whose bitmap bit is set (the ones the reporting node held)."""
        return tuple(d for i, d in enumerate(self.dests) if self.bitmap >> i & 1)


def parse_quote(q: bytes) -> Quote | None:
    """Read the invoking packet an error quotes; None if it is not even an IPv6 header.

    An engine's relayed error (engine/forwarding/icmp_errors.py) quotes an XCAST6 packet from
    its inner header on (RFC 2473 §8: the original packet, without the outer header the engine
    wrote): ``inner_only``, and ``destination`` is then the first live destination.
    """
    if len(q) < IP6_HLEN or q[0] >> 4 != 6:
        return None
    q = q[: IP6_HLEN + (q[IP6_PLEN_OFF] << 8 | q[IP6_PLEN_OFF + 1])]    # no RFC 4884 zero pad
    nh = q[IP6_NH_OFF]
    if nh == NH_ROUTING and q[IP6_DST_OFF : IP6_DST_OFF + 16] == ALL_XCAST_NODES:
        # rebuild an outer header in front so the one reading below serves both
        plen = IP6_HLEN + (q[IP6_PLEN_OFF] << 8 | q[IP6_PLEN_OFF + 1])
        outer = ipv6_header(0, 0, plen & 0xFFFF, NH_IPV6, q[IP6_HLIM_OFF], q[IP6_SRC_OFF : IP6_SRC_OFF + 16],
                            bytes(16))
        inner = parse_quote(outer + q)
        if inner is None or inner.kind != "xcast":
            return inner if inner is None else Quote("other", inner.source, bytes(16), inner.hop_limit)
        live = inner.live
        return Quote("xcast", inner.source, live[0] if live else bytes(16), inner.hop_limit, inner.bitmap,
                     inner.dests, inner.flags, inner.sport, inner.dport, inner.flow, inner_only=True)
    hl = q[IP6_HLIM_OFF]
    src, dst = q[OUTER_SRC_OFF:OUTER_SRC_END], q[OUTER_DST_OFF:OUTER_DST_END]
    if nh == NH_UDP:
        ports = _ports(q, IP6_HLEN)
        return Quote("udp", src, dst, hl, sport=ports[0], dport=ports[1], flow=_flow(q, 0))
    if (nh != NH_IPV6 or len(q) < BITMAP_OFF + BITMAP_LEN or q[INNER_NH_OFF] != NH_ROUTING
            or q[RH_TYPE_OFF] != RH_TYPE_XCAST or q[INNER_DST_OFF:INNER_DST_END] != ALL_XCAST_NODES):
        return Quote("other", src, dst, hl)
    n = q[RH_N_OFF]
    bitmap = int.from_bytes(q[BITMAP_OFF : BITMAP_OFF + BITMAP_LEN], "little")
    have = max(0, min(n, (len(q) - DEST_OFF) // DEST_LEN))
    dests = tuple(q[DEST_OFF + DEST_LEN * i : DEST_OFF + DEST_LEN * (i + 1)] for i in range(have))
    t = DEST_OFF + DEST_LEN * n
    rh_nh = q[RH_OFF]
    if rh_nh == NH_DSTOPTS and len(q) >= t + DOPT_UNIT:
        rh_nh = q[t + DOPT_NH_OFF]
        t += DOPT_UNIT + DOPT_UNIT * q[t + DOPT_HDR_EXT_LEN_OFF]
    sport, dport = _ports(q, t) if rh_nh == NH_UDP else (None, None)
    return Quote("xcast", q[INNER_SRC_OFF:INNER_SRC_END], dst, hl, bitmap, dests, q[RH_FLAGS_OFF],
                 sport, dport, _flow(q, INNER_OFF))


def _flow(q: bytes, off: int) -> int:
    return int.from_bytes(q[off : off + 4], "big") & 0xFFFFF


def _ports(q: bytes, off: int) -> tuple[int | None, int | None]:
    if len(q) < off + 4:        # source and destination port are the first 4 bytes
        return None, None
    return q[off] << 8 | q[off + 1], q[off + 2] << 8 | q[off + 3]
