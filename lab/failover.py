"""Steady XCAST6 load with sequence numbers, and what the receivers made of it (engine pairs).

Shared by the failover tests (tests/lab/test_lab_ha.py) and ``bench/bench_failover.py``.  The
sender emits one XCAST6 datagram to N destinations every 1/rate s; each payload carries its
sequence number, and the flow label cycles over ``flows`` values so the router's ECMP hash
spreads the load over both engines (Linux hashes source, destination, flow label and next
header).  Exactly-once is then checked per destination and sequence number.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from lab import build
from lab.demo import build as build_packet
from lab.demo import read_logs, reset_logs
from lab.rawsend import RawSender
from lab.topology import Topology

MAGIC = b"XFO1"


def destinations(topo: Topology, n: int = 5) -> list[str]:
    """One address per receiver host (h1, h2 behind router A; h3..h5 behind router B)."""
    return [h.addr for h in topo.receivers][:n]


def with_flow_label(pkt: bytes, label: int) -> bytes:
    """The packet with its outer flow label set (traffic class untouched)."""
    b = bytearray(pkt)
    b[1] = (b[1] & 0xF0) | ((label >> 16) & 0x0F)
    b[2] = (label >> 8) & 0xFF
    b[3] = label & 0xFF
    return bytes(b)


@dataclass
class Load:
    """Send ``rate`` datagrams/s to ``dests`` from the sender host until :meth:`stop`."""

    topo: Topology
    dests: list[str]
    rate: float = 500.0
    flows: int = 8
    sent: int = 0
    t0: float = 0.0
    send_times: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        reset_logs(self.topo)
        self._thread = threading.Thread(target=self._run, name="failover-load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        src = self.topo.sender.addr
        with RawSender(self.topo.ns("snd")) as s:
            self.t0 = time.time()
            start = time.monotonic()
            while not self._stop.is_set():
                due = int((time.monotonic() - start) * self.rate)
                while self.sent < due:
                    seq = self.sent
                    pkt = build_packet(src, self.dests, MAGIC + struct.pack("!I", seq))
                    with contextlib.suppress(OSError):     # no route for a moment: counted as lost
                        s.send(with_flow_label(pkt, 1 + seq % self.flows))
                    self.send_times.append(time.time())
                    self.sent += 1
                time.sleep(0.001)

    def stop(self, settle: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        time.sleep(settle)


def seq_of(rec: dict[str, Any]) -> int | None:
    payload = bytes.fromhex(str(rec.get("payload", "")))
    if len(payload) < 8 or payload[:4] != MAGIC:
        return None
    return int(struct.unpack("!I", payload[4:8])[0])


def analyze(load: Load) -> dict[str, Any]:
    """Per destination: delivered, missing, duplicated sequence numbers; loss as time."""
    got: dict[str, dict[int, int]] = {d: defaultdict(int) for d in load.dests}
    arrivals: list[float] = []
    for rec in read_logs(load.topo):
        seq = seq_of(rec)
        dst = str(rec.get("dst"))
        if seq is None or dst not in got:
            continue
        got[dst][seq] += 1
        arrivals.append(float(rec.get("t", 0.0)))
    per: dict[str, Any] = {}
    worst_gap = 0
    for dst, seqs in got.items():
        missing = [i for i in range(load.sent) if seqs.get(i, 0) == 0]
        dups = sum(c - 1 for c in seqs.values() if c > 1)
        # the longest run of consecutive missing numbers of one flow group, in send time
        longest = _longest_loss_ms(missing, load)
        worst_gap = max(worst_gap, longest)
        per[dst] = {"delivered": len(seqs), "missing": len(missing), "duplicates": dups,
                    "longest_loss_ms": longest}
    return {
        "sent": load.sent,
        "rate": load.rate,
        "destinations": len(load.dests),
        "lost_packets": sum(p["missing"] for p in per.values()),
        "duplicates": sum(p["duplicates"] for p in per.values()),
        "loss_ms": worst_gap,
        "per_destination": per,
        "arrivals": sorted(arrivals),
    }


def _longest_loss_ms(missing: list[int], load: Load) -> int:
    """Milliseconds between the send times that bound the longest stretch of losses.

    Only the flows of the failed engine lose packets, so losses are interleaved with deliveries
    of the other engine's flows: a stretch is losses less than ``2 x flows`` sequence numbers
    apart."""
    if not missing:
        return 0
    t = load.send_times
    best = 0.0
    first = prev = missing[0]
    for m in [*missing[1:], None]:
        if m is not None and m - prev <= 2 * load.flows:
            prev = m
            continue
        span = t[min(prev + 1, len(t) - 1)] - t[max(first - 1, 0)] if len(t) > 1 else 0.0
        best = max(best, span)
        if m is not None:
            first = prev = m
    return round(best * 1000)


def engine_pid(topo: Topology, e: str) -> int:
    return int((topo.state_dir / f"engine-{e}.pid").read_text().strip())


def kill_engine(topo: Topology, e: str, sig: int = signal.SIGKILL, *, whole: bool = False) -> None:
    """Signal engine ``e``'s daemon -- only the daemon (its workers and bfdd must follow by
    design), or with ``whole`` its whole process group at once (daemon, workers, bfdd: what a
    host crash or an OOM kill of the unit's cgroup does; the lab starts each engine in its own
    session, so the group is exactly the engine)."""
    pid = engine_pid(topo, e)
    if whole:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def wait_engine_gone(topo: Topology, e: str, timeout: float = 15.0) -> None:
    pid = engine_pid(topo, e)
    deadline = time.monotonic() + timeout
    while build._running(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise TimeoutError(f"engine {e} (pid {pid}) still running after {timeout} s")
        time.sleep(0.05)
    (topo.state_dir / f"engine-{e}.pid").unlink(missing_ok=True)


def restart_engine(topo: Topology, e: str, timeout: float = 60.0) -> float:
    """Start engine ``e`` again; seconds until its router diverts to it again (shared again)."""
    t0 = time.monotonic()
    build.start_engine(topo, e)
    build.wait_bfd(topo, timeout=timeout, routers=(topo.engine_router(e),))
    return time.monotonic() - t0


def failopen_packets(topo: Topology, r: str = "a") -> int:
    """Router ``r``'s count of to-be-diverted packets it forwarded itself (no engine up)."""
    out = subprocess.run(["ip", "netns", "exec", topo.router_ns(r), "nft", "-j", "list", "counter", "inet",
                          topo.divert_table_name, "failopen"], capture_output=True, text=True, check=True)
    for item in json.loads(out.stdout)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    return 0


def divert_records(topo: Topology, r: str = "a") -> list[dict[str, Any]]:
    """lab.bfdroute's record of router ``r``'s divert next-hop changes."""
    text = build.bfdroute_state(topo, r).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
