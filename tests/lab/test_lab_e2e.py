"""End to end in the namespace lab: real routers (kernel + nftables divert), real snmpd, two
engines (the product daemon, ``xcast6-engine run``) syncing over SNMP, receivers logging every
datagram.

Every test runs in every lab variant (fixture ``e2e_lab``, tests/lab/variants.py): link mode ×
data path.  ``direct`` (a veth per router interface) on the host, ``vlan`` (802.1Q subinterfaces on
one trunk per router) inside the QEMU guest of tests/vm, the only kernel with 8021q here; each with
the TC program (``auto``, the default) and with the Python workers alone (``-python``).  After each
test the fixture checks that the counters show the data path the lab asked for.  The guest is
emulated (TCG, one vCPU), so deadlines there are stretched (``SLOW``)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from typing import Any

import pytest

from lab import build, engine_api, netns
from lab.demo import deliveries, engine_counters, reset_logs, send_raw, send_with_cli, send_xcast
from lab.topology import RECEIVER_PORT, Topology
from tests.lab.scapy_xcast import F_ANONYMOUS, F_DONT_X2U, xcast_packet

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

IN_VM = os.environ.get("XCAST6_IN_VM") == "1"
# Inside the QEMU/TCG guest, Python runs several times slower than on the host: deadlines are
# stretched by SLOW (a wait still ends as soon as its condition holds).  The quiet period after
# the expected datagrams arrived, which catches late duplicates, costs its full length in every
# test; measured, a whole send-and-deliver takes 0.1-0.3 s in the guest and under 0.05 s on the
# host, so 1 s there is at least as long, relative to delivery, as the host's 0.5 s.
SLOW = 6.0 if IN_VM else 1.0
QUIET_S = 1.0 if IN_VM else 0.5


def arrivals(topo: Topology, expect: int, timeout: float = 3.0) -> dict[str, list[dict[str, Any]]]:
    """The receivers' deliveries once ``expect`` arrived (or ``timeout`` passed), plus a quiet period
    in which a late duplicate would still show up."""
    return deliveries(topo, expect=expect, timeout=timeout * SLOW, settle=QUIET_S)


def diagnostics(topo: Topology) -> str:
    """Engines' status, counters and log tails: what a failed delivery needs (in the guest above all)."""
    out = []
    for r in ("a", "b"):
        out.append(f"engine {r}: status {build.read_status(topo, r)}")
        out.append(f"engine {r}: counters {engine_counters(topo, r)}")
        log = topo.state_dir / f"engine-{r}.log"
        if log.exists():
            out.append(f"engine {r} log tail: " + " | ".join(log.read_text().splitlines()[-8:]))
    return "\n".join(out)


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
    """Each of ``dests`` got each of ``sent`` once, unaltered, from the sender; nobody else got any."""
    try:
        _check_exactly_once(topo, got, dests, sent, kind)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnostics(topo)}") from None


def _check_exactly_once(topo: Topology, got: dict[str, list[dict[str, Any]]], dests: list[str],
                        sent: list[bytes], kind: str | None) -> None:
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
def test_exactly_once(e2e_lab: Topology, count: int, flags: int) -> None:
    dests = receivers(e2e_lab)[-count:] if count < 5 else receivers(e2e_lab)   # 1, 2 -> router-B side first
    sent = payloads(f"n{count} f{flags}")
    reset_logs(e2e_lab)
    before = counters(e2e_lab)
    send_xcast(e2e_lab, dests, sent, flags=flags)
    got = arrivals(e2e_lab, expect=len(dests) * len(sent))
    assert_exactly_once(e2e_lab, got, dests, sent, kind="xcast" if flags & F_DONT_X2U else "udp")
    d = delta(before, counters(e2e_lab))
    assert d["a"]["received"] == len(sent)
    if flags & F_DONT_X2U:
        assert d["a"].get("x2u_out", 0) == 0 and d["b"].get("x2u_out", 0) == 0


def test_all_destinations_including_loopbacks_and_anonymous(e2e_lab: Topology) -> None:
    dests = receivers(e2e_lab) + [h.loopbacks()[0] for h in e2e_lab.receivers]
    sent = payloads("all+anon")
    reset_logs(e2e_lab)
    send_xcast(e2e_lab, dests, sent, flags=F_ANONYMOUS)
    got = arrivals(e2e_lab, expect=len(dests) * len(sent))
    assert_exactly_once(e2e_lab, got, dests, sent)


def test_destination_without_route_is_counted(e2e_lab: Topology) -> None:
    dests = [e2e_lab.receivers[0].addr, "2001:db8:dead::1", e2e_lab.receivers[3].addr]
    sent = payloads("noroute", 1)
    reset_logs(e2e_lab)
    before = counters(e2e_lab)
    send_xcast(e2e_lab, dests, sent)
    got = arrivals(e2e_lab, expect=2)
    assert_exactly_once(e2e_lab, got, [dests[0], dests[2]], sent)
    d = delta(before, counters(e2e_lab))
    assert d["a"].get("drop.no_route") == 1, d


def test_hop_limit_runs_out_between_engines(e2e_lab: Topology) -> None:
    # sender 5 -> router A 4 -> engine A emits 3 -> router A 2 -> router B 1 -> engine B drops
    dests = receivers(e2e_lab)
    sent = payloads("hop", 1)
    reset_logs(e2e_lab)
    before = counters(e2e_lab)
    send_xcast(e2e_lab, dests, sent, hop_limit=5)
    got = arrivals(e2e_lab, expect=2)
    a_side = [h.addr for h in e2e_lab.receivers if h.router == "a"]
    assert_exactly_once(e2e_lab, got, a_side, sent)
    d = delta(before, counters(e2e_lab))
    assert d["b"]["received"] == 1
    assert d["b"].get("drop.hop_limit_exceeded") == 1, d
    assert d["b"].get("x2u_out", 0) == 0


def test_126_destinations_on_loopbacks(e2e_lab: Topology) -> None:
    dests = [a for h in e2e_lab.receivers for a in h.loopbacks()][:126]
    assert len(dests) == 126
    sent = payloads("126", 2)
    reset_logs(e2e_lab)
    before = counters(e2e_lab)
    send_xcast(e2e_lab, dests, sent)
    got = arrivals(e2e_lab, expect=126 * len(sent), timeout=5)
    assert_exactly_once(e2e_lab, got, dests, sent, kind="xcast")
    d = delta(before, counters(e2e_lab))
    # engine A: one copy per A-side host + one to router B; engine B: one per B-side host
    assert d["a"]["copies_out"] == 3 * len(sent), d
    assert d["b"]["copies_out"] == 3 * len(sent), d


def test_operator_cli_sender(e2e_lab: Topology) -> None:
    """``xcast6-engine send`` (the core's sender) run inside the sender namespace."""
    dests = receivers(e2e_lab)
    payload = f"cli {os.getpid()} {time.time_ns()}".encode()
    reset_logs(e2e_lab)
    send_with_cli(e2e_lab, dests, payload, 2, flags=F_ANONYMOUS)
    got = arrivals(e2e_lab, expect=2 * len(dests))
    assert_exactly_once(e2e_lab, got, dests, [payload, payload], kind="udp")


def test_scapy_reference_packet(e2e_lab: Topology) -> None:
    dests = receivers(e2e_lab)
    sent = payloads("scapy", 1)
    reset_logs(e2e_lab)
    send_raw(e2e_lab, [xcast_packet(e2e_lab.sender.addr, dests, sent[0], sport=40000, dport=RECEIVER_PORT)])
    got = arrivals(e2e_lab, expect=len(dests))
    assert_exactly_once(e2e_lab, got, dests, sent, kind="udp")


def _udp_send(topo: Topology, dst: str, data: bytes, tclass: int = 0) -> None:
    with netns.in_netns(topo.ns("snd")):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tclass)
        s.bind((topo.sender.addr, 40000))
        s.sendto(data, (dst, RECEIVER_PORT))
    finally:
        s.close()


@pytest.mark.parametrize("tclass", [0x28, 0x5C], ids=["dscp10", "dscp23"])
def test_non_xcast_traffic_untouched(e2e_lab: Topology, tclass: int) -> None:
    """Plain UDP is not diverted, even with the XCAST DSCP: the divert also matches next header 41."""
    reset_logs(e2e_lab)
    before = counters(e2e_lab)
    for h in e2e_lab.receivers:
        _udp_send(e2e_lab, h.addr, b"plain " + h.name.encode(), tclass=tclass)
    got = arrivals(e2e_lab, expect=5)
    for h in e2e_lab.receivers:
        recs = got.get(h.addr, [])
        assert [bytes.fromhex(r["payload"]) for r in recs] == [b"plain " + h.name.encode()]
        assert recs[0]["src"] == e2e_lab.sender.addr
    d = delta(before, counters(e2e_lab))
    assert d["a"].get("received", 0) == 0 and d["b"].get("received", 0) == 0, d


def _tx_packets(topo: Topology, ns: str, ifname: str) -> int:
    data = json.loads(netns.ip(ns, "-s", "-j", "link", "show", "dev", ifname).stdout)
    return int(data[0]["stats64"]["tx"]["packets"])


def _generation(topo: Topology, r: str) -> int:
    """Engine r's table generation from its daemon's ``/status`` (errors propagate: they say why)."""
    return int(engine_api.get_json(topo, r, "/status", timeout=10 * SLOW)["sync"]["generation"])


def _wait_engine_change(topo: Topology, r: str, gen_before: int, timeout: float = 15) -> None:
    """Wait until the daemon's table generation moved past ``gen_before`` (its sync applied a diff)."""
    timeout *= SLOW
    deadline = time.monotonic() + timeout
    gen = gen_before
    while time.monotonic() < deadline:
        gen = _generation(topo, r)
        if gen > gen_before:
            return
        time.sleep(0.1)
    raise AssertionError(f"engine {r} did not pick up the route change within {timeout}s: generation {gen}")


def test_route_change_on_router_b(e2e_lab: Topology) -> None:
    h5 = e2e_lab.host("h5")
    rb = e2e_lab.router_ns("b")
    dests = [h5.loopbacks()[0], h5.loopbacks()[1], e2e_lab.receivers[0].addr]
    loop_net = f"{h5.loop_net}/64"
    reset_logs(e2e_lab)
    sent: list[bytes] = []
    gen_before = _generation(e2e_lab, "b")
    assert gen_before >= 0
    # Stream while the route moves from rb-h5 to the spare link rb-h5b and engine B resyncs.
    netns.ip(rb, "-6", "route", "replace", loop_net, "via", f"{e2e_lab.spare_net}2", "dev", "rb-h5b")
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            batch = payloads("change", 1)
            send_xcast(e2e_lab, dests, batch)
            sent += batch
            time.sleep(0.05)
        _wait_engine_change(e2e_lab, "b", gen_before)
        got = arrivals(e2e_lab, expect=len(dests) * len(sent), timeout=5)
        for d in dests:
            seen = [r["payload"] for r in got.get(d, [])]
            assert len(seen) == len(set(seen)), f"{d}: duplicated during the route change"
        # after convergence: exactly once, and the copies now leave on the spare link
        reset_logs(e2e_lab)
        tx_before = _tx_packets(e2e_lab, rb, "rb-h5b")
        after = payloads("converged", 3)
        send_xcast(e2e_lab, dests, after)
        got = arrivals(e2e_lab, expect=len(dests) * len(after))
        assert_exactly_once(e2e_lab, got, dests, after)
        assert _tx_packets(e2e_lab, rb, "rb-h5b") - tx_before >= len(after)
    finally:
        netns.ip(rb, "-6", "route", "replace", loop_net, "via", h5.addr, "dev", h5.router_if)


def _snmp6(ns: str) -> dict[str, int]:
    text = netns.run(["cat", "/proc/net/snmp6"], ns=ns).stdout
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}


def _guard_drops(topo: Topology, r: str) -> int:
    data = json.loads(netns.run(["nft", "-j", "list", "ruleset"], ns=topo.engine_ns(r)).stdout)
    return sum(int(e["counter"]["packets"]) for item in data["nftables"] if "rule" in item
               for e in item["rule"]["expr"] if "counter" in e)


def test_engine_kernel_neither_forwards_nor_answers(e2e_lab: Topology) -> None:
    """The diverted packets are the worker's alone: the engine's kernel drops its copy silently.

    With the TC eBPF path ([dataplane] mode auto/bpf) a packet it branched never reaches the
    engine's IPv6 stack at all; the ones it punts do, and are dropped by the guard as before.
    """
    ens = e2e_lab.engine_ns("a")
    before, guard0, c0 = _snmp6(ens), _guard_drops(e2e_lab, "a"), counters(e2e_lab)
    dests = [h.addr for h in e2e_lab.receivers] + ["2001:db8:dead::1"]     # one without any route
    reset_logs(e2e_lab)
    send_xcast(e2e_lab, dests, payloads("guard", 5))
    arrivals(e2e_lab, expect=25)
    time.sleep(0.5)     # the kernel path's counters reach the counter file every 0.1 s
    after = _snmp6(ens)
    in_tc = delta(c0, counters(e2e_lab))["a"].get("kernel_received", 0)
    assert _guard_drops(e2e_lab, "a") - guard0 == 5 - in_tc
    for key in ("Ip6OutForwDatagrams", "Icmp6OutDestUnreachs", "Icmp6OutParmProblems", "Icmp6OutTimeExcds"):
        assert after[key] == before[key], f"engine kernel {key} moved: {before[key]} -> {after[key]}"


def test_engine_counters_explain_every_packet(e2e_lab: Topology) -> None:
    st = engine_counters(e2e_lab, "a")
    assert st is not None
    t = st["totals"]
    assert t["received"] >= t["branched"] > 0
    assert st["latency"]["p50_us"] is not None
    assert ipaddress.IPv6Address(e2e_lab.sender.addr)


def test_data_path_is_the_tc_program_and_says_so(e2e_lab: Topology) -> None:
    """[dataplane] mode auto (the lab's default) runs the TC eBPF path where bootstrap installed
    its tools: the log names it, and the engines' plain XCAST6 traffic is branched in the kernel,
    none of it punted to the workers (both modes: direct here, vlan in the QEMU guest)."""
    kernel = e2e_lab.dataplane == "auto"
    expect = "TC eBPF on" if kernel else "Python workers"
    for r in ("a", "b"):
        log = (e2e_lab.state_dir / f"engine-{r}.log").read_text(errors="replace")
        said = [ln for ln in log.splitlines() if "data path:" in ln]
        assert said and expect in said[-1], said[-1:] or log[-2000:]
        # /status says it too
        st = engine_api.request(e2e_lab, r, "GET", "/status").json()
        assert expect in st["workers"]["data_path"], st["workers"]
    c0 = counters(e2e_lab)
    reset_logs(e2e_lab)
    send_xcast(e2e_lab, receivers(e2e_lab), payloads("tc", 3))
    arrivals(e2e_lab, expect=15)
    time.sleep(0.5)     # the kernel path's counters reach the counter file every 0.1 s
    d = delta(c0, counters(e2e_lab))
    for r in ("a", "b"):
        if kernel:
            assert d[r].get("kernel_received") == 3 and not d[r].get("kernel_punted"), d[r]
        else:     # mode python: the workers branched all of it
            assert not d[r].get("kernel_received") and d[r].get("branched") == 3, d[r]
