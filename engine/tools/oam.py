"""XCAST6 OAM: ``traceroute`` (the branch tree, like WIDE's traceroute6x) and ``ping``.

Both send XCAST6 UDP probes to an unused port (33434, as classic traceroute) through a raw
socket and read the ICMPv6 errors that come back on a raw ICMPv6 socket; the receivers need
no XCAST stack: an X2U copy reaching a plain host is answered with Port Unreachable.

* A probe is numbered by the **inner flow label** (20 bits): an X2U copy keeps the inner
  header's first word as its own, so the number comes back in every quote — an engine's or a
  router's Time Exceeded quoting the XCAST6 packet (inner header at offset 40) and a host's
  Port Unreachable or a router's Time Exceeded quoting an X2U copy (its only header).
* Which destinations an answer covers: for a quoted XCAST6 packet the live bits of its bitmap
  (the subset the answering node held), for a quoted X2U copy its destination.
* ``traceroute`` sends ``queries`` probes per hop limit 1, 2, ... to the destinations not
  reached yet, and merges the per-destination paths into a tree: at each hop, which node
  answered for which subset of the destinations, with the RTTs.
* A router between two branch points answers the previous branch point (the copy's outer
  source, which engines rewrite), not us; that engine relays the error to us, quoting our
  probe from its inner header and naming the router in an RFC 5837 Interface Information
  Object (engine/forwarding/icmp_errors.py).  Such an answer is shown as the router, marked
  with the engine that relayed it (``router (via engine)``; ``relayed_by`` in JSON).  An
  engine that does not relay leaves the router as ``*``.

The logic (:func:`classify`, :class:`TraceResult`, :func:`build_tree`, rendering) is pure and
tested without root; :class:`RawTransport` is the only I/O.
"""

from __future__ import annotations

import ipaddress
import random
import select
import socket
import statistics
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.wire.codec import build_xcast
from engine.wire.icmp6 import IcmpMessage, parse_icmp_message, parse_quote
from engine.wire.layout import (
    ICMP6_CODE_PORT_UNREACH,
    ICMP6_DEST_UNREACH,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_TIME_EXCEEDED,
    OUTER_DST_END,
    OUTER_DST_OFF,
)

PROBE_PORT = 33434
FLOW_MASK = 0xFFFFF


def txt(a: bytes | None) -> str:
    return "*" if a is None else str(ipaddress.IPv6Address(a))


@dataclass(frozen=True, slots=True)
class Probe:
    """One XCAST6 probe: its number (inner flow label), hop limit, destinations, send time."""

    flow: int
    hop_limit: int
    dests: tuple[bytes, ...]
    sent_at: float
    round: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """One ICMPv6 answer matched to its probe."""

    probe: Probe
    responder: bytes
    kind: str            # time_exceeded | reached | unreachable | too_big | other
    dests: tuple[bytes, ...]
    rtt_ms: float
    icmp_type: int
    code: int
    mtu: int | None = None
    relayed_by: bytes | None = None   # the engine that relayed the responder's error (RFC 5837 object)

    def to_dict(self) -> dict[str, Any]:
        return {"hop_limit": self.probe.hop_limit, "probe": self.probe.flow, "responder": txt(self.responder),
                **({"relayed_by": txt(self.relayed_by)} if self.relayed_by is not None else {}),
                "kind": self.kind, "type": self.icmp_type, "code": self.code,
                "destinations": [txt(d) for d in self.dests], "rtt_ms": round(self.rtt_ms, 3),
                **({"mtu": self.mtu} if self.mtu is not None else {})}


def classify(msg: IcmpMessage, probes: dict[int, Probe], source: bytes, now: float) -> Reply | None:
    """Match an ICMPv6 error to one of ``probes`` (by flow label and source); None if not ours."""
    if not msg.is_error:
        return None
    q = parse_quote(msg.quote)
    if q is None or q.kind == "other" or q.source != source:
        return None
    probe = probes.get(q.flow)
    if probe is None:
        return None
    if q.kind == "xcast":
        dests = tuple(d for i, d in enumerate(probe.dests) if q.bitmap >> i & 1)
    else:
        dests = (q.destination,) if q.destination in probe.dests else ()
    if not dests:
        return None
    t, code = msg.icmp_type, msg.code
    if t == ICMP6_TIME_EXCEEDED:
        kind = "time_exceeded"
    elif t == ICMP6_DEST_UNREACH and code == ICMP6_CODE_PORT_UNREACH and msg.src in dests:
        kind = "reached"
    elif t == ICMP6_DEST_UNREACH:
        kind = "unreachable"
    elif t == ICMP6_PACKET_TOO_BIG:
        kind = "too_big"
    else:
        kind = "other"
    responder, relayed_by = msg.src, None
    named = msg.interface if q.inner_only else None
    if named is not None:        # an engine's relay: the router it names answered
        responder, relayed_by = named[1], msg.src
    return Reply(probe, responder, kind, dests, (now - probe.sent_at) * 1000.0, t, code,
                 msg.param if t == ICMP6_PACKET_TOO_BIG else None, relayed_by)


# ------------------------------------------------------------------------------ transport
class Transport(Protocol):
    """Where probes go and answers come from (raw sockets; a fake in the tests)."""

    source: bytes

    def send(self, packet: bytes) -> float: ...          # returns the send time (wall clock)

    def receive(self, timeout: float) -> tuple[IcmpMessage, float] | None: ...


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_timespec = struct.Struct("@qq")


class RawTransport:
    """Probes out of a raw IPv6 socket (our own headers), answers from a raw ICMPv6 socket.

    Times are wall-clock seconds: the send time is taken right before ``sendto``, the arrival
    time is the kernel's receive timestamp (``SO_TIMESTAMPNS``), so an RTT does not include the
    time an answer waited in the socket while the next probes were sent.
    """

    def __init__(self, source: bytes, interface: str | None = None) -> None:
        from engine.tools.xcast_send import SendError, open_raw_socket

        self.source = source
        self.tx = open_raw_socket(interface)
        try:
            self.rx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except PermissionError:
            self.tx.close()
            raise SendError("raw ICMPv6 socket needs CAP_NET_RAW (run as root)") from None
        self.rx.setblocking(False)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def send(self, packet: bytes) -> float:
        dst = txt(packet[OUTER_DST_OFF:OUTER_DST_END])
        t = time.time()
        self.tx.sendto(packet, (dst, 0))
        return t

    def receive(self, timeout: float) -> tuple[IcmpMessage, float] | None:
        r, _, _ = select.select([self.rx], [], [], max(0.0, timeout))
        if not r:
            return None
        data, anc, _flags, addr = self.rx.recvmsg(65535, 64)
        now = time.time()
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _timespec.size:
                sec, nsec = _timespec.unpack_from(raw)
                now = sec + nsec / 1e9
        src = ipaddress.IPv6Address(addr[0].split("%", 1)[0]).packed
        msg = parse_icmp_message(src, self.source, data)
        return None if msg is None else (msg, now)

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


class Prober:
    """Numbers, builds and sends probes; collects the replies that belong to them."""

    def __init__(self, transport: Transport, port: int = PROBE_PORT, payload: bytes = b"xcast6-oam") -> None:
        self.transport = transport
        self.port = port
        self.payload = payload
        self.probes: dict[int, Probe] = {}
        self._next = random.randrange(1, FLOW_MASK)

    def send(self, dests: tuple[bytes, ...], hop_limit: int, round_: int = 0) -> Probe:
        flow = self._next
        self._next = self._next % FLOW_MASK + 1        # 1..0xFFFFF, never 0
        pkt = build_xcast(self.transport.source, list(dests), self.payload, sport=PROBE_PORT + 1000,
                          dport=self.port, hop_limit=hop_limit, inner_flow=flow)
        probe = Probe(flow, hop_limit, dests, self.transport.send(pkt), round_)
        self.probes[flow] = probe
        return probe

    def collect(self, until: float, done: Callable[[list[Reply]], bool] | None = None) -> list[Reply]:
        """Replies to our probes until the monotonic time ``until`` (or ``done(replies)``)."""
        out: list[Reply] = []
        while True:
            left = until - time.monotonic()
            if left <= 0 or (done is not None and done(out)):
                return out
            got = self.transport.receive(left)
            if got is None:
                continue
            rep = classify(got[0], self.probes, self.transport.source, got[1])
            if rep is not None:
                out.append(rep)


# ------------------------------------------------------------------------------ traceroute
@dataclass
class TraceResult:
    """Everything a traceroute learned: replies per hop, and per destination its path."""

    source: bytes
    dests: tuple[bytes, ...]
    replies: list[Reply] = field(default_factory=list)
    hops_probed: int = 0

    def path(self, d: bytes) -> list[tuple[bytes | None, str]]:
        """(responder or None, kind) per hop limit 1..last, up to where ``d`` was reached."""
        out: list[tuple[bytes | None, str]] = []
        for h in range(1, self.hops_probed + 1):
            reps = [r for r in self.replies if r.probe.hop_limit == h and d in r.dests]
            if not reps:
                out.append((None, "none"))
                continue
            # the most frequent responder at this hop (ECMP/route change: the majority)
            counts: dict[bytes, int] = {}
            for r in reps:
                counts[r.responder] = counts.get(r.responder, 0) + 1
            best = max(counts, key=lambda k: counts[k])
            kind = next(r.kind for r in reps if r.responder == best)
            out.append((best, kind))
            if kind in ("reached", "unreachable"):
                break
        while out and out[-1][0] is None and not self.reached(d):
            out.pop()                 # trailing silence: not a hop we know anything about
        return out

    def relayed_by(self, hop: int, responder: bytes | None) -> bytes | None:
        """The engine that relayed ``responder``'s answers at ``hop`` (None: it answered us itself)."""
        return next((r.relayed_by for r in self.replies
                     if r.probe.hop_limit == hop and r.responder == responder and r.relayed_by), None)

    def reached(self, d: bytes) -> bool:
        return any(r.kind == "reached" and d in r.dests for r in self.replies)

    def done(self, d: bytes) -> bool:
        return any(r.kind in ("reached", "unreachable") and d in r.dests for r in self.replies)


@dataclass
class Node:
    """A node of the branch tree: at ``hop``, ``responder`` answered for ``dests``."""

    hop: int
    responder: bytes | None
    kind: str
    dests: list[bytes]
    rtts: list[float]
    children: list[Node] = field(default_factory=list)
    relayed_by: bytes | None = None

    @property
    def label(self) -> str:
        """The responder, and the engine that relayed its answer: ``router (via engine)``."""
        if self.relayed_by is None:
            return txt(self.responder)
        return f"{txt(self.responder)} (via {txt(self.relayed_by)})"

    def to_dict(self) -> dict[str, Any]:
        return {"hop": self.hop, "responder": None if self.responder is None else txt(self.responder),
                **({"relayed_by": txt(self.relayed_by)} if self.relayed_by is not None else {}),
                "kind": self.kind, "destinations": [txt(d) for d in self.dests],
                "rtt_ms": [round(x, 3) for x in self.rtts], "children": [c.to_dict() for c in self.children]}


def build_tree(res: TraceResult) -> list[Node]:
    """Merge the destinations' paths: a node per (hop, answering node) under its parent."""
    paths = {d: res.path(d) for d in res.dests}

    def grow(dests: list[bytes], hop: int) -> list[Node]:
        groups: dict[bytes | None, list[bytes]] = {}
        kinds: dict[bytes | None, str] = {}
        for d in dests:
            p = paths[d]
            if len(p) >= hop:
                who, kind = p[hop - 1]
                groups.setdefault(who, []).append(d)
                kinds.setdefault(who, kind)
        nodes = []
        for who, ds in groups.items():
            rtts = [r.rtt_ms for r in res.replies
                    if r.probe.hop_limit == hop and r.responder == who and set(r.dests) & set(ds)]
            node = Node(hop, who, kinds[who], ds, rtts, relayed_by=res.relayed_by(hop, who))
            node.children = grow(ds, hop + 1)
            nodes.append(node)
        return nodes

    return grow(list(res.dests), 1)


def traceroute(prober: Prober, dests: Iterable[bytes], *, max_hops: int = 16, queries: int = 3,
               wait: float = 1.0, gap: float = 0.02) -> TraceResult:
    """Probe hop limits 1..``max_hops`` until every destination answered (reached or unreachable)."""
    res = TraceResult(prober.transport.source, tuple(dests))
    for h in range(1, max_hops + 1):
        left = tuple(d for d in res.dests if not res.done(d))
        if not left:
            break
        sent = []
        for _ in range(queries):
            sent.append(prober.send(left, h))
            if gap:
                time.sleep(gap)
        res.hops_probed = h

        def all_answered(reps: list[Reply], sent: list[Probe] = sent, left: tuple[bytes, ...] = left) -> bool:
            return all({d for r in reps if r.probe is p for d in r.dests} >= set(left) for p in sent)

        res.replies += prober.collect(time.monotonic() + wait, all_answered)
    return res


_KIND_TEXT = {"reached": "  reached", "unreachable": "  unreachable", "too_big": "  packet too big"}


def render_tree(res: TraceResult, names: dict[bytes, str] | None = None) -> list[str]:
    """The branch tree as text (one line per node, ``├─``/``└─`` where the tree branches)."""
    names = names or {}

    def label(d: bytes) -> str:
        return names.get(d, txt(d))

    lines = [f"xcast traceroute from {txt(res.source)} to {len(res.dests)} destinations, "
             f"{res.hops_probed} hops probed"]

    tree = build_tree(res)
    width = 22

    def widest(nodes: list[Node]) -> None:
        nonlocal width
        for n in nodes:
            width = max(width, len(n.label))
            widest(n.children)

    widest(tree)

    def walk(nodes: list[Node], indent: str) -> None:
        for k, n in enumerate(nodes):
            last = k == len(nodes) - 1
            branch = len(nodes) > 1
            lead = indent + (("└─ " if last else "├─ ") if branch else "")
            rtt = "  ".join(f"{x:.3f} ms" for x in n.rtts) if n.rtts else ""
            what = _KIND_TEXT.get(n.kind, "")
            ds = "{" + ", ".join(label(d) for d in n.dests) + "}"
            lines.append(f"{lead}{n.hop:>2}  {n.label:<{width}} {ds}{what}  {rtt}".rstrip())
            walk(n.children, indent + (("   " if last else "│  ") if branch else ""))

    walk(tree, "")
    for d in res.dests:
        if not res.done(d):
            lines.append(f"   {label(d)}: no answer from the destination within {res.hops_probed} hops")
    return lines


def trace_json(res: TraceResult) -> dict[str, Any]:
    """The whole result for ``--json``."""
    return {
        "source": txt(res.source),
        "destinations": [txt(d) for d in res.dests],
        "hops_probed": res.hops_probed,
        "paths": {txt(d): [{"hop": h, "responder": None if w is None else txt(w), "kind": k,
                            **({"relayed_by": txt(v)} if (v := res.relayed_by(h, w)) is not None else {})}
                           for h, (w, k) in enumerate(res.path(d), 1)] for d in res.dests},
        "tree": [n.to_dict() for n in build_tree(res)],
        "replies": [r.to_dict() for r in res.replies],
    }


# ------------------------------------------------------------------------------ ping
@dataclass
class PingResult:
    """Per destination: probes sent, answers and RTTs."""

    source: bytes
    dests: tuple[bytes, ...]
    rounds: int = 0
    replies: list[Reply] = field(default_factory=list)

    def stats(self, d: bytes) -> dict[str, Any]:
        per_round: dict[int, float] = {}
        for r in self.replies:
            if d in r.dests and r.kind == "reached":
                per_round.setdefault(r.probe.round, r.rtt_ms)
        rtts = list(per_round.values())
        got = len(rtts)
        loss = round(100.0 * (self.rounds - got) / self.rounds, 1) if self.rounds else 0.0
        out: dict[str, Any] = {"destination": txt(d), "sent": self.rounds, "received": got, "loss_pct": loss}
        if rtts:
            out.update(min_ms=round(min(rtts), 3), avg_ms=round(statistics.fmean(rtts), 3),
                       max_ms=round(max(rtts), 3))
        errors = sorted({r.kind for r in self.replies if d in r.dests and r.kind != "reached"})
        if errors:
            out["errors"] = errors
        return out


def ping(prober: Prober, dests: Iterable[bytes], *, count: int = 5, interval: float = 1.0,
         wait: float = 1.0, hop_limit: int = 64,
         on_round: Callable[[int, list[Reply]], None] | None = None) -> PingResult:
    """``count`` rounds, one XCAST6 probe to all destinations per round."""
    res = PingResult(prober.transport.source, tuple(dests))
    want = set(res.dests)
    for k in range(count):
        start = time.monotonic()
        p = prober.send(res.dests, hop_limit, k)
        res.rounds += 1

        def answered(reps: list[Reply], p: Probe = p) -> bool:
            return {d for r in reps if r.probe is p for d in r.dests} >= want

        reps = prober.collect(start + wait, answered)
        res.replies += reps
        if on_round is not None:
            on_round(k, [r for r in reps if r.probe is p])
        if k < count - 1:
            pause = start + interval - time.monotonic()
            if pause > 0:
                late = prober.collect(time.monotonic() + pause)   # late answers still count
                res.replies += late
    return res


def render_ping(res: PingResult, names: dict[bytes, str] | None = None) -> list[str]:
    names = names or {}
    lines = [f"--- xcast ping from {txt(res.source)}: {len(res.dests)} destinations, {res.rounds} rounds ---"]
    for d in res.dests:
        s = res.stats(d)
        line = (f"{names.get(d, txt(d)):<24} {s['sent']} sent, {s['received']} received, "
                f"{s['loss_pct']:g}% loss")
        if "avg_ms" in s:
            line += f", rtt min/avg/max = {s['min_ms']:.3f}/{s['avg_ms']:.3f}/{s['max_ms']:.3f} ms"
        if "errors" in s:
            line += f"  ({', '.join(s['errors'])})"
        lines.append(line)
    return lines
