"""The worker's batched hot path: one recvmmsg per batch, copies written mid-batch, counters exact."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import Worker, WorkerSpec, default_brancher_factory
from engine.forwarding.fib import Fib
from lab import netns
from tests.engine import test_worker
from tests.engine.test_worker import (
    ROUTER_MACS,
    ROUTES,
    SRC,
    _capture,
    _data_from,
    _drain,
    _links,
    ip6,
)
from tests.lab.scapy_xcast import ethernet, xcast_packet

pair = test_worker.pair     # the two-namespace fixture (router r, engine e, veth r-ifK <-> to-r-ifK)


def _worker(e: str, counters: Path, **spec: object) -> Worker:
    """An in-process worker on engine link to-r-if1 (no fanout) with its own counter file."""
    CounterFile.create(counters, 1)
    with netns.in_netns(e):
        return Worker(WorkerSpec(0, ["to-r-if1"], counters, fanout=False, **spec),  # type: ignore[arg-type]
                      Fib(ROUTES), _links(e), default_brancher_factory)


@pytest.mark.root
@pytest.mark.netns
def test_burst_is_read_in_batches_and_every_copy_leaves_once(pair: tuple[str, str], tmp_path: Path) -> None:
    r, e = pair
    w = _worker(e, tmp_path / "stats.shm", batch=64, flush_copies=16)
    socks = _capture(r)
    for s in socks.values():
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        mac_e1, mac_e2 = netns.mac(e, "to-r-if1"), netns.mac(e, "to-r-if2")
        # per packet: one XCAST copy on r-if1 (2 dests behind one gateway) + one X2U on r-if2
        dests = ["2001:db8:1::10", "2001:db8:1::11", "2001:db8:2::10"]
        n_packets = 150
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if1", 0))
        for i in range(n_packets):
            tx.send(ethernet(mac_e1, ROUTER_MACS["r-if1"],
                             xcast_packet(SRC, dests, b"b%03d" % i, sport=40000 + i, hlim=10)))
        tx.close()
        sock = w.rx[0]
        reads = []
        while (n := w.drain(sock)) > 0:
            reads.append(n)
        assert reads == [64, 64, 22]        # the whole burst in three recvmmsg calls
        got = _drain(socks)
        on1, on2 = _data_from(got["r-if1"], mac_e1), _data_from(got["r-if2"], mac_e2)
        assert len(on1) == n_packets and len(on2) == n_packets
        # order kept, payload intact, each packet exactly once on each link
        assert [f[-4:] for f in on2] == [b"b%03d" % i for i in range(n_packets)]
        assert [f[-4:] for f in on1] == [b"b%03d" % i for i in range(n_packets)]
        assert all(f[14 + 24:14 + 40] == ip6(dests[2]) for f in on2)
        t = CounterFile.open(tmp_path / "stats.shm").snapshot().totals
        assert t["received"] == n_packets and t["branched"] == n_packets
        assert t["copies_out"] == n_packets and t["x2u_out"] == n_packets
        assert t["latency_count"] == n_packets
        assert t["syscalls_rx"] == 4                        # 3 batches + the empty read
        # 2 copies per packet, written every 16 queued (8 packets), every 64 (32 packets) when
        # the batch came back full, and at each batch's end: 64 -> 2 calls, 64 -> 2, 22 -> 3
        assert t["syscalls_tx"] == 7
        assert t["bytes_out"] == sum(len(f) for f in on1 + on2)
        assert t["received_bytes"] > n_packets * 14
    finally:
        w.close()
        for s in socks.values():
            s.close()


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.parametrize("busy_poll_us", [0, 300_000])
def test_busy_poll_keeps_polling_after_traffic_then_sleeps(pair: tuple[str, str], tmp_path: Path,
                                                           busy_poll_us: int) -> None:
    r, e = pair
    w = _worker(e, tmp_path / "stats.shm", busy_poll_us=busy_poll_us)
    socks = _capture(r)
    loop = threading.Thread(target=w.run, daemon=True)
    loop.start()

    def polls() -> int:
        return int(CounterFile.open(tmp_path / "stats.shm").snapshot().totals["syscalls_poll"])

    try:
        time.sleep(0.2)
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if1", 0))
        p0 = polls()
        tx.send(ethernet(netns.mac(e, "to-r-if1"), ROUTER_MACS["r-if1"],
                         xcast_packet(SRC, ["2001:db8:2::10"], b"poll", sport=40000, hlim=10)))
        tx.close()
        time.sleep(0.1)
        during = polls() - p0
        if busy_poll_us:
            assert during > 20, f"{during} epoll calls in the 0.1 s after a frame: not polling"
            time.sleep(0.3 + 0.1)           # the polling window is over: back to 0.5 s sleeps
            p1 = polls()
            time.sleep(0.6)
            assert polls() - p1 <= 3
        else:
            assert during <= 3, f"{during} epoll calls in 0.1 s without busy polling"
        assert len(_data_from(_drain(socks)["r-if2"], netns.mac(e, "to-r-if2"))) == 1
    finally:
        w.stopping = True
        loop.join(2)
        for s in socks.values():
            s.close()


@pytest.mark.root
@pytest.mark.netns
def test_latency_counts_the_time_frames_queued_before_the_worker(pair: tuple[str, str],
                                                                tmp_path: Path) -> None:
    """The histogram starts at the kernel's arrival time, not when the worker read the frame."""
    r, e = pair
    w = _worker(e, tmp_path / "stats.shm")
    socks = _capture(r)
    try:
        time.sleep(0.05)        # arrival stamping is switched on a moment after the socket asks
        with netns.in_netns(r):
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind(("r-if1", 0))
        for i in range(5):
            tx.send(ethernet(netns.mac(e, "to-r-if1"), ROUTER_MACS["r-if1"],
                             xcast_packet(SRC, ["2001:db8:2::10"], b"q%d" % i, sport=40000 + i, hlim=10)))
        tx.close()
        time.sleep(0.08)        # the worker is busy elsewhere: the frames wait in its socket
        assert w.drain(w.rx[0]) == 5
        t = CounterFile.open(tmp_path / "stats.shm").snapshot().totals
        assert t["latency_count"] == 5
        assert 80_000_000 <= t["latency_max_ns"] < 2_000_000_000
        assert t["latency_sum_ns"] >= 5 * 80_000_000
        assert len(_data_from(_drain(socks)["r-if2"], netns.mac(e, "to-r-if2"))) == 5
    finally:
        w.close()
        for s in socks.values():
            s.close()
