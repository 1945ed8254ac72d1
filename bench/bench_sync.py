"""Benchmark: diff + apply of an Internet-size table into the engine Fib and the kernel mirror.

Runs as root in a throw-away network namespace (``xsa-bench-<pid>``) with one veth pair
standing for the engine links.  Prints a table and writes ``<out>/sync.json``.

    /work/venv/bin/python bench/bench_sync.py [--routes 250000] [--change 1000] [--out bench-results]

Measured (each step separately and end to end):
* full: diff(None, table) + kernel mirror install + Fib build          target < 30 s at 250k
* incremental: a 1,000-route change (changed/removed/added) diffed and applied   target < 1 s
* unchanged resync (diff only), store save/load of the snapshot, kernel dump
* memory: RSS after generating the table, after the full apply, and peak RSS
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from engine.fib import Fib
from engine.fib_synth import internet_table, router_nexthops
from engine.model import Route
from sync.apply import Applier
from sync.diff import diff
from sync.kernel import KernelMirror
from sync.model import Interface, Snapshot
from sync.store import SyncStore, pack_routes, unpack_routes


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, capture_output=True)


def changed_table(routes: list[Route], n: int, seed: int) -> list[Route]:
    """``n`` changes: half next-hop changes, a quarter removals, a quarter new prefixes."""
    rng = random.Random(seed)
    hops = router_nexthops(8)
    out = list(routes)
    idx = rng.sample(range(len(out)), n // 2 + n // 4)
    for i in idx[: n // 2]:
        r = out[i]
        new_hop = hops[(hops.index(r.nexthops[0]) + 1) % len(hops)] if r.nexthops[0] in hops else hops[0]
        out[i] = Route(r.prefix, (new_hop,), r.protocol, r.metric)
    for i in sorted(idx[n // 2:], reverse=True):
        out.pop(i)
    for k in range(n - n // 2 - n // 4):
        out.append(Route(ipaddress.IPv6Network((0x3FFF0000 << 96 | k << 80, 48)), (hops[k % 8],), "bgp"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=250_000)
    ap.add_argument("--change", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_sync needs root (network namespace + netlink writes)", file=sys.stderr)
        return 2

    res: dict[str, object] = {"routes": args.routes, "change": args.change, "cpus": os.cpu_count(),
                              "load_avg_start": os.getloadavg()}
    rss0 = rss_mb()
    t = time.perf_counter()
    table = internet_table(args.routes, seed=args.seed)
    res["generate_s"] = time.perf_counter() - t
    ifaces = [Interface(f"ge-0/0/{i}.0", 500 + i) for i in range(8)]
    snap = Snapshot(table, ifaces, "bench://synthetic")
    res["rss_table_mb"] = rss_mb() - rss0

    ns = f"xsa-bench-{os.getpid()}"
    sh(f"ip netns add {ns}")
    try:
        # 8 router interfaces -> 4 veth pairs (8 engine links) in the namespace
        for i in range(4):
            sh(f"ip -n {ns} link add xsa-e{2 * i} type veth peer name xsa-e{2 * i + 1}")
        for i in range(8):
            sh(f"ip -n {ns} link set xsa-e{i} up")
        ifmap = {f"ge-0/0/{i}.0": f"xsa-e{i}" for i in range(8)}
        fib = Fib()
        mirror = KernelMirror(netns=ns)
        applier = Applier(fib, mirror, ifmap.get)

        rss1 = rss_mb()
        t0 = time.perf_counter()
        d = diff(None, snap)
        t1 = time.perf_counter()
        ar = applier.apply(snap, d, full=True)
        t2 = time.perf_counter()
        res["full"] = {
            "diff_s": t1 - t0, "kernel_s": ar.kernel_s, "fib_s": ar.fib_s, "total_s": t2 - t0,
            "kernel_installed": ar.kernel.installed if ar.kernel else None,
            "rss_added_mb": rss_mb() - rss1, "target_s": 30.0, "ok": (t2 - t0) < 30.0,
        }

        t0 = time.perf_counter()
        ours, _ = mirror.dump()
        res["kernel_dump_s"] = time.perf_counter() - t0
        res["kernel_dump_routes"] = len(ours)
        res["kernel_matches_cache"] = ours == mirror.installed()

        t0 = time.perf_counter()
        d0 = diff(snap, Snapshot(list(table), ifaces))
        res["unchanged_diff_s"] = time.perf_counter() - t0
        assert d0.empty

        # The next fetch: fresh objects for every route (as a source builds them), 1,000 changed.
        new_routes = unpack_routes(pack_routes(changed_table(table, args.change, args.seed)))
        new = Snapshot(new_routes, ifaces, "bench://synthetic")
        t0 = time.perf_counter()
        d1 = diff(snap, new, d.new_index)     # the service keeps the serving table's index
        t1 = time.perf_counter()
        ar1 = applier.apply(new, d1)
        t2 = time.perf_counter()
        res["incremental"] = {
            "changes": d1.route_changes, "counts": d1.counts(), "fib_mode": ar1.fib_mode,
            "diff_s": t1 - t0, "apply_s": t2 - t1, "kernel_s": ar1.kernel_s, "fib_s": ar1.fib_s,
            "total_s": t2 - t0,
            "kernel_replaced": ar1.kernel.replaced if ar1.kernel else None,
            "kernel_deleted": ar1.kernel.deleted if ar1.kernel else None,
            "target_s": 1.0, "ok": (t2 - t1) < 1.0,
        }
        res["incremental_kernel_verified"] = mirror.dump()[0] == mirror.installed()

        with tempfile.TemporaryDirectory(prefix="xsa-bench-") as tmp:
            store = SyncStore(tmp)
            t0 = time.perf_counter()
            store.save_snapshot(new)
            t1 = time.perf_counter()
            loaded = store.load_snapshot()
            t2 = time.perf_counter()
            info = store.snapshot_info() or {}
            store.close()
            res["store"] = {"save_s": t1 - t0, "load_s": t2 - t1, "blob_bytes": info.get("blob_bytes"),
                            "round_trip_equal": loaded is not None and loaded.routes == new.routes}

        t0 = time.perf_counter()
        mirror.apply([], ifmap.get)
        res["kernel_flush_s"] = time.perf_counter() - t0
        mirror.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["load_avg_end"] = os.getloadavg()

    full = res["full"]
    inc = res["incremental"]
    store_r = res["store"]
    assert isinstance(full, dict) and isinstance(inc, dict) and isinstance(store_r, dict)
    print(f"routes                         {args.routes:>10,}")
    print(f"generate table                 {res['generate_s']:>10.2f} s   ({res['rss_table_mb']:.0f} MB)")
    print(f"full: diff                     {full['diff_s']:>10.2f} s")
    print(f"full: kernel mirror install    {full['kernel_s']:>10.2f} s   ({full['kernel_installed']:,} rt)")
    print(f"full: Fib build                {full['fib_s']:>10.2f} s")
    print(f"full: total (target < 30 s)    {full['total_s']:>10.2f} s   {'OK' if full['ok'] else 'MISSED'}")
    print(f"kernel dump (verify)           {res['kernel_dump_s']:>10.2f} s   "
          f"match={res['kernel_matches_cache']}")
    print(f"unchanged resync diff          {res['unchanged_diff_s']:>10.2f} s")
    print(f"incremental {inc['changes']:,} changes: diff of fresh 250k fetch {inc['diff_s']:>6.3f} s")
    print(f"incremental: kernel            {inc['kernel_s']:>10.3f} s")
    print(f"incremental: Fib ({inc['fib_mode']})   {inc['fib_s']:>10.3f} s")
    print(f"incremental: apply (< 1 s)     {inc['apply_s']:>10.3f} s   {'OK' if inc['ok'] else 'MISSED'}"
          f"   kernel verified={res['incremental_kernel_verified']}")
    print(f"incremental: diff + apply      {inc['total_s']:>10.3f} s")
    print(f"store save / load              {store_r['save_s']:>6.2f} / {store_r['load_s']:.2f} s"
          f"   ({int(store_r['blob_bytes'] or 0) / 2**20:.1f} MB blob)")
    print(f"kernel flush                   {res['kernel_flush_s']:>10.2f} s")
    print(f"memory: full apply added       {full['rss_added_mb']:>10.0f} MB; "
          f"peak RSS {res['peak_rss_mb']:.0f} MB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sync.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out / 'sync.json'}")
    return 0 if full["ok"] and inc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
