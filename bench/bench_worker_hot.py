#!/usr/bin/env python3
"""Worker hot path without the network: µs per packet of branch + egress queueing + counters.

Runs :meth:`engine.dataplane.worker.Worker.process` (branch, resolve the egress link, copy into the
sendmmsg arena, tally counters) on prebuilt XCAST6 packets with N = 2, 8, 32 destinations,
and the bare branch function alone for comparison, so the cost the worker adds around the
engine core is visible.  Nothing is sent (the arena is reset instead of flushed).  Needs root
(the egress AF_PACKET socket is created, never written).  Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import Worker, WorkerSpec, default_brancher_factory
from engine.forwarding.fib import Fib
from engine.model import EngineLink, LinkMap, NextHop, Route
from engine.wire.codec import build_xcast


def _a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def setup(tmp: Path) -> tuple[Worker, Fib, LinkMap]:
    links = LinkMap([EngineLink(f"r-if{k}", f"e-if{k}", 1, None, _a(f"2001:db8:e{k}::2"),
                                _a(f"2001:db8:e{k}::1"), bytes(6), bytes([2, 0, 0, 0, 0, k]))
                     for k in (1, 2)])
    fib = Fib([Route(ipaddress.IPv6Network("2001:db8:1::/48"), (NextHop("r-if1"),)),
               Route(ipaddress.IPv6Network("2001:db8:2::/48"), (NextHop("r-if2"),))])
    CounterFile.create(tmp / "stats.shm", 1)
    spec = WorkerSpec(0, [], tmp / "stats.shm")
    return Worker(spec, fib, links, default_brancher_factory), fib, links


def packets(n: int, flows: int = 256) -> list[bytes]:
    """N connected destinations (each its own next hop: N X2U copies per packet)."""
    dests = [_a(f"2001:db8:{1 + i % 2}::{0x1000 + i:x}") for i in range(n)]
    return [build_xcast(_a("2001:db8:a::1"), dests, b"L" * 64, sport=20000 + f, dport=9)
            for f in range(flows)]


def measure(run: Callable[[list[bytes]], None], groups: list[list[bytes]], seconds: float) -> float:
    """Seconds per call of ``run(group)``, averaged over about ``seconds``."""
    calls = 0
    t0 = time.perf_counter()
    t_end = t0 + seconds
    while time.perf_counter() < t_end:
        for g in groups:
            run(g)
        calls += len(groups)
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dests", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_worker_hot.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="xw-hot-") as tmp:
        w, fib, links = setup(Path(tmp))
        bare = default_brancher_factory(fib, links)

        def reset() -> None:
            w.sender.count = 0
            w.flush_tally()

        out: dict[str, Any] = {"loadavg": os.getloadavg(), "by_n": {}}
        print(f"{'N':>4} {'branch µs':>10} {'worker µs':>10} {'worker adds µs':>15} {'pkt/s (worker)':>15}")
        for n in a.dests:
            pk = packets(n)
            # the arena holds 256 frames: reset (instead of sending) after 256/n packets' copies
            chunk = max(1, 256 // n)
            groups = [pk[i:i + chunk] for i in range(0, len(pk), chunk)]

            def run_worker(group: list[bytes]) -> None:
                for p in group:
                    w.process(p)
                reset()

            def run_bare(group: list[bytes]) -> None:
                for p in group:
                    bare(p)

            us_bare = measure(run_bare, groups, a.seconds) / chunk * 1e6
            us_worker = measure(run_worker, groups, a.seconds) / chunk * 1e6
            out["by_n"][n] = {"branch_us": round(us_bare, 2), "worker_us": round(us_worker, 2),
                              "worker_pps": round(1e6 / us_worker)}
            print(f"{n:>4} {us_bare:>10.2f} {us_worker:>10.2f} {us_worker - us_bare:>15.2f} "
                  f"{1e6 / us_worker:>15.0f}")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=1))
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
