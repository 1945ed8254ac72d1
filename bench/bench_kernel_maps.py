#!/usr/bin/env python3
"""The kernel path's control plane under a full table: 250k routes into the maps, a 1,000-route
diff, and the maps' kernel memory (the issue's targets: < 5 s for 250k routes; memory reported).

Loads the TC program (not attached anywhere: this measures the control plane only), fills both
route tries from a synthetic Internet-like table (engine/forwarding/fib_synth.py) as the daemon's
start does (``KernelPath.replace``), applies a diff of 1,000 changed routes as a sync diff does
(``KernelPath.apply``: idle trie, flip, other trie), and reads each map's ``memlock``.
Prints a table and writes JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.dataplane.kernel_path import KernelPath
from engine.forwarding.fib_synth import internet_table
from engine.model import LinkMap, Route


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, default=250_000)
    ap.add_argument("--change", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_kernel_maps.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_kernel_maps needs root (BPF)")
    routes = list(internet_table(a.routes))
    kp = KernelPath.load()
    try:
        t0 = time.perf_counter()
        kp.replace(routes, LinkMap([]))
        fill_s = time.perf_counter() - t0
        mem0 = kp.prog.memory()
        # a sync diff of ``change`` routes whose next hops changed
        changed = [Route(r.prefix, routes[-1].nexthops) for r in routes[: a.change]]
        t0 = time.perf_counter()
        kp.apply(changed, ())
        change_s = time.perf_counter() - t0
        res = {"routes": len(routes), "fill_both_tries_s": round(fill_s, 2),
               "routes_per_s": round(len(routes) / fill_s), "change_routes": len(changed),
               "change_s": round(change_s, 4), "map_memory_bytes": mem0,
               "map_memory_mib_total": round(sum(mem0.values()) / 2**20, 1), "kernel": os.uname().release}
    finally:
        kp.close()
    print(json.dumps(res, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
