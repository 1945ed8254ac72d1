"""Fuzz campaign: packets into the parser, the brancher, X2U and the flow cache.

Every frame the kernel filter lets through reaches ``engine.wire.codec.parse`` and then the
brancher, and a session's later packets are rendered from a flow template instead of being
branched.  The contract (issue 15, "Campaigns"): the parser returns a packet or a ``Reject``
for any bytes, never raises; the fast path and the full checker agree; branching and X2U
never raise; the brancher's copies are well formed (a multi-destination copy parses again
with a subset of the bitmap; an X2U copy of a packet whose UDP checksum is right has a right
checksum, computed here with an independent word sum); and a packet rendered from a flow
template is BYTE-IDENTICAL to what branching makes of it (frames and per-packet drop counts),
through both ``render`` and the transmit-ring writer ``write_frames``, as
tests/engine/test_flowcache.py compares them.  An exception is a *crash*, grouped by target,
exception type and where it was raised (deduplicated, first input kept as a hex reproducer);
a broken property is a *mismatch*, grouped the same way.

Inputs (weighted mix): random bytes; mutations (flip/insert/delete/splice) of valid XCAST6 v2
and XOU packets (1..126 destinations, flags, port lists, ICMPv6, zero checksums, several next
hops, connected routes, no route) with and without an Ethernet header, 802.1Q or 802.1ad+802.1Q
tags; truncations; corrupted length fields (outer/inner payload length, hdr ext len, UDP
length, port-list length), N, bitmap and port-list entries; and *session* packets: a packet
whose header a flow template was learned from, with another payload/checksum (the flow
cache's hit path) or another length.

Each input is also quoted in a router's Time Exceeded / Packet Too Big / Destination
Unreachable to an engine address (its outer source made the engine's for most of them, the
quote cut at a random length) and fed to the relay (``plan_relay``, through the codec's
``parse_quoted``): it never raises, a whole quote parses exactly as ``parse_checked`` does, and
a relayed error is well formed (≤ 1,280 bytes, right checksum, to the quoted inner source,
quoting the inner packet -- Packet Too Big: the packet as the sender sent it, the sender's outer
source and destination put back -- and naming the router in its RFC 5837 object).

Usage: python -m bench.fuzz_packets [--inputs 1000000] [--seed 1] [--out bench/results/fuzz_packets.json]
Prints progress (inputs/s, current and peak RSS), the crash and mismatch classes, and writes
JSON; exit 1 on any crash or mismatch.  ``tests/engine/test_fuzz_packets_smoke.py`` runs 20,000
inputs of it in CI.
"""

from __future__ import annotations

import random
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fuzzing import campaign_main, peak_rss_kib, rss_kib, where

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.dataplane.afpacket import TxRing
from engine.dataplane.egress import Egress
from engine.forwarding.branch import Brancher, BranchResult
from engine.forwarding.fib import Fib
from engine.forwarding.flowcache import FlowCache, applies, flow_key, learn, render, write_frames
from engine.forwarding.icmp_errors import ErrorKind, plan_relay
from engine.model import EngineLink, LinkMap, NextHop, Route, ip6
from engine.wire import codec
from engine.wire.codec import build_l2, build_xcast, parse, parse_checked, parse_quoted, strip_l2
from engine.wire.icmp6 import build_error, parse_icmp6
from engine.wire.layout import (
    ALL_XCAST_NODES,
    BITMAP_LEN,
    BITMAP_OFF,
    FLAG_ANONYMOUS,
    FLAG_DONT_X2U,
    NH_ICMPV6,
    NH_UDP,
    RH_N_OFF,
    RH_OFF,
)
from engine.wire.packet import Encoding, Reject, XcastPacket
from engine.wire.reasons import NOT_XCAST
from engine.wire.x2u import x2u
from engine.wire.xou import build_xou

SLOT = 9216           # the transmit ring's slot (jumbo frames)
SENDER = ip6("2001:db8:ff::1")
ROUTER = ip6("2001:db8:ab::1")    # a router between two engines, answering a copy
LOCAL = ip6("2001:db8:3::77")   # delivered locally by the second brancher




# ---------------------------------------------------------------- the small world


def _route(prefix: str, ifname: str, gateway: str | None = None) -> Route:
    import ipaddress

    return Route(ipaddress.IPv6Network(prefix), (NextHop(ifname, None if gateway is None else ip6(gateway)),))


def small_fib() -> Fib:
    """Three gateway next hops, a connected /64, an interface without engine link, an ECMP pair."""
    import ipaddress

    return Fib([
        _route("2001:db8:1::/48", "ge-0/0/1", "fe80::1"),
        _route("2001:db8:2::/48", "ge-0/0/2", "fe80::2"),
        _route("2001:db8:20::/44", "ge-0/0/2", "fe80::2"),
        _route("2001:db8:3::/64", "ge-0/0/3"),                       # connected: a copy per destination
        _route("2001:db8:4::/48", "ge-0/0/4", "fe80::4"),            # no engine link: no_route
        Route(ipaddress.IPv6Network("2001:db8:5::/48"),
              (NextHop("ge-0/0/1", ip6("fe80::1")), NextHop("ge-0/0/4", ip6("fe80::4")))),   # ECMP
    ])


LINKS = LinkMap([
    EngineLink(f"ge-0/0/{k}", f"xc-v10{k}", 10 + k, 100 + k, ip6(f"2001:db8:e{k}::2"),
               ip6(f"2001:db8:e{k}::1"), bytes([2, 0, 0, 0, 1, k]), bytes([2, 0, 0, 0, 0, k]))
    for k in (1, 2, 3)
])

POOL = (
    [ip6(f"2001:db8:1::{i:x}") for i in range(1, 9)]
    + [ip6(f"2001:db8:2::{i:x}") for i in range(1, 5)]
    + [ip6(f"2001:db8:21::{i:x}") for i in range(1, 3)]
    + [ip6(f"2001:db8:3::{i:x}") for i in range(0x100, 0x180)]       # connected
    + [ip6("2001:db8:4::1"), ip6("2001:db8:5::9"), ip6("2001:db8:dead::1"), LOCAL]
)


# ---------------------------------------------------------------- valid packets (seeds)


def valid_packet(rng: random.Random) -> bytes:
    """One valid XCAST6 v2 or XOU packet of a random shape."""
    n = rng.choice((1, 2, 3, 5, 8, 8, 16, 32, 64, 126)) if rng.random() < 0.9 else rng.randint(1, 126)
    dests = rng.sample(POOL, min(n, len(POOL)))
    n = len(dests)
    bitmap = rng.getrandbits(n) or 1 if rng.random() < 0.5 else None
    flags = rng.choice((0, 0, FLAG_DONT_X2U, FLAG_ANONYMOUS, FLAG_ANONYMOUS | FLAG_DONT_X2U))
    hop_limit = rng.choice((0, 1, 2, 64, 255))
    payload = rng.randbytes(rng.choice((0, 1, 7, 16, 64, 200, 1000)))
    sport, dport = rng.randrange(65536), rng.randrange(65536)
    r = rng.random()
    if r < 0.2:
        data = build_xou(SENDER, dests, payload, sport=sport, dport=dport, hop_limit=hop_limit, flags=flags,
                         bitmap=bitmap)
    elif r < 0.3:
        data = build_xcast(SENDER, dests, payload, sport=sport, hop_limit=hop_limit, flags=flags,
                           bitmap=bitmap, ports=[rng.randrange(65536) for _ in range(n)])
    elif r < 0.37:
        echo = bytes((rng.choice((128, 129, 1)), 0, 0, 0)) + payload[:32]
        data = build_xcast(SENDER, dests, hop_limit=hop_limit, flags=flags, bitmap=bitmap,
                           transport=NH_ICMPV6, transport_bytes=echo)
    else:
        data = build_xcast(SENDER, dests, payload, sport=sport, dport=dport, hop_limit=hop_limit, flags=flags,
                           bitmap=bitmap)
    if rng.random() < 0.08:    # a sender that left the UDP checksum out
        p = codec.parse(data)
        if isinstance(p, XcastPacket) and p.transport == NH_UDP:
            c = p.transport_off + 6
            data = data[:c] + b"\0\0" + data[c + 2:]
    return data


def frame(rng: random.Random, ipv6: bytes) -> bytes:
    """Ethernet, 802.1Q, or 802.1ad + 802.1Q around ``ipv6``."""
    r = rng.random()
    if r < 0.4:
        return build_l2(ipv6, dst_mac=b"\x02" * 6, src_mac=b"\x04" * 6)
    if r < 0.8:
        return build_l2(ipv6, dst_mac=b"\x02" * 6, src_mac=b"\x04" * 6, vlan=rng.randrange(4096))
    outer = struct.pack("!HH", 0x88A8, rng.randrange(4096))
    inner = struct.pack("!HH", 0x8100, rng.randrange(4096))
    return b"\x02" * 6 + b"\x04" * 6 + outer + inner + b"\x86\xdd" + ipv6


# ---------------------------------------------------------------- mutations


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """1-4 of: byte flips, inserts, deletes, duplicated slices, a splice with ``other``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if not b:
            b += rng.randbytes(rng.randint(1, 8))
        elif op < 0.45:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.6:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op < 0.75:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 32)]
        elif op < 0.85:
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 64))
            k = rng.randrange(len(b) + 1)
            b[k:k] = b[i:j]
        else:
            cut = rng.randrange(len(b) + 1)
            b = b[:cut] + other[rng.randrange(len(other) + 1):]
    return bytes(b)


def corrupt_field(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One header field of a valid packet set to a boundary or random value."""
    b = bytearray(data)
    p = codec.parse(data)     # the generator's own use (the targets' ``parse`` is the one under test)
    choices = ["outer_plen", "inner_plen", "n", "hel", "bitmap"]
    if isinstance(p, XcastPacket):
        if p.transport == NH_UDP:
            choices.append("udp_len")
        if p.ports is not None:
            choices += ["port_list_len", "port_list_entry"]
    what = rng.choice(choices)

    def u16(off: int) -> None:
        if off + 2 <= len(b):
            old = b[off] << 8 | b[off + 1]
            v = rng.choice((0, 1, old - 1, old + 1, old + 16, 0xFFFF, rng.randrange(65536))) & 0xFFFF
            b[off:off + 2] = v.to_bytes(2, "big")

    def u8(off: int, near: int) -> None:
        if off < len(b):
            b[off] = rng.choice((0, 1, near - 1, near + 1, 126, 127, 128, 255, rng.randrange(256))) & 0xFF

    if what == "outer_plen":
        u16(4)
    elif what == "inner_plen":
        u16(44)
    elif what == "n":
        u8(RH_N_OFF if not isinstance(p, XcastPacket) or p.encoding is Encoding.XCAST6 else 88 + 16,
           b[RH_N_OFF] if len(b) > RH_N_OFF else 0)
    elif what == "hel":
        u8(RH_OFF + 1, b[RH_OFF + 1] if len(b) > RH_OFF + 1 else 0)
    elif what == "bitmap":
        off = p.bitmap_off if isinstance(p, XcastPacket) else BITMAP_OFF
        if off + BITMAP_LEN <= len(b):
            r = rng.random()
            if r < 0.3:
                bm = 0
            elif r < 0.6 and isinstance(p, XcastPacket):
                bm = p.bitmap | 1 << rng.randrange(p.n, 128)     # a bit beyond N
            else:
                bm = rng.getrandbits(128)
            b[off:off + BITMAP_LEN] = bm.to_bytes(BITMAP_LEN, "little")
    elif what == "udp_len" and isinstance(p, XcastPacket):
        u16(p.transport_off + 4)
    elif what == "port_list_len" and isinstance(p, XcastPacket):
        u8(p.dest_off + 16 * p.n + 1, b[p.dest_off + 16 * p.n + 1])
    elif what == "port_list_entry" and isinstance(p, XcastPacket):
        start = p.dest_off + 16 * p.n + 2
        i = start + rng.randrange(max(1, p.transport_off - start))
        if i < len(b):
            b[i] = rng.randrange(256)
    return what, bytes(b)


# ---------------------------------------------------------------- generator


@dataclass
class Generator:
    """The weighted input mix; ``sessions`` holds headers of recently learned templates."""

    rng: random.Random
    seeds: list[bytes] = field(default_factory=list)
    sessions: list[bytes] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for _ in range(600):
            self.seeds.append(valid_packet(self.rng))

    def learned(self, packet: bytes) -> None:
        """A flow template was learned from ``packet``: later inputs revisit its session."""
        if len(self.sessions) < 512:
            self.sessions.append(packet)
        else:
            self.sessions[self.rng.randrange(512)] = packet

    def __call__(self) -> tuple[str, bytes, bool]:
        """(kind, bytes, whether they start with an Ethernet header)."""
        rng = self.rng
        r = rng.random()
        seed = rng.choice(self.seeds)
        l2 = False
        if r < 0.06:
            kind, data = "random", rng.randbytes(rng.randrange(0, 400))
        elif r < 0.10:
            kind, data, l2 = "random_l2", rng.randbytes(rng.randrange(0, 64)), True
        elif r < 0.36:
            kind, data = "mutation", mutate(rng, seed, rng.choice(self.seeds))
        elif r < 0.44:
            kind, data = "truncation", seed[: rng.randrange(len(seed) + 1)]
        elif r < 0.56:
            what, data = corrupt_field(rng, seed)
            kind = f"corrupt_{what}"
        elif r < 0.66:
            kind, l2 = "framed", True
            data = frame(rng, seed)
            if rng.random() < 0.5:
                data = mutate(rng, data, seed) if rng.random() < 0.7 else data[: rng.randrange(len(data) + 1)]
        elif r < 0.86 and self.sessions:
            base = rng.choice(self.sessions)
            key = flow_key(base) or b""
            if rng.random() < 0.85:     # same header, other checksum and payload: a flow cache hit
                kind = "session"
                tail = bytearray(base[len(key):])
                for _ in range(rng.randint(0, 3)):
                    if tail:
                        tail[rng.randrange(len(tail))] = rng.randrange(256)
                if rng.random() < 0.1 and len(tail) >= 2:
                    tail[0:2] = b"\0\0"      # no UDP checksum: X2U templates must not apply
                data = key + bytes(tail)
            else:                        # same header, another length
                kind = "session_length"
                data = key + rng.randbytes(max(0, len(base) - len(key) + rng.randint(-8, 8)))
        elif r < 0.93:
            kind, data = "valid", valid_packet(rng)
        else:
            kind, data = "valid", seed
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return kind, data, l2


# ---------------------------------------------------------------- independent checks


def word_sum(b: bytes) -> int:
    """One's-complement sum of 16-bit words, written independently of engine.wire.checksum."""
    if len(b) & 1:
        b += b"\0"
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def udp_ok(src: bytes, dst: bytes, udp: bytes) -> bool:
    pseudo = src + dst + struct.pack("!IxxxB", len(udp), NH_UDP)
    return word_sum(pseudo + udp) == 0xFFFF


def original_udp_ok(pkt: XcastPacket) -> bool:
    """The sender's UDP checksum is right (XCAST6: pseudo-header with ff0e::114; XOU: bitmap zeroed)."""
    d = pkt.data
    t = pkt.transport_off
    if pkt.encoding is Encoding.XOU:
        udp = d[t:pkt.bitmap_off] + bytes(BITMAP_LEN) + d[pkt.dest_off:]
        return udp_ok(pkt.inner_src, pkt.inner_dst, udp)
    return udp_ok(pkt.orig_src, ALL_XCAST_NODES, d[t:])


class Mismatch(AssertionError):
    """A broken property (not an exception of the code under test)."""


def check_x2u_copy(out: bytes, pkt: XcastPacket, dest: bytes, checked: bool) -> None:
    """An X2U copy: IPv6 + UDP to ``dest`` from the original sender; right checksum when the
    original's was right (``checked``) or absent."""
    if len(out) < 48 or out[0] >> 4 != 6 or out[6] != NH_UDP:
        raise Mismatch("x2u copy is not IPv6/UDP")
    if (out[4] << 8 | out[5]) != len(out) - 40 or (out[44] << 8 | out[45]) != len(out) - 40:
        raise Mismatch("x2u copy length fields")
    if out[24:40] != dest or out[8:24] != pkt.orig_src:
        raise Mismatch("x2u copy addresses")
    if checked and not udp_ok(out[8:24], out[24:40], out[40:]):
        raise Mismatch("x2u copy UDP checksum wrong although the original's was right")


# ---------------------------------------------------------------- targets


class Targets:
    """parse (with and without L2), two branchers, X2U and the worker's flow cache."""

    def __init__(self) -> None:
        fib = small_fib()
        self.egress = Egress(LINKS)
        self.brancher = Brancher(fib, LINKS.source_for, egress_ok=self.egress.routable)   # the worker's
        self.local = Brancher(small_fib(), LINKS.source_for, frozenset({LOCAL}), drop_icmp_echo=True)
        self.cache = FlowCache()
        self.ring = TxRing(capacity=256, slot_size=SLOT)
        self.hits = 0
        self.learned = 0
        self.own = frozenset(link.engine_addr for link in LINKS.links())
        self.relay_outcomes: dict[str, int] = {}

    def parse(self, data: bytes, l2: bool) -> XcastPacket | Reject:
        p = parse(data, l2=l2)
        if not isinstance(p, XcastPacket | Reject):
            raise Mismatch(f"parse returned {type(p).__name__}")
        if not l2:
            q = parse_checked(data)
            if p != q:
                raise Mismatch("fast path and full checker disagree")
        return p

    def branch(self, pkt: XcastPacket) -> None:
        """Both branchers; every copy checked (X2U: addresses/checksum; multi: parses again)."""
        checked = pkt.transport == NH_UDP and (
            original_udp_ok(pkt) or pkt.data[pkt.transport_off + 6:pkt.transport_off + 8] == b"\0\0")
        for b, explain in ((self.brancher, False), (self.local, True)):
            res = b.branch(pkt, explain=explain)
            for c in res.copies:
                if c.x2u:
                    check_x2u_copy(c.data, pkt, pkt.dest(c.dest_indexes[0]), checked)
                    continue
                q = parse(c.data)
                if not isinstance(q, XcastPacket):
                    raise Mismatch(f"multi copy does not parse: {q.reason.value}")
                if q.bitmap & ~pkt.bitmap or q.n != pkt.n or q.hop_limit != pkt.hop_limit - 1:
                    raise Mismatch("multi copy bitmap/N/hop limit")
            for c in res.local:
                if pkt.transport == NH_UDP:
                    check_x2u_copy(c.data, pkt, pkt.dest(c.dest_indexes[0]), checked)

    def x2u(self, pkt: XcastPacket, rng: random.Random) -> None:
        """The one-off X2U of up to four live destinations."""
        if pkt.transport != NH_UDP or not pkt.bitmap:
            return
        checked = original_udp_ok(pkt) or pkt.data[pkt.transport_off + 6:pkt.transport_off + 8] == b"\0\0"
        live = pkt.live_indexes
        for i in rng.sample(live, min(4, len(live))):
            d = pkt.dest(i)
            check_x2u_copy(x2u(pkt, i, d, max(0, pkt.hop_limit - 1)), pkt, d, checked)

    def relay(self, data: bytes, rng: random.Random) -> None:
        """A router's error quoting ``data`` (made one of our copies most of the time), relayed."""
        engine = rng.choice(sorted(self.own))
        b = bytearray(data)
        if len(b) >= 24 and rng.random() < 0.8:
            b[8:24] = engine                     # the outer source: one of our copies
        quote = bytes(b[: rng.choice((len(b), len(b), rng.randrange(len(b) + 1)))])
        icmp_type = rng.choice((1, 2, 3))
        err = build_error(icmp_type, 0, rng.choice((1280, 1400, 1500, 9000)), ROUTER, engine, quote)
        msg = parse_icmp6(err)
        if msg is None:
            raise Mismatch("the router's error does not parse")
        quote = msg.quote                        # what fits in 1,280 bytes
        whole = len(quote) >= 40 and len(quote) == 40 + (quote[4] << 8 | quote[5])
        if whole and parse_quoted(quote) != parse_checked(quote):
            raise Mismatch("parse_quoted differs from parse_checked on a whole packet")
        plan = plan_relay(msg, self.own)
        if plan is None:
            raise Mismatch("an error to our address of a relayed type got no plan")
        outcome = "relayed" if plan.refused is None else plan.refused.split(" (")[0]
        self.relay_outcomes[outcome] = self.relay_outcomes.get(outcome, 0) + 1
        if plan.refused is not None:
            return
        out = plan.build(LINKS.links()[0].engine_addr)
        m = parse_icmp6(out)
        if m is None or not m.checksum_ok or len(out) > 1280 or m.icmp_type != icmp_type:
            raise Mismatch("relayed error malformed (length, checksum or type)")
        pkt = parse_quoted(quote)
        k = min(len(plan.quote), len(m.quote))
        if (not isinstance(pkt, XcastPacket) or m.dst != pkt.orig_src
                or not k or m.quote[:k] != plan.quote[:k]):
            raise Mismatch("relayed error not to the inner source or not quoting what the plan says")
        if plan.kind is ErrorKind.PACKET_TOO_BIG:     # the sender's packet: its outer addresses back
            if (plan.quote[:8] != quote[:8] or plan.quote[8:24] != pkt.orig_src
                    or plan.quote[24:40] == bytes(16) or plan.quote[40:] != quote[40:]):
                raise Mismatch("relayed Packet Too Big does not quote the packet as the sender sent it")
        elif plan.quote != quote[40:]:
            raise Mismatch("relayed error does not quote the inner packet")
        if (m.interface is None) != (plan.kind is ErrorKind.PACKET_TOO_BIG) or (
                m.interface is not None and m.interface[1] != ROUTER):
            raise Mismatch("relayed error does not name the router")

    def _expected(self, res: BranchResult) -> tuple[list[tuple[int, bytes]], list[tuple[str, int]]]:
        frames = []
        for c in res.copies:
            e = self.egress.resolve(c.nexthop.ifname)
            if not isinstance(e, str) and len(c.data) <= e.mtu and len(c.data) + len(e.l2) <= SLOT:
                frames.append((e.ifindex, e.l2 + c.data))
        drops = [("drop." + str(r.value), n) for r, n in res.drops.items() if r not in NOT_XCAST]
        return frames, drops

    def flow(self, packet: bytes, on_learn: Callable[[bytes], None]) -> None:
        """The worker's path: a cached template must render what branching makes, byte for byte."""
        key = flow_key(packet)
        if key is not None:
            tpl = self.cache.flows.get(key)
            if tpl is not None and applies(tpl, packet):
                self.hits += 1
                res = self.brancher.branch(packet)
                frames, drops = self._expected(res)
                if render(tpl, packet) != frames:
                    raise Mismatch("template render differs from branching")
                if sorted(tpl.drops) != sorted(drops):
                    raise Mismatch("template drop counts differ from branching")
                ring = self.ring
                ring.count = 0
                if not write_frames(tpl, packet, ring.arena, ring.put) or ring.frames() != frames:
                    raise Mismatch("write_frames differs from branching")
                return
        res = self.brancher.branch(packet)
        if key is None or not res.copies or any(r in NOT_XCAST for r in res.drops):
            return
        _, drops = self._expected(res)
        tpl = learn(packet, res, self.egress.resolve, SLOT, drops, self.ring.prepare)
        if tpl is not None:
            self.cache.put(key, tpl)
            self.learned += 1
            on_learn(packet)


# ---------------------------------------------------------------- campaign


@dataclass
class Finding:
    """One crash or mismatch class: target, exception type, where, first reproducer."""

    target: str
    exc_type: str
    where: str
    message: str
    reproducer_hex: str
    l2: bool
    count: int = 0
    extra_hex: str = ""




def run(inputs: int, seed: int = 1, progress_every: int = 100_000,
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the campaign; returns the result document (see the module docstring)."""
    rng = random.Random(seed)
    gen = Generator(rng)
    t = Targets()
    crashes: dict[tuple[str, str, str], Finding] = {}
    mismatches: dict[tuple[str, str], Finding] = {}
    outcomes: dict[str, int] = {}
    rss_start, peak_start = rss_kib(), peak_rss_kib()
    samples: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    last_learned: list[bytes] = [b""]

    def on_learn(p: bytes) -> None:
        gen.learned(p)
        last_learned[0] = p

    for n in range(1, inputs + 1):
        _kind, data, l2 = gen()
        stage = "parse"
        try:
            p = t.parse(data, l2)
            if isinstance(p, Reject):
                outcomes[p.reason.value] = outcomes.get(p.reason.value, 0) + 1
            else:
                outcomes["parsed"] = outcomes.get("parsed", 0) + 1
                stage = "branch"
                t.branch(p)
                stage = "x2u"
                t.x2u(p, rng)
            if not l2:
                stage = "relay"
                t.relay(data, rng)
            stage = "flowcache"
            raw = data
            if l2:      # the worker sees the frame after the link header (padding included)
                s = strip_l2(data)
                raw = bytes(s[0]) if not isinstance(s, Reject) else b""
            if raw:
                t.flow(raw, on_learn)
        except Mismatch as exc:
            k = (stage, str(exc))
            m = mismatches.get(k)
            if m is None:
                m = mismatches[k] = Finding(stage, "Mismatch", stage, str(exc), data.hex(), l2,
                                            extra_hex=last_learned[0].hex() if stage == "flowcache" else "")
            m.count += 1
        except Exception as exc:
            ck = (stage, type(exc).__name__, where(exc, "/engine/"))
            c = crashes.get(ck)
            if c is None:
                c = crashes[ck] = Finding(stage, ck[1], ck[2], str(exc)[:200], data.hex(), l2)
            c.count += 1
        if n % progress_every == 0 or n == inputs:
            elapsed = time.perf_counter() - t0
            sample = {"inputs": n, "seconds": round(elapsed, 2), "inputs_per_s": round(n / elapsed),
                      "rss_kib": rss_kib(), "peak_rss_kib": peak_rss_kib(),
                      "crashes": sum(c.count for c in crashes.values()),
                      "mismatches": sum(m.count for m in mismatches.values()),
                      "flow_cache_hits": t.hits, "templates": len(t.cache.flows)}
            samples.append(sample)
            out(f"{n:>10,} inputs  {sample['inputs_per_s']:>6,}/s  rss {sample['rss_kib'] / 1024:6.1f} MiB  "
                f"peak {sample['peak_rss_kib'] / 1024:6.1f} MiB  crashes {sample['crashes']}  "
                f"mismatches {sample['mismatches']}  flow hits {t.hits:,}")
    elapsed = time.perf_counter() - t0
    return {
        "inputs": inputs,
        "seed": seed,
        "seconds": round(elapsed, 2),
        "inputs_per_s": round(inputs / elapsed),
        "crash_count": sum(c.count for c in crashes.values()),
        "crash_classes": [c.__dict__ for c in sorted(crashes.values(), key=lambda c: -c.count)],
        "mismatch_count": sum(m.count for m in mismatches.values()),
        "mismatch_classes": [m.__dict__ for m in sorted(mismatches.values(), key=lambda m: -m.count)],
        "input_kinds": dict(sorted(gen.kinds.items())),
        "parse_outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1])),
        "flow_cache": {"hits_checked": t.hits, "templates_learned": t.learned,
                       "evictions": t.cache.evictions, "kept": len(t.cache.flows),
                       "kept_bytes": t.cache.nbytes},
        "plan_evictions": t.brancher.plan_evictions,
        "relay_outcomes": dict(sorted(t.relay_outcomes.items(), key=lambda kv: -kv[1])),
        "rss_kib": {"start": rss_start, "end": rss_kib(), "peak_start": peak_start,
                    "peak_end": peak_rss_kib()},
        "samples": samples,
        "python": sys.version.split()[0],
    }


def report(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """Print the totals and the crash/mismatch classes."""
    rss = result["rss_kib"]
    fc = result["flow_cache"]
    out(f"\n{result['inputs']:,} inputs in {result['seconds']} s: {result['inputs_per_s']:,} inputs/s; "
        f"RSS start {rss['start'] / 1024:.1f} MiB, end {rss['end'] / 1024:.1f} MiB, "
        f"peak {rss['peak_end'] / 1024:.1f} MiB")
    out(f"parsed {result['parse_outcomes'].get('parsed', 0):,}; distinct reject reasons "
        f"{len(result['parse_outcomes']) - 1}; flow cache: {fc['hits_checked']:,} hits checked byte for "
        f"byte, {fc['templates_learned']:,} templates learned, {fc['evictions']:,} evicted")
    for title, key in (("crashes", "crash"), ("mismatches", "mismatch")):
        classes = result[f"{key}_classes"]
        if not classes:
            out(f"{title}: 0")
            continue
        out(f"{title}: {result[f'{key}_count']} in {len(classes)} classes")
        for c in classes:
            out(f"  {c['count']:>8}  {c['target']}: {c['exc_type']} at {c['where']}: {c['message']}")
            more = "..." if len(c["reproducer_hex"]) > 300 else ""
            out(f"            reproducer{' (L2)' if c['l2'] else ''}: {c['reproducer_hex'][:300]}{more}")


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print, write JSON; exit 1 on any crash or mismatch."""
    return campaign_main(argv, (__doc__ or "").split("\n")[0], "bench/results/fuzz_packets.json", run, report,
                         lambda result: bool(result["crash_count"] or result["mismatch_count"]))


if __name__ == "__main__":
    sys.exit(main())
