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
* the owner clears the cache whenever the table generation or the link map changes (with
  every other derived cache: :mod:`engine.forwarding.generation`).

Frames are written into the worker's transmit ring (:class:`engine.dataplane.afpacket.TxRing`):
the template carries ``slots`` (link and length per frame) for the ring's ``put()``, and
:func:`write_frames` writes the bytes at the offsets ``put()`` returned.  The ring alone knows
its buffer layout; this layer cannot import it (forwarding sits below dataplane).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine.wire.checksum import fold, ones_sum
from engine.wire.layout import (
    ALL_XCAST_NODES,
    DEST_LEN,
    DEST_OFF,
    FAST_MIN_LEN,
    IP6_HLEN,
    NH_UDP,
    OUTER_DST_END,
    OUTER_DST_OFF,
    RH_N_OFF,
    UDP_CSUM_OFF,
    UDP_HLEN,
)
from engine.wire.packet import Encoding, XcastPacket
from engine.wire.x2u import addr_sum

# The key ends before the UDP checksum: packet[:_KEY_END_0 + DEST_LEN * N] (XCAST6 encoding).
_KEY_END_0 = DEST_OFF + UDP_CSUM_OFF
# An X2U copy's constant prefix: its IPv6 header and the UDP ports and length.
_X2U_PREFIX = IP6_HLEN + UDP_CSUM_OFF
# The transmit ring's converter of (ifindexes, lengths) into its own form (TxRing.prepare):
# (ifindexes, lengths, offsets), offsets[k] = frame k's place relative to what put() returns.
Prepare = Callable[[Sequence[int], Sequence[int]], tuple[Any, Any, Sequence[int]]]
# one's complement of the word sum of ff0e::114, the pseudo-header destination X2U replaces
# (the same constant as engine.forwarding.branch's inline X2U)
_NOT_ALL_XCAST = 0xFFFF - fold(ones_sum(ALL_XCAST_NODES))
MAX_FLOWS = 4096
# The default byte budget of one worker's templates (config workers.flow_cache_mb; the README's
# worker paragraph says why 24 MiB): 4,096 sessions of 8 destinations (~4.7 KB each) fit.
MAX_BYTES = 24 << 20
# What one template costs besides its key and prefixes (measured with tracemalloc, CPython 3.11,
# rounded up; tests/engine/test_flowcache_memory.py checks the estimate against tracemalloc):
# the object, its tuples and the ring's arrays, and the cache's dict entry ...
_TPL_BASE_COST = 512
# ... and per copy: the frames/placed tuples, their ints, the prefix object's header.
_FRAME_COST = 384


class FlowTemplate:
    """How to render every copy of one session's packets (see the module docstring).

    ``frames`` holds per copy ``(ifindex, prefix, len(prefix), checksum_base, frame_length)``.
    An X2U copy (``checksum_base >= 0``) is ``prefix`` + the fixed-up UDP checksum +
    ``packet[x2u_tail:]``; a multi-destination copy is ``prefix`` + ``packet[multi_tail:]``.
    ``tx`` is the copies' links and lengths in the transmit ring's form (what its ``prepare``
    made, for its ``put()``; None when :func:`learn` was not given ``prepare``), and ``placed``
    per copy ``(start, checksum/body offset, checksum_base, end, prefix)``, offsets relative
    to what ``put()`` returns (the ring's offsets folded in once, not per packet).
    ``footprint`` is what the template and its cache key cost in memory (an estimate in bytes,
    what :class:`FlowCache` accounts against its budget).
    ``drops`` are the per-packet drop counts the brancher reported (destinations without a
    route, copies without a source address), as ``(counter name, n)``.
    """

    __slots__ = ("ck_off", "drops", "footprint", "frames", "length", "multi", "multi_tail", "nbytes",
                 "placed", "tx", "x2u", "x2u_tail")

    def __init__(self, length: int, udp_off: int, frames: tuple[tuple[int, bytes, int, int, int], ...],
                 drops: tuple[tuple[str, int], ...], prepare: Prepare | None = None) -> None:
        self.length = length
        self.frames = frames
        self.tx: Any = None
        self.placed: tuple[tuple[int, int, int, int, bytes], ...] = ()
        if prepare is not None:
            self.tx = prepare([f[0] for f in frames], [f[4] for f in frames])
            offsets = self.tx[2]
            self.placed = tuple((rel, rel + f[2], f[3], rel + f[4], f[1])
                                for f, rel in zip(frames, offsets, strict=True))
        self.drops = drops
        self.x2u = sum(1 for f in frames if f[3] >= 0)
        self.multi = len(frames) - self.x2u
        self.ck_off = udp_off + UDP_CSUM_OFF if self.x2u else -1   # the original checksum; -1: unused
        self.x2u_tail = udp_off + UDP_HLEN          # X2U copies carry the payload after UDP
        self.multi_tail = udp_off + UDP_CSUM_OFF    # multi copies: everything after the key
        self.nbytes = sum(f[4] for f in frames)
        # the key is packet[:udp_off + UDP_CSUM_OFF]: accounted here, with the prefixes
        self.footprint = (_TPL_BASE_COST + self.multi_tail
                          + sum(f[2] + _FRAME_COST for f in frames))


def flow_key(packet: bytes, _min_len: int = FAST_MIN_LEN, _key_end_0: int = _KEY_END_0,
             _dest_len: int = DEST_LEN, _n_off: int = RH_N_OFF) -> bytes | None:
    """The header bytes a flow template is keyed by (None: too short to be the common form).

    Called with ``packet`` only: the layout constants are positional defaults so this per-packet
    function reads locals, not module globals.
    """
    if len(packet) < _min_len:
        return None
    return packet[: _key_end_0 + _dest_len * packet[_n_off]]


def render(tpl: FlowTemplate, packet: bytes) -> list[tuple[int, bytes]] | None:
    """The frames of ``packet`` as ``(ifindex, frame)`` (the reference :func:`write_frames` must match).

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


def write_frames(tpl: FlowTemplate, packet: bytes, arena: Any, put: Callable[[Any], int]) -> bool:
    """Render ``packet``'s frames into the transmit ring, or return False if ``tpl`` does not apply.

    ``put`` is the ring's ``put()``: it queues the template's frames (links and lengths) and
    returns the base offset in ``arena``; frame k goes at that base plus its place in
    ``tpl.placed``, with the room and the length the ring recorded for it.  The
    :func:`applies` test is repeated inline here: this runs once per cached packet and a
    function call is a tenth of it.
    """
    if len(packet) != tpl.length:
        return False
    nck = 0
    body_x2u = body_multi = b""
    if tpl.x2u:
        o = tpl.ck_off
        ck = packet[o] << 8 | packet[o + 1]
        if not ck:
            return False
        nck = (~ck) & 0xFFFF
        body_x2u = packet[tpl.x2u_tail:]
    if tpl.multi:
        body_multi = packet[tpl.multi_tail:]
    base = put(tpl.tx)
    for start, mid, ck_base, end, prefix in tpl.placed:
        p = base + mid
        arena[base + start:p] = prefix
        if ck_base >= 0:
            x = nck + ck_base
            x = (x & 0xFFFF) + (x >> 16)
            x = (~((x & 0xFFFF) + (x >> 16))) & 0xFFFF or 0xFFFF
            arena[p] = x >> 8
            arena[p + 1] = x & 0xFF
            arena[p + 2:base + end] = body_x2u
        else:
            arena[p:base + end] = body_multi
    return True


def applies(tpl: FlowTemplate, packet: bytes) -> bool:
    """True when ``tpl`` renders ``packet`` (same length; a UDP checksum where X2U needs one)."""
    if len(packet) != tpl.length:
        return False
    o = tpl.ck_off
    return o < 0 or bool(packet[o] or packet[o + 1])


EgressLookup = Callable[[str], Any]     # router ifname -> object with .ifindex/.l2/.mtu, or a str


def learn(packet: bytes, result: Any, egress: EgressLookup, slot_size: int,
          drop_names: Sequence[tuple[str, int]], prepare: Prepare | None = None) -> FlowTemplate | None:
    """A template for ``packet``'s session from the brancher's ``result``, or None.

    ``egress`` resolves a router interface to the worker's egress entry (``ifindex``, ``l2``,
    ``mtu``) or to the name of the counter that explains why not; ``drop_names`` are the drop
    counters the worker already counted for this result (repeated on every hit).  ``prepare``
    is the transmit ring's (``TxRing.prepare``): the template keeps its frames' links and
    lengths in the ring's form, so each hit stores them in one go.
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
            prefix = e.l2 + c.data[:_X2U_PREFIX]
            dsum = addr_sum(c.data[OUTER_DST_OFF:OUTER_DST_END])
            frames.append((e.ifindex, prefix, len(prefix), _NOT_ALL_XCAST + dsum, size))
        else:
            prefix = e.l2 + c.data[:key_end]
            frames.append((e.ifindex, prefix, len(prefix), -1, size))
    tpl = FlowTemplate(len(packet), t, tuple(frames), tuple(drop_names), prepare)
    # The proof: the template renders the learning packet exactly as the brancher did.
    return tpl if render(tpl, packet) == expected else None


class FlowCache:
    """Header bytes -> :class:`FlowTemplate`, bounded in entries and bytes, cleared whole on any
    table/link change.

    A template costs its copies' prefixes (up to ~1.5 KB each: 86 destinations of one /64 make a
    ~160 KB template), so a count alone does not bound the memory: ``max_bytes`` bounds the sum
    of the templates' :attr:`FlowTemplate.footprint` (``nbytes``).  When a new template does
    not fit, the oldest ones go first (insertion order: a hit costs nothing extra, unlike an
    LRU's reordering); ``evictions`` counts every template dropped for room, a template larger
    than the whole budget included (it is not kept).
    """

    __slots__ = ("evictions", "flows", "generation", "max_bytes", "max_flows", "nbytes")

    def __init__(self, max_flows: int = MAX_FLOWS, max_bytes: int = MAX_BYTES) -> None:
        self.flows: dict[bytes, FlowTemplate] = {}
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        self.nbytes = 0          # the kept templates' footprints
        self.evictions = 0
        self.generation: object = None

    def clear(self, generation: object = None) -> None:
        """Forget every template (the table generation or the link map changed).

        Called through the owner's :class:`engine.forwarding.generation.DerivedCaches`, which
        decides when; ``generation`` is the one the (now empty) cache is valid for.  Not
        evictions: these templates were stale.
        """
        self.flows = {}
        self.nbytes = 0
        self.generation = generation

    def put(self, key: bytes, tpl: FlowTemplate) -> int:
        """Remember ``tpl``, evicting the oldest templates until it fits; returns how many went.

        Sessions evicted relearn in one packet each.
        """
        flows = self.flows
        old = flows.pop(key, None)      # same header, another length: the new one replaces it
        if old is not None:
            self.nbytes -= old.footprint
        cost = tpl.footprint
        if cost > self.max_bytes:
            self.evictions += 1
            return 1
        evicted = 0
        limit = self.max_bytes - cost
        while flows and (self.nbytes > limit or len(flows) >= self.max_flows):
            self.nbytes -= flows.pop(next(iter(flows))).footprint
            evicted += 1
        flows[key] = tpl
        self.nbytes += cost
        self.evictions += evicted
        return evicted
