"""Minimal pcap / pcapng reader for the packet tools (no scapy: fast and dependency-free).

Yields ``(index, linktype, frame bytes)``.  Link types understood by the tools: 1 Ethernet,
101/229 raw IP/IPv6, 113 Linux cooked (SLL), 276 Linux cooked v2 (SLL2).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",   # microsecond
    b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">",   # nanosecond
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


class CaptureError(ValueError):
    """The file is not a readable pcap/pcapng capture (message says where it broke)."""


def is_capture(head: bytes) -> bool:
    return head[:4] in _PCAP_MAGICS or head[:4] == _PCAPNG_SHB


def read_capture(blob: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Iterate ``(frame number, link type, bytes)`` over a pcap or pcapng file held in memory;
    frames are numbered from 1, as Wireshark and tshark count them."""
    if blob[:4] in _PCAP_MAGICS:
        yield from _pcap(blob)
    elif blob[:4] == _PCAPNG_SHB:
        yield from _pcapng(blob)
    else:
        raise CaptureError("not a pcap or pcapng file (bad magic)")


def _pcap(blob: bytes) -> Iterator[tuple[int, int, bytes]]:
    e = _PCAP_MAGICS[blob[:4]]
    if len(blob) < 24:
        raise CaptureError("pcap global header truncated")
    linktype = struct.unpack_from(e + "I", blob, 20)[0] & 0x0FFFFFFF
    off, k = 24, 1
    while off < len(blob):
        if off + 16 > len(blob):
            raise CaptureError(f"packet {k}: record header truncated at byte {off}")
        incl = struct.unpack_from(e + "I", blob, off + 8)[0]
        if off + 16 + incl > len(blob):
            raise CaptureError(f"packet {k}: {incl} bytes announced, file ends first")
        yield k, linktype, blob[off + 16 : off + 16 + incl]
        off += 16 + incl
        k += 1


def _pcapng(blob: bytes) -> Iterator[tuple[int, int, bytes]]:
    off, k = 0, 1
    e = "<"
    linktypes: list[int] = []
    while off + 12 <= len(blob):
        btype_raw = blob[off : off + 4]
        if btype_raw == _PCAPNG_SHB:
            e = "<" if blob[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            linktypes = []
        btype, blen = struct.unpack_from(e + "II", blob, off)
        if blen < 12 or off + blen > len(blob):
            raise CaptureError(f"pcapng block at byte {off}: bad length {blen}")
        if btype == 1:        # Interface Description Block
            linktypes.append(struct.unpack_from(e + "H", blob, off + 8)[0])
        elif btype == 6:      # Enhanced Packet Block
            ifid, _th, _tl, caplen = struct.unpack_from(e + "IIII", blob, off + 8)
            if ifid >= len(linktypes):
                raise CaptureError(f"packet {k}: unknown interface id {ifid}")
            yield k, linktypes[ifid], blob[off + 28 : off + 28 + caplen]
            k += 1
        elif btype == 3:      # Simple Packet Block (interface 0)
            (olen,) = struct.unpack_from(e + "I", blob, off + 8)
            lt = linktypes[0] if linktypes else LINKTYPE_ETHERNET
            yield k, lt, blob[off + 12 : off + 12 + min(olen, blen - 16)]
            k += 1
        off += blen


def to_ipv6_or_l2(linktype: int, frame: bytes) -> tuple[bytes, bool]:
    """Strip cooked-capture headers: returns (bytes, starts_with_ethernet)."""
    if linktype == LINKTYPE_ETHERNET:
        return frame, True
    if linktype == LINKTYPE_LINUX_SLL:
        return frame[16:], False
    if linktype == LINKTYPE_LINUX_SLL2:
        return frame[20:], False
    return frame, False
