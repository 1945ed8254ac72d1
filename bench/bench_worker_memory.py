#!/usr/bin/env python3
"""Worker memory under many distinct big sessions (issue 15, "Worker memory").

The worst case for the worker's derived caches: packets of the maximal common form the flow
cache learns -- 1,488 bytes, 86 destinations in one connected /64 (each destination its own
next hop: 86 copies per packet, each template prefix ~1.5 KB), DONT_X2U, a different bitmap
and source port per packet -- so every packet is a new session: one flow template and one
branch plan each.  Runs :meth:`engine.dataplane.worker.Worker.process` on ``--packets`` such
packets (the transmit ring is reset instead of sent) and reports the worker's memory growth
(RSS from /proc, and what tracemalloc attributes to the caches), the flow templates and plans
kept, their accounted bytes, and the evictions.  Needs root (the egress AF_PACKET socket is
created, never written).  Writes JSON.

Usage: python bench/bench_worker_memory.py [--packets 4096] [--out bench/results/bench_worker_memory.json]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import Worker, WorkerSpec, default_brancher_factory
from engine.forwarding.fib import Fib
from engine.model import EngineLink, LinkMap, NextHop, Route
from engine.wire.codec import FLAG_DONT_X2U, build_xcast

PAGE = os.sysconf("SC_PAGE_SIZE")
DESTS = 86
PACKET_LEN = 1488


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def big_packets(count: int, seed: int = 1) -> list[bytes]:
    """``count`` distinct sessions of 1,488-byte packets to 86 destinations in one /64."""
    rng = random.Random(seed)
    dests = [_a(f"2001:db8:3::{0x100 + i:x}") for i in range(DESTS)]
    head = len(build_xcast(_a("2001:db8:a::1"), dests, b"", sport=1, dport=9))
    payload = b"P" * (PACKET_LEN - head)
    out = []
    for i in range(count):
        # every bit but a random few live: a new bitmap (and a new port) per session
        bitmap = (1 << DESTS) - 1
        for _ in range(3):
            bitmap &= ~(1 << rng.randrange(DESTS))
        out.append(build_xcast(_a("2001:db8:a::1"), dests, payload, sport=1024 + i, dport=9000,
                               flags=FLAG_DONT_X2U, bitmap=bitmap))
    assert all(len(p) == PACKET_LEN for p in out)
    return out


def setup(tmp: Path, **spec_kw: Any) -> Worker:
    links = LinkMap([EngineLink("r-if3", "e-if3", 1, None, _a("2001:db8:e3::2"), _a("2001:db8:e3::1"),
                                bytes(6), bytes([2, 0, 0, 0, 0, 3]))])
    fib = Fib([Route(ipaddress.IPv6Network("2001:db8:3::/64"), (NextHop("r-if3"),))])   # connected
    CounterFile.create(tmp / "stats.shm", 1)
    return Worker(WorkerSpec(0, [], tmp / "stats.shm", **spec_kw), fib, links, default_brancher_factory)


def run(count: int, trace: bool) -> dict[str, Any]:
    pk = big_packets(count)
    with tempfile.TemporaryDirectory(prefix="xw-mem-") as tmp:
        w = setup(Path(tmp))
        brancher = getattr(w.branch, "__self__", None)
        for p in pk[:2]:        # warm up (imports, first allocations), then forget
            w.process(p)
            w.sender.count = 0
        w.flows.clear()
        if brancher is not None:
            brancher.clear()
        gc.collect()
        if trace:
            tracemalloc.start()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        for p in pk:
            w.process(p)
            w.sender.count = 0        # reset the ring instead of sending
        w.flush()
        dt = time.perf_counter() - t0
        rss1 = rss_bytes()
        traced = tracemalloc.get_traced_memory()[0] if trace else None
        if trace:
            tracemalloc.stop()
        snap = w.counters.snapshot().totals
        plans = getattr(brancher, "_plans", {})
        out = {
            "packets": count, "packet_len": PACKET_LEN, "destinations": DESTS,
            "rss_growth_mib": round((rss1 - rss0) / 2**20, 1),
            "traced_mib": round(traced / 2**20, 1) if traced is not None else None,
            "flow_templates": len(w.flows.flows),
            "flow_cache_accounted_mib": round(getattr(w.flows, "nbytes", -1) / 2**20, 1),
            "flow_cache_limit_mib": round(getattr(w.flows, "max_bytes", -1) / 2**20, 1),
            "plans": len(plans),
            "plan_cache_accounted_mib": round(getattr(brancher, "plan_bytes", -1) / 2**20, 1),
            "flow_cache_evictions": snap.get("flow_cache_evictions"),
            "plan_cache_evictions": snap.get("plan_cache_evictions"),
            "flow_cache_hits": snap["flow_cache_hits"],
            "us_per_packet": round(dt / count * 1e6, 1),
        }
        w.close()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=4096)
    ap.add_argument("--no-trace", action="store_true", help="RSS only (tracemalloc slows the run)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_worker_memory.json"))
    a = ap.parse_args()
    out = run(a.packets, not a.no_trace)
    for k, v in out.items():
        print(f"{k:>26}: {v}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
