"""ICMPv6 errors and OAM in the lab: the engines answer like routers on the path.

* Time Exceeded from engine A and from engine B, quoting the packet as each received it;
* Packet Too Big from engine A for a copy over the small-MTU link to ``hm``: the sender's kernel
  takes the MTU into its path-MTU cache, and a resend that fits is delivered exactly once;
* Packet Too Big from router A about engine A's copy (a small rA-rB link), relayed by engine A
  so that the sender's kernel takes it into its path-MTU cache, and a resend that fits arrives once;
* Destination Unreachable when no destination has a route;
* a flood of expiring packets: errors capped by the token bucket, the rest counted;
* ``xcast6-engine traceroute`` / ``ping`` from the sender against the plain receivers; the
  routers between the engines appear in the tree through engine A's relay of their errors.

Time Exceeded, Packet Too Big and traceroute run in both link modes (``e2e_lab``: vlan mode in the
QEMU guest) and through the Python workers alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.tools.xcast_send import kernel_header_payload, open_pmtu_socket
from engine.wire.codec import build_xcast
from engine.wire.icmp6 import IcmpMessage, parse_icmp_message, parse_quote
from lab import engine_api, netns
from lab.demo import deliveries, engine_counters, reset_logs, send_raw
from lab.topology import RECEIVER_PORT, Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

IN_VM = os.environ.get("XCAST6_IN_VM") == "1"
SLOW = 6.0 if IN_VM else 1.0


def b(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def engine_addr(topo: Topology, r: str, k: int = 0) -> str:
    return topo.routers[r].engine_link(k)[3]


@contextlib.contextmanager
def icmp_listener(topo: Topology) -> Iterator[socket.socket]:
    """A raw ICMPv6 socket in the sender's namespace (sees every ICMPv6 message it receives)."""
    with netns.in_netns(topo.ns("snd")):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


def errors(s: socket.socket, topo: Topology, want: int = 1, timeout: float = 2.0) -> list[IcmpMessage]:
    """ICMPv6 errors the sender received (ND and other informational messages left out)."""
    out: list[IcmpMessage] = []
    deadline = time.monotonic() + timeout * SLOW
    while len(out) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([s], [], [], left)
        if not r:
            continue
        data, addr = s.recvfrom(65535)
        m = parse_icmp_message(b(addr[0].split("%")[0]), b(topo.sender.addr), data)
        if m is not None and m.is_error:
            out.append(m)
    return out


def xcast(topo: Topology, dests: list[str], payload: bytes, hop_limit: int = 64) -> bytes:
    return build_xcast(b(topo.sender.addr), [b(d) for d in dests], payload, sport=40000,
                       dport=RECEIVER_PORT, hop_limit=hop_limit)


def totals(topo: Topology, r: str) -> dict[str, int]:
    st = engine_counters(topo, r)
    assert st is not None
    return dict(st["totals"])


def test_time_exceeded_at_engine_a(e2e_lab: Topology) -> None:
    topo = e2e_lab
    dests = [h.addr for h in topo.receivers]
    pkt = xcast(topo, dests, b"expires at engine A", hop_limit=2)    # router A: 2 -> 1
    with icmp_listener(topo) as s:
        send_raw(topo, [pkt])
        got = errors(s, topo)
    assert len(got) == 1, "no Time Exceeded from engine A"
    m = got[0]
    assert (m.icmp_type, m.code) == (3, 0) and m.checksum_ok
    assert m.src == b(engine_addr(topo, "a"))        # engine A's address on the arrival link
    # the packet as engine A received it: router A's hop limit decrement, nothing else changed
    assert m.body == pkt[:7] + bytes([1]) + pkt[8:]


def test_time_exceeded_at_engine_b(e2e_lab: Topology) -> None:
    topo = e2e_lab
    h1, h3, h4 = topo.receivers[0].addr, topo.receivers[2].addr, topo.receivers[3].addr
    # 5: router A 4, engine A 3, router A 2, router B 1 -> engine B cannot forward
    pkt = xcast(topo, [h1, h3, h4], b"expires at engine B", hop_limit=5)
    with icmp_listener(topo) as s:
        send_raw(topo, [pkt])
        got = errors(s, topo, want=2, timeout=1.5)
    from_b = [m for m in got if m.src == b(engine_addr(topo, "b"))]
    assert len(from_b) == 1, f"no Time Exceeded from engine B: {[(m.src.hex(), m.icmp_type) for m in got]}"
    m = from_b[0]
    assert (m.icmp_type, m.code) == (3, 0)
    q = parse_quote(m.body)
    assert q is not None and q.kind == "xcast" and q.source == b(topo.sender.addr)
    assert q.live == (b(h3), b(h4))                  # the subset engine B held
    assert q.hop_limit == 1 and m.body[8:24] == b(engine_addr(topo, "a", 3))   # engine A's copy
    # h1 (router A's side) got its copy; only the router-B branch expired
    assert not [m for m in got if m.src != b(engine_addr(topo, "b")) and m.icmp_type == 3]


def route_mtu(topo: Topology, dst: str) -> int | None:
    out = netns.run(["ip", "-6", "route", "get", dst], ns=topo.ns("snd")).stdout
    words = out.split()
    return int(words[words.index("mtu") + 1]) if "mtu" in words else None


def test_packet_too_big_adapts_the_senders_path_mtu(e2e_lab: Topology) -> None:
    """The sender as an application would be (``send --pmtu``'s socket: the kernel writes the
    outer header and applies the path MTU it learns)."""
    topo = e2e_lab
    h1, hm = topo.receivers[0].addr, topo.mtu_host.addr
    netns.run(["ip", "-6", "route", "flush", "cache"], ns=topo.ns("snd"))
    assert route_mtu(topo, h1) is None
    reset_logs(topo)
    before = totals(topo, "a")
    big = xcast(topo, [h1, hm], b"B" * 1400)          # 1,544 bytes; hm's X2U copy 1,448 > 1,280
    with netns.in_netns(topo.ns("snd")):
        snd = open_pmtu_socket()
    try:
        with icmp_listener(topo) as s:
            snd.sendto(kernel_header_payload(big), (h1, 0))
            got = errors(s, topo)
        assert len(got) == 1 and got[0].icmp_type == 2, "no Packet Too Big from engine A"
        assert got[0].mtu == topo.small_mtu and got[0].src == b(engine_addr(topo, "a"))
        # quoted as received (the kernel wrote the outer header): as much as fits in 1,280 bytes
        assert len(got[0].body) == 1232 and got[0].body[40:] == big[40:1232]
        q = parse_quote(got[0].body)
        assert q is not None and q.live == (b(h1), b(hm))
        # the sender's kernel learnt the MTU for the path (the packet's outer destination)
        deadline = time.monotonic() + 2 * SLOW
        while route_mtu(topo, h1) != topo.small_mtu and time.monotonic() < deadline:
            time.sleep(0.05)
        assert route_mtu(topo, h1) == topo.small_mtu, "the PMTU cache did not change"
    finally:
        snd.close()
    # ... and applies it: the same datagram is refused, one that fits goes through, once
    dests = "{" + h1 + "," + hm + "}"
    r = _cli(topo, "send", dests, "--pmtu", "--port", str(RECEIVER_PORT), "--payload", "B" * 1400)
    assert r.returncode == 1 and "exceeds the path MTU" in r.stderr, r.stderr
    assert "(path MTU 1280)" in r.stderr, r.stderr
    room = topo.small_mtu - (len(big) - 1400)
    r = _cli(topo, "send", dests, "--pmtu", "--port", str(RECEIVER_PORT), "--payload", "s" * room)
    assert r.returncode == 0, r.stderr
    got_d = deliveries(topo, expect=3, timeout=3 * SLOW)
    assert sorted(len(r["payload"]) // 2 for r in got_d[hm]) == [room], "hm: the resend exactly once"
    assert sorted(len(r["payload"]) // 2 for r in got_d[h1]) == [room, 1400]
    d = totals(topo, "a")
    assert d["icmp_sent.packet_too_big"] - before["icmp_sent.packet_too_big"] == 1
    assert d["egress_mtu"] - before["egress_mtu"] == 1


def test_packet_too_big_between_the_engines_is_relayed(lab: Topology) -> None:
    """The rA-rB link shrunk to 1,400 bytes: router A cannot forward engine A's 1,500-byte copy for
    h3-h4 and sends Packet Too Big to engine A (the copy's source), which relays it to the sender
    with the router's MTU, quoting the packet as the sender sent it (its outer source and
    destination back).  The sender is an application on ``send --pmtu``'s socket: its kernel
    takes 1,400 into the path-MTU cache for h3 (the datagram's outer destination), refuses the
    same datagram, and a 1,400-byte resend reaches h3 and h4 exactly once."""
    h3, h4 = lab.receivers[2].addr, lab.receivers[3].addr
    before = totals(lab, "a")
    payload = 1500 - 40 - 40 - 8 - 16 - 32 - 8
    pkt = xcast(lab, [h3, h4], b"P" * payload, hop_limit=64)
    assert len(pkt) == 1500
    ends = [(lab.router_ns("a"), "ra-rb"), (lab.router_ns("b"), "rb-ra")]
    netns.run(["ip", "-6", "route", "flush", "cache"], ns=lab.ns("snd"))
    assert route_mtu(lab, h3) is None
    reset_logs(lab)
    with netns.in_netns(lab.ns("snd")):
        snd = open_pmtu_socket()
    try:
        for ns, dev in ends:
            netns.ip(ns, "link", "set", dev, "mtu", "1400")
        with icmp_listener(lab) as s:
            snd.sendto(kernel_header_payload(pkt), (h3, 0))
            got = errors(s, lab, want=1, timeout=1.5)
        ptb = [m for m in got if m.icmp_type == 2]
        assert len(ptb) == 1, [(m.src.hex(), m.icmp_type) for m in got]
        m = ptb[0]
        assert m.src == b(engine_addr(lab, "a")) and m.mtu == 1400 and m.checksum_ok
        # the sender's packet: its outer source and destination, then the copy as router A quoted it
        assert m.body[8:40] == b(lab.sender.addr) + b(h3) and m.body[40:] == pkt[40:1232]
        q = parse_quote(m.quote)
        assert q is not None and not q.inner_only and q.source == b(lab.sender.addr)
        assert q.destination == b(h3) and q.live == (b(h3), b(h4))
        deadline = time.monotonic() + 2 * SLOW
        while route_mtu(lab, h3) != 1400 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert route_mtu(lab, h3) == 1400, "the sender's PMTU cache did not take the relayed MTU"
        snd.close()
        dests = "{" + h3 + "," + h4 + "}"
        room = 1400 - (len(pkt) - payload)                  # the payload of a 1,400-byte datagram
        r = _cli(lab, "send", dests, "--pmtu", "--port", str(RECEIVER_PORT), "--payload", "P" * payload)
        assert r.returncode == 1 and "(path MTU 1400)" in r.stderr, r.stderr
        r = _cli(lab, "send", dests, "--pmtu", "--port", str(RECEIVER_PORT), "--payload", "s" * room)
        assert r.returncode == 0, r.stderr
        got_d = deliveries(lab, expect=2, timeout=3 * SLOW)
        for h in (h3, h4):
            assert [len(r["payload"]) // 2 for r in got_d[h]] == [room], (h, got_d[h])
    finally:
        snd.close()
        for ns, dev in ends:
            netns.ip(ns, "link", "set", dev, "mtu", str(lab.mtu))
        netns.run(["ip", "-6", "route", "flush", "cache"], ns=lab.ns("snd"))
    after = totals(lab, "a")
    assert after["icmp_relayed.packet_too_big"] == before["icmp_relayed.packet_too_big"] + 1


def test_destination_unreachable_when_nothing_routable(lab: Topology) -> None:
    pkt = xcast(lab, ["2001:db8:dead::1", "2001:db8:dead::2"], b"nowhere")
    with icmp_listener(lab) as s:
        send_raw(lab, [pkt])
        got = errors(s, lab)
    assert [(m.icmp_type, m.code, m.src) for m in got] == [(1, 0, b(engine_addr(lab, "a")))]
    # one routable destination among them: delivered, no error
    with icmp_listener(lab) as s:
        send_raw(lab, [xcast(lab, ["2001:db8:dead::1", lab.receivers[0].addr], b"half")])
        assert errors(s, lab, timeout=0.5) == []


def test_flood_is_capped_by_the_rate_limit(lab: Topology) -> None:
    before = totals(lab, "a")
    n = 400
    pkts = [xcast(lab, [lab.receivers[0].addr], f"f{i}".encode(), hop_limit=2) for i in range(n)]
    with icmp_listener(lab) as s:
        t0 = time.monotonic()
        send_raw(lab, pkts)
        got = errors(s, lab, want=n, timeout=1.0)
        elapsed = time.monotonic() - t0
    after = totals(lab, "a")
    sent = after["icmp_sent.time_exceeded"] - before["icmp_sent.time_exceeded"]
    held = after["icmp_suppressed.time_exceeded"] - before["icmp_suppressed.time_exceeded"]
    assert sent + held == n
    assert 0 < sent <= 50 + 100 * elapsed + 1, (sent, elapsed)   # the defaults: burst 50, 100/s
    assert held >= n - sent and held > 0
    assert len(got) == sent
    metrics = engine_api.request(lab, "a", "GET", "/metrics").text
    line = next(x for x in metrics.splitlines()
                if x.startswith('xcast6_icmp_errors_rate_limited_total{type="time_exceeded"'))
    assert float(line.split()[-1]) >= held


def _cli(topo: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", topo.ns("snd"), sys.executable, "-m", "api.main", *args],
                          capture_output=True, text=True, timeout=120)


def test_traceroute_prints_the_branch_tree(e2e_lab: Topology) -> None:
    lab = e2e_lab
    dests = [h.addr for h in lab.receivers]
    r = _cli(lab, "traceroute", "{" + ",".join(dests) + "}", "--wait", str(0.5 * SLOW), "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    doc: dict[str, Any] = json.loads(r.stdout)
    ra, ea, eb = "2001:db8:a0::1", engine_addr(lab, "a"), engine_addr(lab, "b")
    ra_rb = lab.routers["a"].interfaces.index("ra-rb")
    ra_far, rb = lab.routers["a"].engine_link(ra_rb)[2], lab.inter_net + "2"
    for h in lab.receivers:
        path = doc["paths"][h.addr]
        who = [p["responder"] for p in path]
        assert who[:2] == [ra, ea], (h.name, who)
        assert path[-1] == {"hop": len(path), "responder": h.addr, "kind": "reached"}
        # a router answers from its address on the link the copy came in on: the engine link
        # that stands for the receiver's interface
        router = lab.routers[h.router]
        back = router.engine_link(router.interfaces.index(h.router_if))[2]
        if h.router == "a":
            assert who == [ra, ea, back, h.addr]
            assert all("relayed_by" not in p for p in path)
        else:
            # the routers between engine A and engine B answer engine A (the copy's source), which
            # relays to us naming them (RFC 5837): rA from its end of A's engine link towards rB,
            # then rB from its end of the rA-rB link
            assert who == [ra, ea, ra_far, rb, eb, back, h.addr], (h.name, who)
            assert [p.get("relayed_by") for p in path[2:4]] == [ea, ea]
            assert all("relayed_by" not in p for p in path[:2] + path[4:])
    tree = doc["tree"]
    assert len(tree) == 1 and tree[0]["responder"] == ra
    under_ea = tree[0]["children"][0]["children"]
    assert sorted(len(c["destinations"]) for c in under_ea) == [1, 1, 3]   # h1, h2, {h3, h4, h5}
    between = next(c for c in under_ea if len(c["destinations"]) == 3)
    assert (between["responder"], between["relayed_by"]) == (ra_far, ea) and between["rtt_ms"]
    at_rb = between["children"][0]
    assert at_rb["responder"] == rb and at_rb["relayed_by"] == ea and at_rb["children"][0]["responder"] == eb
    text = _cli(lab, "traceroute", "{" + ",".join(dests) + "}", "--wait", str(0.5 * SLOW))
    assert text.returncode == 0 and eb in text.stdout and "├─" in text.stdout
    assert f"{rb} (via {ea})" in text.stdout and f"{ra_far} (via {ea})" in text.stdout
    assert "*" not in text.stdout
    relayed = totals(lab, "a")       # 3 probes x 2 hops per run
    assert relayed["icmp_relayed.time_exceeded"] >= 6 and relayed["icmp_relay_refused"] == 0
    metrics = engine_api.request(lab, "a", "GET", "/metrics").text
    line = next(x for x in metrics.splitlines()
                if x.startswith('xcast6_icmp_errors_relayed_total{type="time_exceeded"'))
    assert float(line.split()[-1]) == relayed["icmp_relayed.time_exceeded"]
    print(text.stdout)


def test_ping_all_receivers(lab: Topology) -> None:
    dests = [h.addr for h in lab.receivers]
    r = _cli(lab, "ping", "{" + ",".join(dests) + "}", "-n", "3", "-I", "0.3", "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads(r.stdout)
    assert [d["destination"] for d in doc["destinations"]] == dests
    for d in doc["destinations"]:
        assert d["sent"] == 3 and d["received"] == 3 and d["loss_pct"] == 0 and d["avg_ms"] > 0
    text = _cli(lab, "ping", "{" + ",".join(dests) + "}", "-n", "2", "-I", "0.3")
    assert text.returncode == 0 and "0% loss" in text.stdout
    print(text.stdout)
