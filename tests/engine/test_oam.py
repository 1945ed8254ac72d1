"""traceroute/ping logic against a simulated network (no root): probe numbering by the inner
flow label, matching answers, the branch tree, per-destination loss and RTTs."""

from __future__ import annotations

import json
import struct

from engine.forwarding.icmp_errors import plan_relay
from engine.tools.oam import (
    Prober,
    build_tree,
    classify,
    ping,
    render_ping,
    render_tree,
    trace_json,
    traceroute,
)
from engine.wire.codec import parse
from engine.wire.icmp6 import IcmpMessage, build_error, parse_icmp6
from engine.wire.layout import INNER_OFF
from engine.wire.packet import XcastPacket
from tests.engine.helpers import a

SND = a("2001:db8:a0::2")
RA, EA, RB, EB = a("2001:db8:a0::1"), a("2001:db8:ea0::2"), a("2001:db8:ab::2"), a("2001:db8:eb0::2")
H1, H2, H3, H4 = a("2001:db8:a1::2"), a("2001:db8:a2::2"), a("2001:db8:b3::2"), a("2001:db8:b4::2")
# per destination, who answers at hop limit 1, 2, ...: None = silent, the destination itself =
# Port Unreachable (reached).  Like the lab: a router between branch points answers the engine.
PATHS: dict[bytes, list[bytes | None]] = {
    H1: [RA, EA, RA, H1],
    H2: [RA, EA, RA, H2],
    H3: [RA, EA, None, None, EB, RB, H3],
    H4: [RA, EA, None, None, EB, RB, H4],
}
# where the copy is still an XCAST6 packet (several destinations) rather than an X2U unicast
XCAST_HOPS = {1, 2, 5}
# The silent hops between the engines, as they are with engine A relaying: rA's far side (its end
# of engine A's link towards rB) and rB, answering engine A's address on that link.
RA_FAR, EA_FAR = a("2001:db8:ea3::1"), a("2001:db8:ea3::2")
BETWEEN = {3: RA_FAR, 4: RB}


def x2u_of(pkt: XcastPacket, d: bytes) -> bytes:
    """What an X2U copy for ``d`` looks like (its first word is the inner header's)."""
    udp = pkt.data[pkt.transport_off :]
    return (pkt.data[INNER_OFF : INNER_OFF + 4] + struct.pack("!HBB", len(udp), 17, 1)
            + pkt.orig_src + d + udp)


class FakeNet:
    """A transport whose 'network' answers like PATHS; ``lose`` drops answers by (hop, dest)."""

    def __init__(self, lose: set[tuple[int, bytes]] | None = None, relay: bool = False) -> None:
        self.relay = relay
        self.source = SND
        self.now = 100.0
        self.queue: list[tuple[IcmpMessage, float]] = []
        self.lose = lose or set()

    def send(self, packet: bytes) -> float:
        self.now += 0.001
        pkt = parse(packet)
        assert isinstance(pkt, XcastPacket)
        h = pkt.hop_limit
        groups: dict[bytes, list[int]] = {}
        for i in pkt.live_indexes:
            d = pkt.dest(i)
            path = PATHS[d]
            who = path[min(h, len(path)) - 1]     # beyond the path: the destination answers
            if who is None and self.relay and h in BETWEEN:
                who = BETWEEN[h]
            if who is not None and (h, d) not in self.lose:
                groups.setdefault(who, []).append(i)
        for who, idx in groups.items():
            if who in BETWEEN.values():     # engine A's copy expired: the router answers A, A relays
                bm = sum(1 << i for i in idx)
                quoted = bytearray(pkt.data)
                quoted[88:104] = bm.to_bytes(16, "little")
                quoted[8:24] = EA_FAR
                msg = self._msg(build_error(3, 0, 0, who, EA_FAR, bytes(quoted)))
                plan = plan_relay(msg, {EA_FAR, EA})
                assert plan is not None and plan.refused is None
                self.queue.append((self._msg(plan.build(EA)), self.now + 0.0005 * h))
            elif h in XCAST_HOPS:
                bm = sum(1 << i for i in idx)
                quoted = bytearray(pkt.data)
                quoted[88:104] = bm.to_bytes(16, "little")
                err = build_error(3, 0, 0, who, SND, bytes(quoted))
                self.queue.append((self._msg(err), self.now + 0.0005 * h))
            else:
                for i in idx:
                    d = pkt.dest(i)
                    t, c = (1, 4) if who == d else (3, 0)
                    err = build_error(t, c, 0, who, SND, x2u_of(pkt, d))
                    self.queue.append((self._msg(err), self.now + 0.0005 * h))
        return self.now

    @staticmethod
    def _msg(err: bytes) -> IcmpMessage:
        m = parse_icmp6(err)
        assert m is not None and m.checksum_ok
        return m

    def receive(self, timeout: float) -> tuple[IcmpMessage, float] | None:
        return self.queue.pop(0) if self.queue else None


def test_classify_ignores_foreign_answers() -> None:
    net = FakeNet()
    pr = Prober(net)
    pr.send((H1, H2), 1)
    msg, t = net.queue.pop()
    assert classify(msg, pr.probes, SND, t) is not None
    assert classify(msg, pr.probes, a("2001:db8::99"), t) is None       # not our source
    assert classify(msg, {}, SND, t) is None                           # not our probe number
    info = IcmpMessage(RA, SND, 129, 0, 0, b"", True)                  # an echo reply
    assert classify(info, pr.probes, SND, t) is None


def test_traceroute_builds_the_branch_tree() -> None:
    res = traceroute(Prober(FakeNet()), [H1, H2, H3, H4], queries=2, wait=0.05, gap=0)
    assert res.hops_probed == 7 and all(res.reached(d) for d in (H1, H2, H3, H4))
    assert [w for w, _ in res.path(H3)] == [RA, EA, None, None, EB, RB, H3]
    tree = build_tree(res)
    assert len(tree) == 1 and tree[0].responder == RA and tree[0].dests == [H1, H2, H3, H4]
    ea = tree[0].children[0]
    assert ea.responder == EA and len(ea.rtts) == 2
    # under the engine: rA for h1 and h2, silence for h3/h4 until engine B
    assert [(c.responder, c.dests) for c in ea.children] == [(RA, [H1, H2]), (None, [H3, H4])]
    leaves = ea.children[0].children
    assert [(c.responder, c.kind) for c in leaves] == [(H1, "reached"), (H2, "reached")]
    eb = ea.children[1].children[0].children[0]
    assert eb.hop == 5 and eb.responder == EB and eb.dests == [H3, H4]
    text = "\n".join(render_tree(res))
    assert "2001:db8:eb0::2" in text and "├─" in text and "reached" in text
    doc = json.loads(json.dumps(trace_json(res)))
    hop5 = doc["paths"]["2001:db8:b3::2"][4]
    assert hop5 == {"hop": 5, "responder": "2001:db8:eb0::2", "kind": "time_exceeded"}


def test_traceroute_names_the_routers_an_engine_relays() -> None:
    res = traceroute(Prober(FakeNet(relay=True)), [H1, H2, H3, H4], queries=2, wait=0.05, gap=0)
    assert [w for w, _ in res.path(H3)] == [RA, EA, RA_FAR, RB, EB, RB, H3]
    assert res.relayed_by(3, RA_FAR) == EA and res.relayed_by(4, RB) == EA and res.relayed_by(2, EA) is None
    between = build_tree(res)[0].children[0].children[1]
    assert (between.responder, between.relayed_by, between.dests) == (RA_FAR, EA, [H3, H4])
    assert between.label == "2001:db8:ea3::1 (via 2001:db8:ea0::2)" and len(between.rtts) == 2
    assert between.children[0].responder == RB and between.children[0].children[0].responder == EB
    text = "\n".join(render_tree(res))
    assert "*" not in text and "2001:db8:ab::2 (via 2001:db8:ea0::2)" in text
    doc = json.loads(json.dumps(trace_json(res)))
    assert doc["paths"]["2001:db8:b3::2"][3] == {
        "hop": 4, "responder": "2001:db8:ab::2", "kind": "time_exceeded", "relayed_by": "2001:db8:ea0::2"}
    node = doc["tree"][0]["children"][0]["children"][1]
    assert node["responder"] == "2001:db8:ea3::1" and node["relayed_by"] == "2001:db8:ea0::2"
    assert {r["relayed_by"] for r in doc["replies"] if r["hop_limit"] in (3, 4) and "relayed_by" in r} == {
        "2001:db8:ea0::2"}


def test_traceroute_stops_probing_reached_destinations() -> None:
    net = FakeNet()
    pr = Prober(net)
    traceroute(pr, [H1, H3], queries=1, wait=0.05, gap=0)
    last = max(pr.probes.values(), key=lambda p: p.hop_limit)
    assert last.hop_limit == 7 and last.dests == (H3,)


def test_ping_loss_and_rtt_per_destination() -> None:
    pr = Prober(FakeNet())
    seen: list[int] = []
    res = ping(pr, [H1, H2], count=3, interval=0, wait=0.05, on_round=lambda k, reps: seen.append(len(reps)))
    assert seen == [2, 2, 2]
    s = res.stats(H1)
    assert s["sent"] == 3 and s["received"] == 3 and s["loss_pct"] == 0 and s["min_ms"] > 0


def test_ping_counts_loss() -> None:
    res = ping(Prober(FakeNet(lose={(64, H2)})), [H1, H2], count=2, interval=0, wait=0.05)
    assert res.stats(H1)["received"] == 2 and res.stats(H2)["received"] == 0
    assert res.stats(H2)["loss_pct"] == 100 and "avg_ms" not in res.stats(H2)
    lines = render_ping(res)
    assert "0% loss, rtt min/avg/max" in lines[1] and "100% loss" in lines[2]
