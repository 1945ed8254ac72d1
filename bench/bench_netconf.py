"""Benchmark: N IPv6 routes over NETCONF (real SSH server, real kernel table), fetch + parse.

    .venv/bin/python bench/bench_netconf.py [--routes 10000] [--runs 3] [--json out.json]

Builds a namespace ``xnc-rb<pid>`` with N kernel routes (every 10th 2-way multipath), serves it
with lab/netconf_server (the ``netconf`` package over SSH) and measures, per flavor (junos,
ietf), on one kept-open session:

* fetch: wall and client CPU time of ``NetconfSource.fetch_sync`` (RPCs + incremental parse);
* split: route RPC round trip (server renders + SSH transfer) vs client parse of that reply;
* reference: lxml building the whole DOM of the same reply and walking it (no route
  objects built -- a lower bound for any DOM-based parser, which also holds the whole tree);
* change detection: a route added in the namespace -> change_marker() differs (polled back
  to back) -> full fetch containing it;
* SyncService (change_detect=1.0) + Applier(Fib): route added -> found by the engine FIB;
* change_marker(): wall time; server CPU per fetch/marker (from /proc); reply size;
  client peak RSS; the host load average (this machine is shared: wall times move with
  the load, CPU times much less).

Prints a table and writes JSON (default bench/results/netconf.json).  Needs root.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sync.config import SyncConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxml import etree  # noqa: E402

from lab.netconf_server.lab import PASSWORD, NetconfLab  # noqa: E402
from sync import netconf_ietf, netconf_junos  # noqa: E402
from sync.netconf import PASSWORD_ENV, NetconfSource  # noqa: E402


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _proc_cpu(pid: int) -> float:
    """User+system CPU seconds of process ``pid`` (the server), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _route_op(flavor: str) -> etree._Element:
    if flavor == "junos":
        return netconf_junos.route_rpc()
    op = etree.Element("get")
    op.append(netconf_ietf.get_filter())
    return op


def _parse(flavor: str, raw: str) -> int:
    if flavor == "junos":
        return len(netconf_junos.parse_routes(raw).routes)
    return len(netconf_ietf.parse_reply(raw)[0].routes)


def _naive(flavor: str, raw: str) -> int:
    # What "ncclient reply -> DOM -> findall" costs: whole tree, then a walk over it.
    root = etree.fromstring(raw.encode(), etree.XMLParser(huge_tree=True))
    tag = "{*}rt" if flavor == "junos" else "{*}route"
    return sum(1 for rec in root.iter(tag) for _ in rec.iter())


def change_latency(lab: NetconfLab, src: NetconfSource, n: int) -> tuple[float, float]:
    """Route added on the router at t0 -> marker changed (back-to-back polls) -> fetched with it."""
    before = src.change_marker_sync()
    net = f"2001:db8:eeee:{n:x}::/64"
    t0 = time.perf_counter()
    lab.batch([f"route add {net} via {lab.gateway(0)} dev xnc-ge0"])
    while src.change_marker_sync() == before:
        if time.perf_counter() - t0 > 60:
            raise RuntimeError("marker did not change within 60 s")
    detected = time.perf_counter() - t0
    snap = src.fetch_sync()
    total = time.perf_counter() - t0
    assert ipaddress.IPv6Network(net) in {r.prefix for r in snap.routes}
    lab.batch([f"route del {net}"])
    return detected, total


def service_latency(lab: NetconfLab, url: str, runs: int) -> list[float]:
    """SyncService + Applier(Fib): route added on the router -> LPM in the engine FIB finds it."""
    import asyncio

    from engine.forwarding.fib import Fib
    from sync.apply import Applier
    from sync.service import SyncService

    async def scenario() -> list[float]:
        fib = Fib()
        src = NetconfSource.from_url(url)
        # The service's default change poll (1 s); the full poll is pushed out of the way.
        svc = SyncService(src, Applier(fib), config=SyncConfig(interval=3600, change_detect=1.0))
        await svc.start()
        out = []
        try:
            while len(fib) < 10000:
                await asyncio.sleep(0.05)
            for n in range(runs):
                await asyncio.sleep(1.0)  # marker baseline
                net = ipaddress.IPv6Network(f"2001:db8:dddd:{n:x}::/64")
                probe = net.network_address.packed
                t0 = time.perf_counter()
                lab.batch([f"route add {net} via {lab.gateway(1)} dev xnc-ge1"])
                while True:
                    r = fib.lookup_route(probe)
                    if r is not None and r.prefix == net:
                        break
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError("change never reached the FIB")
                    await asyncio.sleep(0.01)
                out.append(time.perf_counter() - t0)
                lab.batch([f"route del {net}"])
        finally:
            await svc.stop()
            await src.aclose()
        return out

    return asyncio.run(scenario())


def bench_flavor(lab: NetconfLab, url: str, server_pid: int, flavor: str, runs: int) -> dict[str, Any]:
    src = NetconfSource.from_url(url)
    try:
        src.change_marker_sync()  # open the session outside the timings
        fetch_wall: list[float] = []
        fetch_cpu: list[float] = []
        rpc_wall: list[float] = []
        parse_wall: list[float] = []
        parse_cpu: list[float] = []
        naive_wall: list[float] = []
        marker_wall: list[float] = []
        server_fetch_cpu: list[float] = []
        server_marker_cpu: list[float] = []
        routes = size = 0
        for _ in range(runs):
            s, c, t = _proc_cpu(server_pid), time.process_time(), time.perf_counter()
            snap = src.fetch_sync()
            fetch_wall.append(time.perf_counter() - t)
            fetch_cpu.append(time.process_time() - c)
            server_fetch_cpu.append(_proc_cpu(server_pid) - s)
            routes = len(snap.routes)
            t = time.perf_counter()
            raw = src._session.rpc(_route_op(flavor), "bench")
            rpc_wall.append(time.perf_counter() - t)
            size = len(raw.encode())
            c, t = time.process_time(), time.perf_counter()
            _parse(flavor, raw)
            parse_wall.append(time.perf_counter() - t)
            parse_cpu.append(time.process_time() - c)
            t = time.perf_counter()
            _naive(flavor, raw)
            naive_wall.append(time.perf_counter() - t)
            del raw
            s, t = _proc_cpu(server_pid), time.perf_counter()
            src.change_marker_sync()
            marker_wall.append(time.perf_counter() - t)
            server_marker_cpu.append(_proc_cpu(server_pid) - s)
        med = statistics.median
        latencies = [change_latency(lab, src, i + (0 if flavor == "junos" else 100)) for i in range(runs)]
        to_fib = service_latency(lab, url, runs)
        return {
            "flavor": flavor, "routes": routes, "reply_bytes": size, "runs": runs,
            "fetch_wall_s": round(med(fetch_wall), 3), "fetch_wall_min_s": round(min(fetch_wall), 3),
            "fetch_cpu_s": round(med(fetch_cpu), 3),
            "server_cpu_per_fetch_s": round(med(server_fetch_cpu), 3),
            "route_rpc_wall_s": round(med(rpc_wall), 3),
            "parse_wall_s": round(med(parse_wall), 3), "parse_cpu_s": round(med(parse_cpu), 3),
            "dom_build_walk_only_wall_s": round(med(naive_wall), 3),
            "change_marker_wall_s": round(med(marker_wall), 3),
            "server_cpu_per_marker_s": round(med(server_marker_cpu), 3),
            "routes_per_s_fetch": round(routes / med(fetch_wall)),
            "change_detect_wall_s": round(med(d for d, _ in latencies), 3),
            "change_detect_and_fetch_wall_s": round(med(f for _, f in latencies), 3),
            "service_change_to_fib_wall_s": round(med(to_fib), 3),
            "service_change_to_fib_max_s": round(max(to_fib), 3),
        }
    finally:
        src.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "netconf.json"))
    args = ap.parse_args()
    os.environ[PASSWORD_ENV] = PASSWORD
    lab = NetconfLab("b").up()
    results: list[dict[str, Any]] = []
    load_before = _load()
    try:
        t = time.perf_counter()
        lab.fill_many(args.routes)
        fill_s = time.perf_counter() - t
        srv = lab.start_server()
        for flavor in ("junos", "ietf"):
            results.append(bench_flavor(lab, lab.url(srv, flavor), srv.proc.pid, flavor, args.runs))
    finally:
        lab.down()
    report = {
        "benchmark": "netconf_fetch", "kernel_routes": args.routes, "ip_batch_fill_s": round(fill_s, 3),
        "target": "10k routes fetched+parsed < 2 s", "results": results,
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_before": load_before, "loadavg_after": _load(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for r in results:
        print(f"[{r['flavor']}] {r['routes']} routes, reply {r['reply_bytes'] / 1e6:.1f} MB")
        for key, value in r.items():
            if key not in ("flavor", "routes", "reply_bytes"):
                print(f"    {key:<30} {value}")
    print(f"client peak RSS {report['client_peak_rss_mb']} MB; load average {load_before} -> "
          f"{report['loadavg_after']} on {report['cpus']} CPUs")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
