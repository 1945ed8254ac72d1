"""Flow templates: the copies of one XCAST6 session, rendered per packet without re-branching.

A sender's packets repeat the same header bytes packet after packet — outer header, inner
header, routing header with bitmap and destination list, UDP ports and length — and differ
only in the UDP checksum and the payload.  Everything the branching rules decide (validity,
next hops, bitmaps, X2U, outer addresses, hop limit) is a function of those header bytes and
of the forwarding table, so once :class:`engine.forwarding.branch.Brancher` has branched one packet of a
session, the frames for the next packets of the same session are: a constant prefix (Ethernet
header + rewritten headers), for an X2U copy a UDP checksum fixed up incrementally (RFC 1624,
the same arithmetic as the brancher's inline X2U), and the packet's own bytes from a fixed
offset.  This is what a router's flow cache does (an OVS microflow); in CPython it turns ~5 µs
of parsing and branching per packet into one dictionary hit and a few buffer copies.

Correctness rests on three rules:

* the key is *every* byte the branching depends on (``packet[:udp_offset + 6]``) and a hit
  also needs the same total length, so a hit is a packet the parser would accept the same way;
* a template is only learned from the common form (XCAST6 encoding, no port list, UDP right
  after the routing header, no local delivery, every copy's egress link resolved), and is
  checked at learning time by rendering the learning packet and comparing with the brancher's
  own frames byte for byte — anything else keeps taking the full path;
* the owner clears the cache whenever the table generation or the link map changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine.wire.checksum import fold, ones_sum
from engine.wire.codec import ALL_XCAST_NODES, NH_UDP, Encoding, XcastPacket
from engine.wire.x2u import addr_sum

# Offset of N in the routing header and of the destination list (XCAST6 encoding):
# outer IPv6 (40) + inner IPv6 (40) + RH fixed part (8) + bitmap (16).
_N_OFF = 84
_DEST_OFF = 104
_MIN_LEN = 112            # the codec's fast-path minimum (one destination + UDP header)
# one's complement of the word sum of ff0e::114, the pseudo-header destination X2U replaces
# (the same constant as engine.forwarding.branch's inline X2U)
_NOT_ALL_XCAST = 0xFFFF - fold(ones_sum(ALL_XCAST_NODES))
MAX_FLOWS = 4096


class FlowTemplate:
    """How to render every copy of one session's packets (see the module docstring).

    ``frames`` holds per copy ``(ifindex, prefix, len(prefix), checksum_base, frame_length)``.
    An X2U copy (``checksum_base >= 0``) is ``prefix`` + the fixed-up UDP checksum +
    ``packet[x2u_tail:]``; a multi-destination copy is ``prefix`` + ``packet[multi_tail:]``.
    ``drops`` are the per-packet drop counts the brancher reported (destinations without a
    route, copies without a source address), as ``(counter name, n)``.
    """

    __slots__ = ("ck_off", "drops", "frames", "length", "multi", "multi_tail", "nbytes", "x2u",
                 "x2u_tail")

    def __init__(self, length: int, udp_off: int, frames: tuple[tuple[int, bytes, int, int, int], ...],
                 drops: tuple[tuple[str, int], ...]) -> None:
        self.length = length
        self.frames = frames
        self.drops = drops
        self.x2u = sum(1 for f in frames if f[3] >= 0)
        self.multi = len(frames) - self.x2u
        self.ck_off = udp_off + 6 if self.x2u else -1   # the original UDP checksum; -1: not needed
        self.x2u_tail = udp_off + 8                      # X2U copies carry the payload after UDP
        self.multi_tail = udp_off + 6                    # multi copies: everything after the key
        self.nbytes = sum(f[4] for f in frames)


def flow_key(packet: bytes) -> bytes | None:
    """The header bytes a flow template is keyed by (None: too short to be the common form)."""
    if len(packet) < _MIN_LEN:
        return None
    return packet[: _DEST_OFF + 16 * packet[_N_OFF] + 6]


def render(tpl: FlowTemplate, packet: bytes) -> list[tuple[int, bytes]] | None:
    """The frames of ``packet`` as ``(ifindex, frame)`` (reference form of :func:`write_frames`).

    None when the template does not apply (see :func:`applies`).
    """
    if not applies(tpl, packet):
        return None
    nck = (~(packet[tpl.ck_off] << 8 | packet[tpl.ck_off + 1])) & 0xFFFF if tpl.ck_off >= 0 else 0
    out = []
    for ifindex, prefix, _plen, base, _size in tpl.frames:
        if base >= 0:
            out.append((ifindex, prefix + _fixed_checksum(nck, base) + packet[tpl.x2u_tail:]))
        else:
            out.append((ifindex, prefix + packet[tpl.multi_tail:]))
    return out


def _fixed_checksum(nck: int, base: int) -> bytes:
    x = nck + base
    x = (x & 0xFFFF) + (x >> 16)
    x = (~((x & 0xFFFF) + (x >> 16))) & 0xFFFF or 0xFFFF
    return x.to_bytes(2, "big")


def write_frames(tpl: FlowTemplate, packet: bytes, arena: Any, iov_len: Any, addr_ifindex: Any,
                 slot_size: int, i: int) -> int:
    """Write ``packet``'s frames into sendmmsg slots ``i``, ``i+1``...; returns the next free slot.

    Same layout as :class:`engine.dataplane.afpacket.BatchSender` (frame at ``arena[slot * slot_size]``,
    its length in iovec word ``2*slot+1``, ifindex in sockaddr word ``5*slot+1``).  The caller
    checked :func:`applies` and that ``len(tpl.frames)`` slots are free.
    """
    nck = 0
    body_x2u = body_multi = b""
    if tpl.x2u:
        o = tpl.ck_off
        nck = (~(packet[o] << 8 | packet[o + 1])) & 0xFFFF
        body_x2u = packet[tpl.x2u_tail:]
    if tpl.multi:
        body_multi = packet[tpl.multi_tail:]
    for ifindex, prefix, plen, base, size in tpl.frames:
        off = i * slot_size
        p = off + plen
        arena[off:p] = prefix
        if base >= 0:
            x = nck + base
            x = (x & 0xFFFF) + (x >> 16)
            x = (~((x & 0xFFFF) + (x >> 16))) & 0xFFFF or 0xFFFF
            arena[p] = x >> 8
            arena[p + 1] = x & 0xFF
            arena[p + 2:off + size] = body_x2u
        else:
            arena[p:off + size] = body_multi
        iov_len[2 * i + 1] = size
        addr_ifindex[5 * i + 1] = ifindex
        i += 1
    return i


def applies(tpl: FlowTemplate, packet: bytes) -> bool:
    """True when ``tpl`` renders ``packet`` (same length; a UDP checksum where X2U needs one)."""
    if len(packet) != tpl.length:
        return False
    o = tpl.ck_off
    return o < 0 or bool(packet[o] or packet[o + 1])


EgressLookup = Callable[[str], Any]     # router ifname -> object with .ifindex/.l2/.mtu, or a str


def learn(packet: bytes, result: Any, egress: EgressLookup, slot_size: int,
          drop_names: Sequence[tuple[str, int]]) -> FlowTemplate | None:
    """A template for ``packet``'s session from the brancher's ``result``, or None.

    ``egress`` resolves a router interface to the worker's egress entry (``ifindex``, ``l2``,
    ``mtu``) or to the name of the counter that explains why not; ``drop_names`` are the drop
    counters the worker already counted for this result (repeated on every hit).
    """
    pkt = result.packet
    if (
        not isinstance(pkt, XcastPacket)
        or pkt.data is not packet
        or pkt.encoding is not Encoding.XCAST6
        or pkt.ports is not None
        or pkt.transport != NH_UDP
        or pkt.rh_next_header != NH_UDP
        or result.local
        or not result.copies
    ):
        return None
    t = pkt.transport_off
    key_end = t + 6
    key = flow_key(packet)
    if key is None or len(key) != key_end:
        return None
    frames: list[tuple[int, bytes, int, int, int]] = []
    expected: list[tuple[int, bytes]] = []
    for c in result.copies:
        e = egress(c.nexthop.ifname)
        if isinstance(e, str) or len(c.data) > e.mtu or len(c.data) + len(e.l2) > slot_size:
            return None
        expected.append((e.ifindex, e.l2 + c.data))
        size = len(e.l2) + len(c.data)
        if c.x2u:
            prefix = e.l2 + c.data[:46]     # IPv6 header + UDP ports and length
            frames.append((e.ifindex, prefix, len(prefix), _NOT_ALL_XCAST + addr_sum(c.data[24:40]), size))
        else:
            prefix = e.l2 + c.data[:key_end]
            frames.append((e.ifindex, prefix, len(prefix), -1, size))
    tpl = FlowTemplate(len(packet), t, tuple(frames), tuple(drop_names))
    # The proof: the template renders the learning packet exactly as the brancher did.
    return tpl if render(tpl, packet) == expected else None


class FlowCache:
    """Header bytes -> :class:`FlowTemplate`, bounded, cleared as a whole on any table/link change."""

    __slots__ = ("flows", "generation", "max_flows")

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        self.flows: dict[bytes, FlowTemplate] = {}
        self.max_flows = max_flows
        self.generation: object = None

    def clear(self, generation: object = None) -> None:
        """Forget every template (the table generation or the link map changed)."""
        self.flows = {}
        self.generation = generation

    def put(self, key: bytes, tpl: FlowTemplate) -> None:
        """Remember ``tpl``; a full cache starts over (sessions relearn in one packet each)."""
        if len(self.flows) >= self.max_flows:
            self.flows = {}
        self.flows[key] = tpl
