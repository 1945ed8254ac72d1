"""XCAST6 branching: one packet in, one copy per next hop out, every drop counted.

Implements the eight rules of shared/docs/xcast6-wire-format.md ("Branching"):

1-2. classification and validation are :func:`engine.wire.codec.parse` (a ``Reject`` is one drop);
3.   a live destination that is not global unicast drops the whole packet
     (``invalid_destination``); a live destination without a route has its bit cleared and
     is counted once as ``no_route``;
4.   live destinations are grouped by next hop = (router next-hop address, router interface).
     A connected route (no gateway) makes each destination its own next hop: the copy's
     ``nexthop`` is ``NextHop(ifname, gateway=<the destination>)``;
5.   outer hop limit <= 1 drops the packet (``hop_limit_exceeded``), else copies get hop - 1;
6.   per group one copy: bitmap = the group's bits only, outer source = ``source_for(ifname)``
     (no address => ``no_source_address``, counted per copy), outer destination = the group's
     lowest-index destination, ANONYMOUS zeroes the addresses not live in the copy;
7.   X2U when a group has exactly one destination, DONT_X2U is clear and the transport is UDP;
8.   destinations in ``local_addresses`` are delivered locally (``BranchResult.local``, X2U form).

Hot path: no scapy, no ``ipaddress``; per destination one dict hit (cache of validity, next
hop id and address word sum, emptied when ``Fib.generation`` changes: the rule is
:mod:`engine.forwarding.generation`'s).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from engine.forwarding.generation import DerivedCaches
from engine.model import NextHop, Route
from engine.wire.checksum import fold, ones_sum
from engine.wire.codec import _parse_ipv6, parse
from engine.wire.layout import (
    ALL_XCAST_NODES,
    BITMAP_LEN,
    DEST_LEN,
    FLAG_ANONYMOUS,
    FLAG_DONT_X2U,
    INNER_FLOW_END,
    INNER_OFF,
    INNER_SRC_END,
    INNER_SRC_OFF,
    NH_ICMPV6,
    NH_UDP,
    OUTER_DST_END,
    OUTER_DST_OFF,
    OUTER_HLIM_OFF,
    OUTER_SRC_END,
    OUTER_SRC_OFF,
    UDP_CSUM_OFF,
    UDP_HLEN,
)
from engine.wire.packet import Encoding, Reject, XcastPacket
from engine.wire.reasons import DropReason
from engine.wire.x2u import X2uMaker, addr_sum

_ZERO16 = bytes(DEST_LEN)
_XCAST6 = Encoding.XCAST6
_x2u_hdr = struct.Struct("!HBB")
# ECMP member choice among linked members: the destination's low 32 bits (interface id half)
_ECMP_HASH_OFF = 12
# Constant slices of the per-packet path: one global load instead of two constants + BUILD_SLICE.
_HEAD = slice(0, OUTER_HLIM_OFF)                    # outer header up to the hop limit
_INNER_FLOW = slice(INNER_OFF, INNER_FLOW_END)      # inner version | traffic class | flow label
_INNER_SRC = slice(INNER_SRC_OFF, INNER_SRC_END)    # the original sender
# one's complement of the folded word sum of ff0e::114 (the pseudo-header destination X2U replaces)
_NOT_ALL_XCAST = 0xFFFF - fold(ones_sum(ALL_XCAST_NODES))
_NO_SRC = DropReason.NO_SOURCE_ADDRESS
_PARTIAL = frozenset({DropReason.NO_ROUTE, DropReason.NO_SOURCE_ADDRESS})

# per-destination cache entry kinds
_ROUTED = 0
_NO_ROUTE = 1
_INVALID = 2
_LOCAL = 3

LOCAL_NEXTHOP_IFNAME = "local"
_MAX_DESTS_CACHED = 65536
_MAX_PLANS = 8192
# The default byte budget of the plans (config workers.plan_cache_mb; see the README's worker
# paragraph).  A plan's cost is estimated as below (measured with tracemalloc, CPython 3.11,
# rounded up; tests/engine/test_flowcache_memory.py checks it): the plan, its key (bitmap and
# destination list, up to ~2 KB) and per group/local entry a tuple with its addresses and ints.
PLAN_CACHE_BYTES = 8 << 20
_PLAN_BASE_COST = 256
_PLAN_GROUP_COST = 320


class _Plan(NamedTuple):
    invalid: str | None      # detail when a live destination is invalid (whole packet dropped)
    no_route: int
    # per copy: (next hop, bits, first index, first dest, its word sum, indexes, route, bitmap field)
    groups: tuple[tuple[NextHop, int, int, bytes, int, tuple[int, ...], Route | None, bytes], ...]
    local: tuple[tuple[int, bytes, int, NextHop], ...]   # (index, dest, word sum, local next hop)


@dataclass(slots=True)
class Copy:
    """One packet the engine emits.

    ``data`` is the full IPv6 packet without L2; ``nexthop.ifname`` is the router interface whose
    engine link it leaves on; ``x2u`` says it is a plain unicast (no XCAST headers);
    ``dest_indexes`` are the destination indexes live in it (one for X2U).
    """

    nexthop: NextHop
    data: bytes
    x2u: bool
    dest_indexes: tuple[int, ...]
    route: Route | None = None


@dataclass(slots=True)
class DestOutcome:
    """What happened to one destination (``explain``)."""

    index: int
    address: bytes
    status: str          # not_live | invalid | no_route | local | forwarded | x2u | no_source_address
    #                      | dropped (the whole packet was dropped for another reason)
    route: Route | None = None
    nexthop: NextHop | None = None
    copy: int | None = None   # index into BranchResult.copies


class BranchResult:
    """Copies to send, local deliveries, and drops (reason -> count) for one input packet.

    ``detail`` is the human detail of a whole-packet drop; ``outcomes`` (one per destination)
    only with ``branch(..., explain=True)``.  A plain slotted class: built once per packet.
    """

    __slots__ = ("copies", "detail", "drops", "local", "outcomes", "packet", "reject")

    def __init__(
        self,
        copies: list[Copy] | None = None,
        drops: dict[DropReason, int] | None = None,
        local: list[Copy] | None = None,
        packet: XcastPacket | None = None,
        reject: Reject | None = None,
        detail: str | None = None,
        outcomes: list[DestOutcome] | None = None,
    ) -> None:
        self.copies: list[Copy] = [] if copies is None else copies
        self.drops: dict[DropReason, int] = {} if drops is None else drops
        self.local: list[Copy] = [] if local is None else local
        self.packet = packet
        self.reject = reject
        self.detail = detail
        self.outcomes = outcomes

    def __repr__(self) -> str:
        drops = {k.value: v for k, v in self.drops.items()}
        return (f"BranchResult(copies={len(self.copies)}, local={len(self.local)}, "
                f"drops={drops}, detail={self.detail!r})")


def is_valid_unicast(d: bytes) -> bool:
    """Global-unicast check on 16 raw bytes (rule 3).

    Rejects ::/8 (unspecified, loopback, IPv4-mapped/compatible), ff00::/8 (multicast),
    fe80::/10 (link-local) and fec0::/10 (deprecated site-local).  ULA (fc00::/7) and
    documentation addresses are accepted: operators route them internally.
    """
    b0 = d[0]
    if b0 == 0 or b0 == 0xFF:
        return False
    return not (b0 == 0xFE and d[1] & 0xC0 in (0x80, 0xC0))


class Brancher:
    """Branches XCAST6/XOU packets over a :class:`engine.forwarding.fib.Fib`.

    ``source_for(router_ifname)`` gives the engine's address (16 bytes) on the link standing
    for that router interface (``engine.model.LinkMap.source_for``).  ``drop_icmp_echo``
    enables the RFC 5058 §14 smurf protection.  ``egress_ok(router_ifname)``, when given, says
    whether the engine can send on that router interface (an engine link stands for it): a
    destination whose route only leaves through interfaces without one (the router's own
    engine-facing links, say) counts as ``no_route``; ECMP members without one are skipped.
    The worker passes ``Egress.routable`` (engine/dataplane/egress.py, the one egress rule).

    The plans (per bitmap and destination list) are bounded in count and in bytes
    (``plan_cache_bytes``, an estimate: ``plan_bytes``); the oldest go first when a new one
    does not fit, counted in ``plan_evictions`` (the owner publishes and resets it).
    """

    def __init__(
        self,
        fib: Any,
        source_for: Callable[[str], bytes | None],
        local_addresses: frozenset[bytes] = frozenset(),
        *,
        drop_icmp_echo: bool = False,
        egress_ok: Callable[[str], bool] | None = None,
        plan_cache_bytes: int = PLAN_CACHE_BYTES,
    ) -> None:
        self.fib = fib
        self.source_for = source_for
        self.egress_ok = egress_ok
        self.local_addresses = frozenset(local_addresses)
        self.drop_icmp_echo = drop_icmp_echo
        self._cache: dict[bytes, tuple[int, int, NextHop | None, Route | None, int]] = {}
        self._lookup: Callable[[bytes], Any] = fib.lookup
        self._hop_ids: dict[NextHop, int] = {}
        self._hops: list[NextHop] = []
        self._plans: dict[bytes, _Plan] = {}
        self.plan_cache_bytes = plan_cache_bytes
        self.plan_bytes = 0           # the kept plans' estimated cost
        self.plan_evictions = 0       # plans dropped for room (not for a table change)
        # The brancher's caches derive from one table generation (engine.forwarding.generation).
        self._derived = DerivedCaches(self)

    def clear(self, generation: object = None) -> None:
        """Forget every per-destination result, next-hop id and plan (their table changed)."""
        self._cache = {}
        self._hop_ids = {}
        self._hops = []
        self._plans = {}
        self.plan_bytes = 0

    # ------------------------------------------------------------------ per-destination cache
    def _usable_member(self, d: bytes, route: Route) -> tuple[Route, NextHop] | None:
        """Another ECMP member the engine can send on (stable per destination), or None."""
        ok = self.egress_ok
        usable = [h for h in route.nexthops if ok is not None and ok(h.ifname)]
        if not usable:
            return None
        return route, usable[int.from_bytes(d[_ECMP_HASH_OFF:], "big") % len(usable)]

    def _resolve(self, d: bytes) -> tuple[int, int, NextHop | None, Route | None, int]:
        if not is_valid_unicast(d):
            ent: tuple[int, int, NextHop | None, Route | None, int] = (_INVALID, -1, None, None, 0)
        elif d in self.local_addresses:
            ent = (_LOCAL, -1, NextHop(LOCAL_NEXTHOP_IFNAME), None, addr_sum(d))
        else:
            hit = self._lookup(d)
            if hit is not None and self.egress_ok is not None and not self.egress_ok(hit[1].ifname):
                hit = self._usable_member(d, hit[0])
            if hit is None:
                ent = (_NO_ROUTE, -1, None, None, 0)
            else:
                route, nh = hit
                if nh.gateway is None:
                    nh = NextHop(nh.ifname, d)   # connected: the destination is the next hop
                hid = self._hop_ids.get(nh)
                if hid is None:
                    hid = self._hop_ids[nh] = len(self._hops)
                    self._hops.append(nh)
                ent = (_ROUTED, hid, nh, route, addr_sum(d))
        if len(self._cache) >= _MAX_DESTS_CACHED:
            self._cache.clear()
            self.plan_evictions += len(self._plans)
            self._plans.clear()
            self.plan_bytes = 0
        self._cache[d] = ent
        return ent

    def _check_generation(self) -> None:
        # Resolve against one immutable generation (Fib.snapshot) so a packet never mixes two
        # tables; any Fib-like object with lookup/generation works too.
        snapshot = getattr(self.fib, "snapshot", None)
        table = snapshot() if snapshot is not None else self.fib
        gen = table.generation
        if gen != self._derived.generation:
            self._lookup = table.lookup
            self._derived.renew(gen)

    # ------------------------------------------------------------------ plans
    def _plan(self, pkt: XcastPacket, key: bytes) -> _Plan:
        """Rule 3-4 for one (bitmap, destination list): grouping, no-route count, local bits.

        Sessions repeat the same destination list and bitmap packet after packet, so the plan
        is cached under those bytes (a flow cache), invalidated with the per-destination cache.
        """
        cache = self._cache
        resolve = self._resolve
        data = pkt.data
        doff = pkt.dest_off
        groups: dict[int, int] = {}
        local: list[tuple[int, bytes, int, NextHop]] = []
        no_route = 0
        rest = pkt.bitmap
        while rest:
            low = rest & -rest
            rest ^= low
            i = low.bit_length() - 1
            o = doff + DEST_LEN * i
            d = data[o : o + DEST_LEN]
            ent = cache.get(d) or resolve(d)
            kind = ent[0]
            if kind == _ROUTED:
                groups[ent[1]] = groups.get(ent[1], 0) | low
            elif kind == _NO_ROUTE:
                no_route += 1
            elif kind == _INVALID:
                detail = f"destination {i} ({_txt(d)}) is not a global unicast address"
                plan = _Plan(detail, 0, (), ())
                break
            else:
                nh_local = ent[2]
                assert nh_local is not None
                local.append((i, d, ent[4], nh_local))
        else:
            out = []
            for hid, bits in groups.items():
                first = (bits & -bits).bit_length() - 1
                o = doff + DEST_LEN * first
                dst = data[o : o + DEST_LEN]
                ent = cache.get(dst) or resolve(dst)
                out.append((self._hops[hid], bits, first, dst, ent[4], _indexes(bits), ent[3],
                            bits.to_bytes(BITMAP_LEN, "little")))
            plan = _Plan(None, no_route, tuple(out), tuple(local))
        self._keep(key, plan)
        return plan

    def _keep(self, key: bytes, plan: _Plan) -> None:
        """Cache ``plan``, evicting the oldest plans until it fits (count and bytes)."""
        plans = self._plans
        cost = plan_cost(key, plan)
        if cost > self.plan_cache_bytes:
            self.plan_evictions += 1
            return
        limit = self.plan_cache_bytes - cost
        while plans and (self.plan_bytes > limit or len(plans) >= _MAX_PLANS):
            old_key, old = next(iter(plans.items()))
            del plans[old_key]
            self.plan_bytes -= plan_cost(old_key, old)
            self.plan_evictions += 1
        plans[key] = plan
        self.plan_bytes += cost

    # ------------------------------------------------------------------ branching
    def branch(
        self, pkt: XcastPacket | bytes | bytearray | memoryview, *, explain: bool = False
    ) -> BranchResult:
        """Branch one packet (parsed, or raw IPv6 bytes without L2)."""
        if not isinstance(pkt, XcastPacket):
            p = _parse_ipv6(pkt, None) if type(pkt) is bytes else parse(pkt)
            if isinstance(p, Reject):
                return BranchResult(drops={p.reason: 1}, reject=p, detail=p.detail)
            pkt = p
        if self.fib.generation != self._derived.generation:
            self._check_generation()
        res = BranchResult(None, None, None, pkt)   # positional: measurably cheaper per packet
        drops = res.drops
        if not pkt.bitmap:
            drops[DropReason.NO_LIVE_DESTINATION] = 1
            res.detail = "bitmap has no live destination"
            return self._explain(res, pkt) if explain else res
        if (self.drop_icmp_echo and pkt.transport == NH_ICMPV6 and pkt.transport_off < len(pkt.data)
                and pkt.data[pkt.transport_off] == 128):
            drops[DropReason.ICMP_ECHO_BLOCKED] = 1
            res.detail = "ICMPv6 echo request to an XCAST group (RFC 5058 §14)"
            return self._explain(res, pkt) if explain else res

        data = pkt.data
        bo = pkt.bitmap_off
        key = data[bo : pkt.dest_off + DEST_LEN * pkt.n]
        plan = self._plans.get(key) or self._plan(pkt, key)
        if plan.invalid is not None:
            drops[DropReason.INVALID_DESTINATION] = 1
            res.detail = plan.invalid
            return self._explain(res, pkt) if explain else res
        if plan.no_route:
            drops[DropReason.NO_ROUTE] = plan.no_route
        groups = plan.groups
        hl = pkt.hop_limit
        if hl <= 1 and (groups or plan.local):
            drops[DropReason.HOP_LIMIT_EXCEEDED] = 1
            res.detail = f"outer hop limit {hl}"
            return self._explain(res, pkt) if explain else res
        new_hl = hl - 1

        flags = pkt.flags
        can_x2u = not flags & FLAG_DONT_X2U and pkt.transport == NH_UDP
        maker: X2uMaker | None = None
        pre = b""          # inline X2U for the common XCAST6 case (no port list, checksum present)
        if groups:
            head = data[_HEAD] + bytes((new_hl,))             # outer header up to the hop limit
            mid = data[INNER_OFF:bo]                          # inner header .. routing header
            tail = data[bo + BITMAP_LEN :]                    # destinations and the rest
            anonymous = flags & FLAG_ANONYMOUS
            source_for = self.source_for
            copies = res.copies
            for nh, bits, first, dst, dsum, idx, route, bm in groups:
                if can_x2u and len(idx) == 1:
                    if not pre:
                        t = pkt.transport_off
                        c = t + UDP_CSUM_OFF
                        ck0 = data[c] << 8 | data[c + 1]
                        if pkt.encoding is _XCAST6 and pkt.ports is None and ck0:
                            # RFC 1624: HC' = ~(~HC + ~m + m'); m = ff0e::114 words, m' = dest words
                            pre = (data[_INNER_FLOW] + _x2u_hdr.pack(len(data) - t, NH_UDP, new_hl)
                                   + data[_INNER_SRC])
                            u6 = data[t:c]
                            body = data[t + UDP_HLEN :]
                            base = ((~ck0) & 0xFFFF) + _NOT_ALL_XCAST
                        else:
                            pre = b"-"
                            if maker is None:
                                maker = X2uMaker(pkt, new_hl)
                    if maker is None:
                        x = base + dsum
                        x = (x & 0xFFFF) + (x >> 16)
                        x = (~((x & 0xFFFF) + (x >> 16))) & 0xFFFF or 0xFFFF
                        out = b"".join((pre, dst, u6, x.to_bytes(2, "big"), body))
                    else:
                        out = maker.make(first, dst, dsum)
                    copies.append(Copy(nh, out, True, idx, route))
                    continue
                src = source_for(nh.ifname)
                if src is None:
                    drops[_NO_SRC] = drops.get(_NO_SRC, 0) + 1
                    continue
                if anonymous:
                    out = self._anonymous_copy(pkt, head, src, dst, bits)
                else:
                    out = b"".join((head, src, dst, mid, bm, tail))
                copies.append(Copy(nh, out, False, idx, route))

        for i, d, dsum, nh_local in plan.local:
            if pkt.transport != NH_UDP:
                out = data   # no unicast form to hand up; the host agent gets the packet
            else:
                if maker is None:
                    maker = X2uMaker(pkt, new_hl)
                out = maker.make(i, d, dsum)
            res.local.append(Copy(nh_local, out, True, (i,)))
        return self._explain(res, pkt) if explain else res

    def _anonymous_copy(self, pkt: XcastPacket, head: bytes, src: bytes, dst: bytes, bits: int) -> bytes:
        """Copy with the addresses of destinations not live in it zeroed (XOU: checksum fixed)."""
        buf = bytearray(pkt.data)
        buf[0:OUTER_SRC_OFF] = head
        buf[OUTER_SRC_OFF:OUTER_SRC_END] = src
        buf[OUTER_DST_OFF:OUTER_DST_END] = dst
        buf[pkt.bitmap_off : pkt.bitmap_off + BITMAP_LEN] = bits.to_bytes(BITMAP_LEN, "little")
        removed = 0
        doff = pkt.dest_off
        for j in range(pkt.n):
            if not bits >> j & 1:
                o = doff + DEST_LEN * j
                removed += addr_sum(bytes(buf[o : o + DEST_LEN]))
                buf[o : o + DEST_LEN] = _ZERO16
        if pkt.encoding is Encoding.XOU and removed:
            from engine.wire.checksum import incremental

            t = pkt.transport_off
            c = t + UDP_CSUM_OFF
            old = buf[c] << 8 | buf[c + 1]
            if old:
                new = incremental(old, removed, 0)
                buf[c] = new >> 8
                buf[c + 1] = new & 0xFF
        return bytes(buf)

    # ------------------------------------------------------------------ explain
    def _explain(self, res: BranchResult, pkt: XcastPacket) -> BranchResult:
        whole_drop = bool(res.drops) and not set(res.drops) <= _PARTIAL
        outcomes: list[DestOutcome] = []
        local_idx = {c.dest_indexes[0] for c in res.local}
        copy_of = {c.nexthop: k for k, c in enumerate(res.copies)}
        for i in range(pkt.n):
            d = pkt.dest(i)
            if not pkt.is_live(i):
                outcomes.append(DestOutcome(i, d, "not_live"))
                continue
            ent = self._cache.get(d) or self._resolve(d)
            kind, _, nh, route, _ = ent
            if kind == _INVALID:
                outcomes.append(DestOutcome(i, d, "invalid"))
            elif kind == _NO_ROUTE:
                outcomes.append(DestOutcome(i, d, "no_route"))
            elif whole_drop:
                outcomes.append(DestOutcome(i, d, "dropped", route, nh))
            elif kind == _LOCAL:
                outcomes.append(DestOutcome(i, d, "local" if i in local_idx else "dropped", None, nh))
            else:
                ci = copy_of.get(nh) if nh is not None else None
                if ci is None:
                    outcomes.append(DestOutcome(i, d, "no_source_address", route, nh))
                else:
                    status = "x2u" if res.copies[ci].x2u else "forwarded"
                    outcomes.append(DestOutcome(i, d, status, route, nh, ci))
        res.outcomes = outcomes
        return res


def plan_cost(key: bytes, plan: _Plan) -> int:
    """The estimated memory of one cached plan and its key, bytes."""
    return _PLAN_BASE_COST + len(key) + _PLAN_GROUP_COST * (len(plan.groups) + len(plan.local))


def _indexes(bits: int) -> tuple[int, ...]:
    out = []
    while bits:
        low = bits & -bits
        bits ^= low
        out.append(low.bit_length() - 1)
    return tuple(out)


def _txt(a: bytes) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(a))
