"""Worker: counters, histogram, egress resolution, and the packet path through real veths."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.dataplane import afpacket, histogram
from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import Egress, WorkerPool
from engine.forwarding.fib import Fib
from engine.model import EngineLink, LinkMap, NextHop, Route, Snapshot
from lab import netns
from sync.diff import diff
from tests.lab.scapy_xcast import ethernet, xcast_packet


def ip6(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


# ---------------------------------------------------------------- counters and histogram
def test_counters_shared_between_writer_and_reader(tmp_path: Path) -> None:
    path = tmp_path / "stats.shm"
    cf = CounterFile.create(path, slots=2)
    s0, s1 = cf.slot(0), cf.slot(1)
    s0.add("received", 3)
    s1.add("received", 2)
    s1.drop("no_route")
    s1.drop("a_reason_nobody_declared")
    for ns in (5_000, 20_000, 900_000):
        s0.latency(ns)
    reader = CounterFile.open(path)
    st = reader.snapshot()
    assert st.totals["received"] == 5
    assert st.per_worker[1]["received"] == 2
    assert st.drops() == {"no_route": 1, "other": 1}
    d = st.as_dict()
    assert d["latency"]["max_us"] == 900.0
    assert 4.0 <= d["latency"]["p50_us"] <= 30.0
    assert d["latency"]["p99_us"] <= 900.0
    with pytest.raises(IndexError, match="slot 2"):
        cf.slot(2)


def test_counter_file_rejects_foreign_file(tmp_path: Path) -> None:
    bad = tmp_path / "x"
    bad.write_bytes(b"not ours at all, sorry")
    with pytest.raises(ValueError, match="bad magic"):
        CounterFile.open(bad)


def test_histogram_percentiles() -> None:
    buckets = [0] * histogram.NBUCKETS
    for v in [10_000] * 90 + [2_000_000] * 10:
        buckets[histogram.bucket_of(v)] += 1
    p50 = histogram.percentile(buckets, 0.5)
    p99 = histogram.percentile(buckets, 0.99)
    assert p50 is not None and 8_000 <= p50 <= 12_000
    assert p99 is not None and 1_000_000 <= p99 <= 3_000_000
    assert histogram.percentile([0] * histogram.NBUCKETS, 0.5) is None


# ---------------------------------------------------------------- egress resolution
def _link(router_if: str, idx: int, mac: bytes | None = b"\x02\0\0\0\0\x01", up: bool = True) -> EngineLink:
    return EngineLink(router_if, f"to-{router_if}", idx, None, ip6(f"2001:db8:e::{idx}"), None,
                      b"\x02\0\0\0\0\xee", mac, 1500, up)


def test_egress_resolution_names_the_problem() -> None:
    eg = Egress(LinkMap([_link("ge-0/0/1.0", 7), _link("ge-0/0/2.0", 8, mac=None),
                         _link("ge-0/0/3.0", 9, up=False)]))
    e = eg.resolve("ge-0/0/1.0")
    assert not isinstance(e, str)
    assert e.ifindex == 7 and e.l2 == b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\xee" + b"\x86\xdd"
    assert eg.resolve("ge-0/0/2.0") == "egress_no_mac"
    assert eg.resolve("ge-0/0/3.0") == "egress_no_link"
    assert eg.resolve("xe-9/9/9.0") == "egress_no_link"


# ---------------------------------------------------------------- real packet path
ROUTER_MACS = {"r-if1": bytes.fromhex("02000000a001"), "r-if2": bytes.fromhex("02000000a002")}


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    with netns.temporary("xlw-r", "xlw-e") as (r, e):
        for k in (1, 2):
            netns.veth(r, f"r-if{k}", e, f"to-r-if{k}")
            netns.ip(r, "link", "set", f"r-if{k}", "address", ROUTER_MACS[f"r-if{k}"].hex(":"))
        yield r, e


def _links(e: str) -> LinkMap:
    return LinkMap([
        EngineLink(f"r-if{k}", f"to-r-if{k}", netns.ifindex(e, f"to-r-if{k}"), None,
                   ip6(f"2001:db8:e{k}::2"), ip6(f"2001:db8:e{k}::1"), netns.mac(e, f"to-r-if{k}"),
                   ROUTER_MACS[f"r-if{k}"])
        for k in (1, 2)
    ])


ROUTES = [
    Route(ipaddress.IPv6Network("2001:db8:1::/48"), (NextHop("r-if1", ip6("2001:db8:e1::99")),)),
    Route(ipaddress.IPv6Network("2001:db8:2::/48"), (NextHop("r-if2"),)),
]
SRC = "2001:db8:a::1"


def _capture(r: str) -> dict[str, socket.socket]:
    socks = {}
    with netns.in_netns(r):
        for k in (1, 2):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
            s.bind((f"r-if{k}", 0x86DD))
            s.setblocking(False)
            socks[f"r-if{k}"] = s
    return socks


def _drain(socks: dict[str, socket.socket], wait: float = 0.5) -> dict[str, list[bytes]]:
    time.sleep(wait)
    out: dict[str, list[bytes]] = {k: [] for k in socks}
    for k, s in socks.items():
        while True:
            try:
                out[k].append(s.recv(65536))
            except BlockingIOError:
                break
    return out


def _data_from(frames: list[bytes], mac: bytes) -> list[bytes]:
    return [f for f in frames if f[6:12] == mac and f[14 + 6] in (17, 41)]


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.parametrize("workers", [1, 2])
def test_copies_leave_on_the_right_link_with_router_mac(pair: tuple[str, str], tmp_path: Path,
                                                        workers: int) -> None:
    r, e = pair
    links = _links(e)
    pool = WorkerPool(Fib(ROUTES), links, ["to-r-if1", "to-r-if2"], workers=workers,
                      counters_path=tmp_path / "stats.shm")
    with netns.in_netns(e):
        pool.start()
    socks = _capture(r)
    try:
        mac_e1 = netns.mac(e, "to-r-if1")
        mac_e2 = netns.mac(e, "to-r-if2")
        # d1, d2 share next hop (gateway on r-if1) -> one XCAST copy; d3 connected on r-if2 -> X2U
        dests = ["2001:db8:1::10", "2001:db8:1::11", "2001:db8:2::10", "2001:db8:99::1"]
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if1", 0))
        n_packets = 20
        for i in range(n_packets):
            pkt = xcast_packet(SRC, dests, f"p{i}".encode(), sport=40000 + i, hlim=10)
            tx.send(ethernet(mac_e1, ROUTER_MACS["r-if1"], pkt))
        tx.send(ethernet(mac_e1, ROUTER_MACS["r-if1"], xcast_packet(SRC, dests, b"old", hlim=1)))
        tx.close()
        got = _drain(socks)
        # keep the engine's data frames (not ours, not its kernel's ND/MLD chatter)
        on1 = _data_from(got["r-if1"], mac_e1)
        on2 = _data_from(got["r-if2"], mac_e2)
        assert len(on1) == n_packets and len(on2) == n_packets
        for f in on1:
            assert f[:6] == ROUTER_MACS["r-if1"] and f[12:14] == b"\x86\xdd"
            assert f[14 + 6] == 41 and f[14 + 7] == 9                  # XCAST copy, hop limit - 1
            assert f[14 + 8:14 + 24] == ip6("2001:db8:e1::2")          # outer source = engine link
            assert f[14 + 24:14 + 40] == ip6(dests[0])
        for f in on2:
            assert f[:6] == ROUTER_MACS["r-if2"]
            assert f[14 + 6] == 17 and f[14 + 24:14 + 40] == ip6(dests[2])   # X2U
            assert f[14 + 8:14 + 24] == ip6(SRC)                        # original sender
        st = CounterFile.open(tmp_path / "stats.shm").snapshot()
        t = st.totals
        assert t["received"] == n_packets + 1
        assert t["copies_out"] == n_packets and t["x2u_out"] == n_packets
        # the hop-limit-1 packet also counts its unroutable destination (rule 3 runs before rule 5)
        assert st.drops() == {"no_route": n_packets + 1, "hop_limit_exceeded": 1}
        assert t["latency_count"] == n_packets + 1
        if workers == 2:
            assert all(w["received"] > 0 for w in st.per_worker), "fanout did not spread flows"

        # a sync diff (as the pipeline hands it on from SyncService) reaches every worker without
        # a restart: d3's prefix goes away
        old = Snapshot(routes=list(ROUTES), interfaces=[])
        new = Snapshot(routes=[ROUTES[0]], interfaces=[])
        pool.fib.update(remove=[ROUTES[1].prefix])      # what the daemon's Applier does
        pool.send_diff(diff(old, new))
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if1", 0))
        for i in range(10):
            tx.send(ethernet(mac_e1, ROUTER_MACS["r-if1"], xcast_packet(SRC, dests, b"x", sport=50000 + i)))
        tx.close()
        got = _drain(socks)
        assert _data_from(got["r-if2"], mac_e2) == []
        st2 = CounterFile.open(tmp_path / "stats.shm").snapshot()
        assert st2.totals["table_updates"] == workers
        assert st2.drops()["no_route"] == n_packets + 1 + 20

        # a worker that dies is restarted into its slot and fanout group, with today's table
        victim = pool.procs[0]
        assert victim.pid is not None
        os.kill(victim.pid, 9)
        victim.join(5)
        with netns.in_netns(e):     # workers are forked into the caller's namespace
            assert pool.revive() == [0] and all(pool.alive())
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if1", 0))
        for i in range(10):
            tx.send(ethernet(mac_e1, ROUTER_MACS["r-if1"], xcast_packet(SRC, dests, b"y", sport=51000 + i)))
        tx.close()
        got = _drain(socks)
        assert len(_data_from(got["r-if1"], mac_e1)) == 10
        assert _data_from(got["r-if2"], mac_e2) == []          # the restarted worker has the diff
        st3 = CounterFile.open(tmp_path / "stats.shm").snapshot()
        assert st3.totals["received"] == st2.totals["received"] + 10   # counts survive the restart
    finally:
        pool.stop()
        for s in socks.values():
            s.close()
    assert not any(pool.alive())


@pytest.mark.root
@pytest.mark.netns
def test_batch_sender_flushes_more_than_capacity() -> None:
    with netns.temporary("xlbs") as (ns,):
        with netns.in_netns(ns):
            s = afpacket.BatchSender(capacity=4)
            lo = socket.if_nametoindex("lo")
        _batch_sender_checks(s, lo)


def _batch_sender_checks(s: afpacket.BatchSender, lo: int) -> None:
    for _ in range(10):
        assert s.add(lo, b"\0" * 12 + b"\x86\xdd", b"\x60" + b"\0" * 39)
    sent, failures = s.flush()
    assert failures == []
    assert sent == 2            # 8 already flushed by add() when the arena was full
    assert s.syscalls == 3
    assert not s.add(lo, b"", b"x" * (s.slot_size + 1))
    s.close()


def test_refused_pinning_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seccomp filter without sched_setaffinity (systemd SystemCallFilter=~@resources) answers
    EPERM: the worker says so and forwards unpinned instead of dying and being restarted forever."""
    import errno

    from engine.dataplane import worker

    def refuse(pid: int, cpus: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(worker.os, "sched_setaffinity", refuse)
    problem = worker.pin_to_cpu(1)
    assert problem is not None
    assert problem.startswith("cannot pin to CPU 1 (workers.cpus): Operation not permitted")
    assert "SystemCallFilter=sched_setaffinity" in problem
