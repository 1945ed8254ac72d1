"""End to end in the namespace lab: real routers (kernel + nftables divert), real snmpd, two
engines (the product daemon, ``xcast6-engine run``) syncing over SNMP, receivers logging every
datagram.  One lab for the session (fixture ``lab`` in conftest.py)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from typing import Any

import pytest

from engine.lab import engine_api, netns
from engine.lab.demo import deliveries, engine_counters, reset_logs, send_raw, send_with_cli, send_xcast
from engine.lab.topology import RECEIVER_PORT, Topology
from tests.lab.scapy_xcast import F_ANONYMOUS, F_DONT_X2U, xcast_packet

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]


def counters(topo: Topology) -> dict[str, dict[str, Any]]:
    out = {}
    for r in ("a", "b"):
        st = engine_counters(topo, r)
        assert st is not None, f"engine {r} has no counter file"
        out[r] = {**st["totals"], **{f"drop.{k}": v for k, v in st["drops"].items()}}
    return out


def delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {r: {k: after[r].get(k, 0) - before[r].get(k, 0) for k in after[r]
                if isinstance(after[r].get(k), int) and after[r].get(k, 0) != before[r].get(k, 0)}
            for r in after}


def payloads(tag: str, n: int = 2) -> list[bytes]:
    return [f"{tag} {os.getpid()} {time.time_ns()} #{i}".encode() for i in range(n)]


def assert_exactly_once(topo: Topology, got: dict[str, list[dict[str, Any]]], dests: list[str],
                        sent: list[bytes], kind: str | None = None) -> None:
    want = sorted(p.hex() for p in sent)
    for d in dests:
        recs = got.get(d, [])
        assert sorted(r["payload"] for r in recs) == want, \
            f"{d}: got {len(recs)} datagram(s), want {len(sent)}"
        for r in recs:
            assert r["src"] == topo.sender.addr, f"{d}: source {r['src']} is not the original sender"
            assert (r["sport"], r["dport"]) == (40000, RECEIVER_PORT), \
                f"{d}: ports {r['sport']}->{r['dport']}"
            assert r["csum_ok"], f"{d}: bad UDP checksum"
            if kind:
                assert r["kind"] == kind, f"{d}: arrived as {r['kind']}, expected {kind}"
    extra = set(got) - set(dests)
    assert not extra, f"datagrams reached addresses that were not destinations: {sorted(extra)}"


def receivers(topo: Topology) -> list[str]:
    return [h.addr for h in topo.receivers]


@pytest.mark.parametrize("flags", [0, F_DONT_X2U], ids=["x2u", "dont_x2u"])
@pytest.mark.parametrize("count", [1, 2, 5], ids=lambda n: f"{n}dest")
def test_exactly_once(lab: Topology, count: int, flags: int) -> None:
    dests = receivers(lab)[-count:] if count < 5 else receivers(lab)   # 1, 2 -> router-B side first
    sent = payloads(f"n{count} f{flags}")
    reset_logs(lab)
    before = counters(lab)
    send_xcast(lab, dests, sent, flags=flags)
    got = deliveries(lab, expect=len(dests) * len(sent))
    assert_exactly_once(lab, got, dests, sent, kind="xcast" if flags & F_DONT_X2U else "udp")
    d = delta(before, counters(lab))
    assert d["a"]["received"] == len(sent)
    if flags & F_DONT_X2U:
        assert d["a"].get("x2u_out", 0) == 0 and d["b"].get("x2u_out", 0) == 0


def test_all_destinations_including_loopbacks_and_anonymous(lab: Topology) -> None:
    dests = receivers(lab) + [h.loopbacks()[0] for h in lab.receivers]
    sent = payloads("all+anon")
    reset_logs(lab)
    send_xcast(lab, dests, sent, flags=F_ANONYMOUS)
    got = deliveries(lab, expect=len(dests) * len(sent))
    assert_exactly_once(lab, got, dests, sent)


def test_destination_without_route_is_counted(lab: Topology) -> None:
    dests = [lab.receivers[0].addr, "2001:db8:dead::1", lab.receivers[3].addr]
    sent = payloads("noroute", 1)
    reset_logs(lab)
    before = counters(lab)
    send_xcast(lab, dests, sent)
    got = deliveries(lab, expect=2)
    assert_exactly_once(lab, got, [dests[0], dests[2]], sent)
    d = delta(before, counters(lab))
    assert d["a"].get("drop.no_route") == 1, d


def test_hop_limit_runs_out_between_engines(lab: Topology) -> None:
    # sender 5 -> router A 4 -> engine A emits 3 -> router A 2 -> router B 1 -> engine B drops
    dests = receivers(lab)
    sent = payloads("hop", 1)
    reset_logs(lab)
    before = counters(lab)
    send_xcast(lab, dests, sent, hop_limit=5)
    got = deliveries(lab, expect=2)
    a_side = [h.addr for h in lab.receivers if h.router == "a"]
    assert_exactly_once(lab, got, a_side, sent)
    d = delta(before, counters(lab))
    assert d["b"]["received"] == 1
    assert d["b"].get("drop.hop_limit_exceeded") == 1, d
    assert d["b"].get("x2u_out", 0) == 0


def test_126_destinations_on_loopbacks(lab: Topology) -> None:
    dests = [a for h in lab.receivers for a in h.loopbacks()][:126]
    assert len(dests) == 126
    sent = payloads("126", 2)
    reset_logs(lab)
    before = counters(lab)
    send_xcast(lab, dests, sent)
    got = deliveries(lab, expect=126 * len(sent), timeout=5)
    assert_exactly_once(lab, got, dests, sent, kind="xcast")
    d = delta(before, counters(lab))
    # engine A: one copy per A-side host + one to router B; engine B: one per B-side host
    assert d["a"]["copies_out"] == 3 * len(sent), d
    assert d["b"]["copies_out"] == 3 * len(sent), d


def test_operator_cli_sender(lab: Topology) -> None:
    """``xcast6-engine send`` (the core's sender) run inside the sender namespace."""
    dests = receivers(lab)
    payload = f"cli {os.getpid()} {time.time_ns()}".encode()
    reset_logs(lab)
    send_with_cli(lab, dests, payload, 2, flags=F_ANONYMOUS)
    got = deliveries(lab, expect=2 * len(dests))
    assert_exactly_once(lab, got, dests, [payload, payload], kind="udp")


def test_scapy_reference_packet(lab: Topology) -> None:
    dests = receivers(lab)
    sent = payloads("scapy", 1)
    reset_logs(lab)
    send_raw(lab, [xcast_packet(lab.sender.addr, dests, sent[0], sport=40000, dport=RECEIVER_PORT)])
    got = deliveries(lab, expect=len(dests))
    assert_exactly_once(lab, got, dests, sent, kind="udp")


def _udp_send(topo: Topology, dst: str, data: bytes, tclass: int = 0) -> None:
    with netns.in_netns(topo.ns("snd")):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tclass)
        s.bind((topo.sender.addr, 40000))
        s.sendto(data, (dst, RECEIVER_PORT))
    finally:
        s.close()


def test_non_xcast_traffic_untouched(lab: Topology) -> None:
    reset_logs(lab)
    before = counters(lab)
    for h in lab.receivers:
        _udp_send(lab, h.addr, b"plain " + h.name.encode(), tclass=0x28)
    got = deliveries(lab, expect=5)
    for h in lab.receivers:
        recs = got.get(h.addr, [])
        assert [bytes.fromhex(r["payload"]) for r in recs] == [b"plain " + h.name.encode()]
        assert recs[0]["src"] == lab.sender.addr
    d = delta(before, counters(lab))
    assert d["a"].get("received", 0) == 0 and d["b"].get("received", 0) == 0, d


def _tx_packets(topo: Topology, ns: str, ifname: str) -> int:
    data = json.loads(netns.ip(ns, "-s", "-j", "link", "show", "dev", ifname).stdout)
    return int(data[0]["stats64"]["tx"]["packets"])


def _generation(topo: Topology, r: str) -> int:
    """Engine r's table generation from its daemon's ``/status`` (errors propagate: they say why)."""
    return int(engine_api.get_json(topo, r, "/status", timeout=10)["sync"]["generation"])


def _wait_engine_change(topo: Topology, r: str, gen_before: int, timeout: float = 15) -> None:
    """Wait until the daemon's table generation moved past ``gen_before`` (its sync applied a diff)."""
    deadline = time.monotonic() + timeout
    gen = gen_before
    while time.monotonic() < deadline:
        gen = _generation(topo, r)
        if gen > gen_before:
            return
        time.sleep(0.1)
    raise AssertionError(f"engine {r} did not pick up the route change within {timeout}s: generation {gen}")


def test_route_change_on_router_b(lab: Topology) -> None:
    h5 = lab.host("h5")
    rb = lab.router_ns("b")
    dests = [h5.loopbacks()[0], h5.loopbacks()[1], lab.receivers[0].addr]
    loop_net = f"{h5.loop_net}/64"
    reset_logs(lab)
    sent: list[bytes] = []
    gen_before = _generation(lab, "b")
    assert gen_before >= 0
    # Stream while the route moves from rb-h5 to the spare link rb-h5b and engine B resyncs.
    netns.ip(rb, "-6", "route", "replace", loop_net, "via", f"{lab.spare_net}2", "dev", "rb-h5b")
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            batch = payloads("change", 1)
            send_xcast(lab, dests, batch)
            sent += batch
            time.sleep(0.05)
        _wait_engine_change(lab, "b", gen_before)
        got = deliveries(lab, expect=len(dests) * len(sent), timeout=5)
        for d in dests:
            seen = [r["payload"] for r in got.get(d, [])]
            assert len(seen) == len(set(seen)), f"{d}: duplicated during the route change"
        # after convergence: exactly once, and the copies now leave on the spare link
        reset_logs(lab)
        tx_before = _tx_packets(lab, rb, "rb-h5b")
        after = payloads("converged", 3)
        send_xcast(lab, dests, after)
        got = deliveries(lab, expect=len(dests) * len(after))
        assert_exactly_once(lab, got, dests, after)
        assert _tx_packets(lab, rb, "rb-h5b") - tx_before >= len(after)
    finally:
        netns.ip(rb, "-6", "route", "replace", loop_net, "via", h5.addr, "dev", h5.router_if)


def _snmp6(ns: str) -> dict[str, int]:
    text = netns.run(["cat", "/proc/net/snmp6"], ns=ns).stdout
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}


def _guard_drops(topo: Topology, r: str) -> int:
    data = json.loads(netns.run(["nft", "-j", "list", "ruleset"], ns=topo.engine_ns(r)).stdout)
    return sum(int(e["counter"]["packets"]) for item in data["nftables"] if "rule" in item
               for e in item["rule"]["expr"] if "counter" in e)


def test_engine_kernel_neither_forwards_nor_answers(lab: Topology) -> None:
    """The diverted packets are the worker's alone: the engine's kernel drops its copy silently."""
    ens = lab.engine_ns("a")
    before, guard0 = _snmp6(ens), _guard_drops(lab, "a")
    dests = [h.addr for h in lab.receivers] + ["2001:db8:dead::1"]     # one without any route
    reset_logs(lab)
    send_xcast(lab, dests, payloads("guard", 5))
    deliveries(lab, expect=25)
    after = _snmp6(ens)
    assert _guard_drops(lab, "a") - guard0 == 5
    for key in ("Ip6OutForwDatagrams", "Icmp6OutDestUnreachs", "Icmp6OutParmProblems", "Icmp6OutTimeExcds"):
        assert after[key] == before[key], f"engine kernel {key} moved: {before[key]} -> {after[key]}"


def test_engine_counters_explain_every_packet(lab: Topology) -> None:
    st = engine_counters(lab, "a")
    assert st is not None
    t = st["totals"]
    assert t["received"] >= t["branched"] > 0
    assert st["latency"]["p50_us"] is not None
    assert ipaddress.IPv6Address(lab.sender.addr)
