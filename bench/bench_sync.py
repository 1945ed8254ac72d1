"""Benchmark: diff + apply of an Internet-size table into the engine Fib and the kernel mirror.

Runs as root in a throw-away network namespace (``xsa-bench-<pid>``) with one veth pair
standing for the engine links.  Prints a table and writes ``<out>/sync.json``.

    .venv/bin/python bench/bench_sync.py [--routes 250000] [--change 1000] [--out bench-results]

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
from collections.abc import Callable
from pathlib import Path

from sync.config import SyncConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from engine.forwarding.fib import Fib
from engine.forwarding.fib_synth import internet_table, router_nexthops
from engine.model import Interface, Route, Snapshot
from lab import netns
from lab.netconf_server.junos import junos_name
from lab.netconf_server.lab import PASSWORD as NETCONF_PASSWORD
from lab.netconf_server.lab import NetconfLab
from lab.snmpd import SnmpdLab
from sync.apply import Applier
from sync.diff import diff, index_routes
from sync.kernel import KernelMirror
from sync.store import SyncStore, pack_routes, unpack_routes


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def cpu_s() -> float:
    """User + system CPU of this process (netlink work runs in our syscalls): wall time on a
    shared machine includes waiting for a core, CPU time does not."""
    t = os.times()
    return t.user + t.system


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


class _NoRouter:
    """A source that is never asked (the restart step serves from the store only)."""

    url = "bench://restart"

    async def fetch(self, progress: object = None) -> Snapshot:
        raise RuntimeError("not used")

    async def change_marker(self) -> str | None:
        return None


def restart_time(state_dir: str, ns: str, ifmap: dict[str, str]) -> dict[str, float]:
    """An engine restart: a new SyncService serves the stored table; how long until the Fib
    answers, and until the kernel mirror (still installed) has been reconciled."""
    import asyncio

    from sync.service import SyncService

    async def run() -> dict[str, float]:
        fib = Fib()
        mirror = KernelMirror(netns=ns)
        svc = SyncService(_NoRouter(), Applier(fib, mirror, ifmap.get), SyncStore(state_dir),
                          SyncConfig(change_detect=0, link_watch_s=0))
        t0 = time.perf_counter()
        await svc.start(initial_sync=False)
        serving = time.perf_counter() - t0
        await svc.kernel_restored()
        reconciled = time.perf_counter() - t0
        kernel = (svc.last_apply or {}).get("kernel", {})
        await svc.stop()
        mirror.close()
        return {"fib_serving_s": serving, "kernel_reconciled_s": reconciled, "routes": float(len(fib)),
                "kernel_requests_sent": float(kernel.get("replaced", 0) + kernel.get("deleted", 0))}

    return asyncio.run(run())


def snmp_change_latency(n_routes: int, rounds: int, poll_s: float = 1.0,
                        prime: bool = False) -> dict[str, object]:
    """Real snmpd in a namespace holding ``n_routes``; SyncService with change detection.

    Each round adds a route on the 'router', expires snmpd's 60 s route cache (NET-SNMP
    nsCacheStatus = expired, as a real router has no such cache) and times until the engine
    Fib resolves the new prefix.  snmpd re-reads its whole table on the first request after
    the expiry (~1 s at 10k); with ``prime`` one GET makes it do that before the clock starts,
    which is what an agent without such a cache looks like.  Needs sync.snmp.
    """
    import asyncio

    out: dict[str, object] = {"routes": n_routes, "change_poll_s": poll_s, "primed": prime}
    router = SnmpdLab()
    try:
        router.setup(link_base="xsa-r")
        router.ip_batch([f"route add 2001:db8:{0x8000 + n // 0x10000:x}:{n % 0x10000:x}::/64 "
                         f"via 2001:db8:{n % 3}::2 dev xsa-r{n % 3}" for n in range(n_routes)])
        router.start()
        with netns.temporary("xsa-sne") as (ens,):
            for i in range(3):
                netns.veth(ens, f"xsa-e{i}", ens, f"xsa-e{i}p")
            ifmap = {f"xsa-r{i}": f"xsa-e{i}" for i in range(3)}

            def after_add() -> None:
                # snmpd's own 60 s cache; the clock starts once the agent can see it
                router.expire_route_cache()
                if prime and router.snmpd is not None:
                    router.snmpd.request("snmpget", "public", "1.3.6.1.2.1.4.24.6.0", retries=5)

            out.update(asyncio.run(measure_change(router.url("marker=counts"), router.ns, ens, ifmap, rounds,
                                                  poll_s, after_add)))
    finally:
        router.teardown()
    return out


async def measure_change(url: str, rns: str, ens: str, ifmap: dict[str, str], rounds: int, poll_s: float,
                         after_add: Callable[[], None] | None = None,
                         via: str = "via 2001:db8:1::2 dev xsa-r1") -> dict[str, object]:
    """SyncService on ``url`` with change detection; each round adds a route (next hop ``via``)
    in the router namespace ``rns`` and times until the engine Fib resolves it."""
    import asyncio
    import statistics

    from sync.registry import open_source
    from sync.service import SyncService

    out: dict[str, object] = {}
    source = open_source(url)
    fib = Fib()
    mirror = KernelMirror(netns=ens)
    svc = SyncService(source, Applier(fib, mirror, ifmap.get), None,
                      SyncConfig(interval=3600, change_detect=poll_s, link_watch_s=0))
    t0 = time.perf_counter()
    await svc.start()
    first = await svc.jobs()[0].wait(120)
    out["first_sync_s"] = time.perf_counter() - t0
    out["first_sync_status"] = first.status
    out["fib_routes"] = len(fib)
    lat: list[float] = []
    starts: list[float] = []
    wall0 = time.time()
    for k in range(rounds):
        await asyncio.sleep(1.2)
        dst = f"2001:db8:7fff:{k:x}::/64"
        sh(f"ip -n {rns} -6 route add {dst} {via}")
        if after_add is not None:
            after_add()
        t = time.perf_counter()
        starts.append(round(time.time() - wall0, 3))
        probe = ipaddress.IPv6Network(dst).network_address.packed
        while fib.lookup(probe) is None and time.perf_counter() - t < 10:
            await asyncio.sleep(0.01)
        lat.append(time.perf_counter() - t)
    out["change_latency_s"] = lat
    out["change_jobs"] = [{"created_after_s": round(j.created_at - wall0, 3), **j.to_dict()["timings"]}
                          for j in svc.jobs() if j.trigger == "change"]
    out["round_started_after_s"] = starts
    out["marker_poll_s"] = svc.last_marker_s
    out["change_latency_median_s"] = statistics.median(lat)
    out["change_latency_max_s"] = max(lat)
    out["target_s"] = 2.0
    out["ok"] = max(lat) < 2.0
    out["change_triggers"] = svc.counters["change_triggers"]
    await svc.stop()
    mirror.close()
    close = getattr(source, "close", None)
    if close is not None:
        close()
    return out


def netconf_change_latency(n_routes: int, rounds: int, flavor: str, poll_s: float = 1.0) -> dict[str, object]:
    """The project's NETCONF/SSH test server (``python -m lab.netconf_server``, real SSH and
    framing) serving a namespace's kernel routes; same rounds as the snmpd case."""
    import asyncio

    from sync.netconf import PASSWORD_ENV

    out: dict[str, object] = {"routes": n_routes, "change_poll_s": poll_s, "flavor": flavor}
    router = NetconfLab("b", prefix="xsa-nc")
    try:
        router.up()
        router.batch([f"route add 2001:db8:{0x8000 + n // 0x10000:x}:{n % 0x10000:x}::/64 "
                      f"via {router.gateway(n % 3)} dev xnc-ge{n % 3}" for n in range(n_routes)])
        srv = router.start_server()
        os.environ[PASSWORD_ENV] = NETCONF_PASSWORD
        with netns.temporary("xsa-nce") as (ens,):
            for i in range(3):
                netns.veth(ens, f"xsa-e{i}", ens, f"xsa-e{i}p")
            ifmap = {(junos_name(f"xnc-ge{i}") if flavor == "junos" else f"xnc-ge{i}"): f"xsa-e{i}"
                     for i in range(3)}
            via = f"via {router.gateway(1)} dev xnc-ge1"
            out.update(asyncio.run(measure_change(router.url(srv, flavor, timeout="30"), router.netns, ens,
                                                  ifmap, rounds, poll_s, via=via)))
    finally:
        router.down()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=250_000)
    ap.add_argument("--change", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--snmp", type=int, default=0, metavar="N",
                    help="Also time route change -> engine via a real snmpd with N routes (needs sync.snmp).")
    ap.add_argument("--snmp-rounds", type=int, default=5)
    ap.add_argument("--snmp-poll", type=float, default=1.0, help="change_poll_s for the snmpd part.")
    ap.add_argument("--snmp-prime", action="store_true",
                    help="Let snmpd reload its table before the clock starts (no agent cache).")
    ap.add_argument("--snmp-only", action="store_true", help="Only the change-latency part(s).")
    ap.add_argument("--netconf", type=int, default=0, metavar="N",
                    help="Also time route change -> engine via the NETCONF test server with N routes.")
    ap.add_argument("--netconf-flavor", default="junos", choices=["junos", "ietf"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_sync needs root (network namespace + netlink writes)", file=sys.stderr)
        return 2

    res: dict[str, object] = {"routes": args.routes, "change": args.change, "cpus": os.cpu_count(),
                              "load_avg_start": os.getloadavg()}
    if args.netconf:
        nc = netconf_change_latency(args.netconf, args.snmp_rounds, args.netconf_flavor, args.snmp_poll)
        res["netconf_change"] = nc
        print(f"netconf/{args.netconf_flavor} {args.netconf:,} routes: first sync {nc['first_sync_s']:.2f} s "
              f"({nc['fib_routes']:,} in Fib); route change -> engine median "
              f"{nc['change_latency_median_s']:.2f} s, max {nc['change_latency_max_s']:.2f} s (target < 2 s) "
              f"{'OK' if nc['ok'] else 'MISSED'}; load avg {os.getloadavg()[0]:.1f}")
        if args.snmp_only and not args.snmp:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "sync-netconf.json").write_text(json.dumps(res, indent=2) + "\n")
            print(f"wrote {out / 'sync-netconf.json'}")
            return 0 if nc["ok"] else 1
    if args.snmp:
        snmp = snmp_change_latency(args.snmp, args.snmp_rounds, args.snmp_poll, args.snmp_prime)
        res["snmp_change"] = snmp
        print(f"snmpd {args.snmp:,} routes: first sync {snmp['first_sync_s']:.2f} s "
              f"({snmp['fib_routes']:,} in Fib); "
              f"route change -> engine median {snmp['change_latency_median_s']:.2f} s, "
              f"max {snmp['change_latency_max_s']:.2f} s (target < 2 s) {'OK' if snmp['ok'] else 'MISSED'}; "
              f"load avg {os.getloadavg()[0]:.1f}")
        if args.snmp_only:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "sync-snmp.json").write_text(json.dumps(res, indent=2) + "\n")
            print(f"wrote {out / 'sync-snmp.json'}")
            return 0 if snmp["ok"] else 1
    rss0 = rss_mb()
    t = time.perf_counter()
    table = internet_table(args.routes, seed=args.seed)
    res["generate_s"] = time.perf_counter() - t
    ifaces = [Interface(f"ge-0/0/{i}.0", 500 + i) for i in range(8)]
    snap = Snapshot(table, ifaces, "bench://synthetic")
    res["rss_table_mb"] = rss_mb() - rss0

    with netns.temporary("xsa-bench") as (ns,):
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
        c0 = cpu_s()
        t0 = time.perf_counter()
        d = diff(None, snap)
        t1 = time.perf_counter()
        ar = applier.apply(snap, d, full=True)
        t2 = time.perf_counter()
        res["full"] = {
            "diff_s": t1 - t0, "kernel_s": ar.kernel_s, "fib_s": ar.fib_s, "total_s": t2 - t0,
            "cpu_s": cpu_s() - c0,
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
        c1 = cpu_s()
        ar1 = applier.apply(new, d1)
        t2 = time.perf_counter()
        apply_cpu = cpu_s() - c1
        res["incremental"] = {
            "changes": d1.route_changes, "counts": d1.counts(), "fib_mode": ar1.fib_mode,
            "diff_s": t1 - t0, "apply_s": t2 - t1, "kernel_s": ar1.kernel_s, "fib_s": ar1.fib_s,
            "total_s": t2 - t0, "apply_cpu_s": apply_cpu,
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
                            "round_trip_equal": loaded is not None
                            and index_routes(loaded.routes) == index_routes(new.routes)}
            del loaded
            res["restart"] = restart_time(tmp, ns, ifmap)

        t0 = time.perf_counter()
        mirror.apply([], ifmap.get)
        res["kernel_flush_s"] = time.perf_counter() - t0
        mirror.close()
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
    print(f"full: total (target < 30 s)    {full['total_s']:>10.2f} s   {'OK' if full['ok'] else 'MISSED'}"
          f"   (CPU {full['cpu_s']:.2f} s)")
    print(f"kernel dump (verify)           {res['kernel_dump_s']:>10.2f} s   "
          f"match={res['kernel_matches_cache']}")
    print(f"unchanged resync diff          {res['unchanged_diff_s']:>10.2f} s")
    print(f"incremental {inc['changes']:,} changes: diff of fresh 250k fetch {inc['diff_s']:>6.3f} s")
    print(f"incremental: kernel            {inc['kernel_s']:>10.3f} s")
    print(f"incremental: Fib ({inc['fib_mode']})   {inc['fib_s']:>10.3f} s")
    print(f"incremental: apply (< 1 s)     {inc['apply_s']:>10.3f} s   {'OK' if inc['ok'] else 'MISSED'}"
          f"   kernel verified={res['incremental_kernel_verified']}")
    print(f"incremental: apply CPU         {inc['apply_cpu_s']:>10.3f} s")
    print(f"incremental: diff + apply      {inc['total_s']:>10.3f} s")
    print(f"store save / load              {store_r['save_s']:>6.2f} / {store_r['load_s']:.2f} s"
          f"   ({int(store_r['blob_bytes'] or 0) / 2**20:.1f} MB blob)")
    rs = res["restart"]
    assert isinstance(rs, dict)
    print(f"restart: Fib serving from store {rs['fib_serving_s']:>9.2f} s   ({int(rs['routes']):,} routes); "
          f"kernel reconciled {rs['kernel_reconciled_s']:.2f} s, {int(rs['kernel_requests_sent'])} requests")
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
