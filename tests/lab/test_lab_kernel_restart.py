"""The TC fast path across a daemon crash and restart, under load (issue 17).

Intended headless behaviour (README "Data path"): a ``kill -9`` of the daemon leaves the TC
program attached to the engine links with its last table, so it keeps branching, as a router's
FIB keeps forwarding when its control plane crashes.  Nothing is stale for longer than the crash
lasts: the next start loads a fresh program, fills its maps from the synced table and swaps it in
on the same filter handle (``BPF_TC_F_REPLACE``), so no packet sees both programs or neither.
Only a clean stop (SIGTERM) detaches.

Checked here on the kernel path's own lab (``[dataplane] mode = "bpf"``): a steady stream of
XCAST6 datagrams to router A's two receivers, engine A's daemon and workers killed with SIGKILL
(its process group, as systemd does), datagrams sent while it is dead, the daemon started again;
every datagram arrives exactly once at each destination (no loss, no duplicate), and exactly one
filter is attached throughout, running the new program after the restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import build
from lab.demo import build as xcast_packet
from lab.demo import deliveries, reset_logs
from lab.rawsend import RawSender
from lab.topology import Topology
from tests.lab.conftest import built_lab

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

RATE = 200          # datagrams per second, the whole test


@pytest.fixture(scope="module")
def kernel_lab() -> Iterator[Topology]:
    prefix = f"xlk{os.getpid() % 10000}-"
    topo = Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab"), poll_interval=0.5, dataplane="bpf")
    with built_lab(topo):
        yield topo


def filters(topo: Topology) -> list[str]:
    """Our TC filters on engine A's links (one line per filter: its program and id)."""
    ns = topo.engine_ns("a")
    out = []
    links = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True,
                           check=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        tc = subprocess.run(["tc", "-n", ns, "filter", "show", "dev", name, "ingress"], capture_output=True,
                            text=True, check=False).stdout
        out += [f"{name}: {ln.strip()}" for ln in tc.splitlines() if "xcast6_ingress" in ln]
    return out


def prog_ids(lines: list[str]) -> set[str]:
    return {ln.split(" id ")[1].split()[0] for ln in lines if " id " in ln}


class Stream:
    """XCAST6 datagrams to ``dests`` at RATE/s from the sender host, numbered, until stopped."""

    def __init__(self, topo: Topology, dests: list[str]) -> None:
        self.topo, self.dests = topo, dests
        self.sent: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with RawSender(self.topo.ns("snd")) as s:
            t0 = time.monotonic()
            while not self._stop.is_set():
                payload = f"restart {os.getpid()} #{len(self.sent)}".encode()
                s.send(xcast_packet(self.topo.sender.addr, self.dests, payload))
                self.sent.append(payload)
                time.sleep(max(0.0, t0 + len(self.sent) / RATE - time.monotonic()))

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_kill9_keeps_branching_and_restart_takes_over(kernel_lab: Topology) -> None:
    topo = kernel_lab
    dests = [topo.host("h1").addr, topo.host("h2").addr]
    before = filters(topo)
    assert len(before) >= 1 and len(prog_ids(before)) == 1, before
    pidfile = topo.state_dir / "engine-a.pid"
    pid = int(pidfile.read_text())
    reset_logs(topo)
    marks = {}
    with Stream(topo, dests) as stream:
        time.sleep(1.0)
        marks["killed"] = len(stream.sent)
        os.killpg(pid, signal.SIGKILL)          # the daemon and its workers, as systemd would
        with contextlib.suppress(ChildProcessError):      # the lab started it: reap it
            os.waitpid(pid, 0)
        time.sleep(2.0)                         # headless: only the TC program is left
        marks["restart"] = len(stream.sent)
        headless = filters(topo)
        assert headless == before, "the program must stay attached after kill -9"
        build.start_engine(topo, "a")
        build.wait_engines(topo, timeout=60)
        time.sleep(1.0)
        marks["end"] = len(stream.sent)
    after = filters(topo)
    got = deliveries(topo, expect=len(dests) * len(stream.sent), timeout=5.0, settle=0.5)
    sent = Counter(p.hex() for p in stream.sent)
    for d in dests:
        recv = Counter(r["payload"] for r in got.get(d, []))
        missing = [i for i, p in enumerate(stream.sent) if recv[p.hex()] == 0]
        dups = [i for i, p in enumerate(stream.sent) if recv[p.hex()] > 1]
        assert not missing and not dups and set(recv) == set(sent), (
            f"{d}: {len(stream.sent)} sent (kill at #{marks['killed']}, restart at #{marks['restart']}), "
            f"missing {missing[:20]}{'...' if len(missing) > 20 else ''} ({len(missing)}), "
            f"duplicated {dups[:20]} ({len(dups)})")
    assert marks["restart"] - marks["killed"] >= RATE, "too few datagrams sent while the daemon was dead"
    # the same filters, now running the new daemon's program
    assert [ln.split(":")[0] for ln in after] == [ln.split(":")[0] for ln in before], after
    assert len(prog_ids(after)) == 1 and prog_ids(after) != prog_ids(before), (before, after)
