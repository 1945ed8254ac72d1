"""Benchmark: N IPv6 routes over NETCONF (real SSH server, real kernel table), fetch + parse.

    /work/venv/bin/python bench/bench_netconf.py [--routes 10000] [--runs 3] [--json out.json]

Builds a namespace ``xnc-rb<pid>`` with N kernel routes (every 10th 2-way multipath), serves it
with tests/netconf_server (the ``netconf`` package over SSH) and measures, per flavor (junos,
ietf), on one kept-open session:

* fetch: wall and client CPU time of ``NetconfSource.fetch_sync`` (RPCs + incremental parse);
* split: route RPC round trip (server renders + SSH transfer) vs client parse of that reply;
* baseline: the same reply parsed the naive way (full lxml DOM, then a walk) for comparison;
* change_marker(): wall time; reply size; client peak RSS; the host load average (this
  machine is shared: wall times move with the load, CPU times much less).

Prints a table and writes JSON (default bench/results/netconf.json).  Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxml import etree  # noqa: E402

from sync import netconf_ietf, netconf_junos  # noqa: E402
from sync.netconf import PASSWORD_ENV, NetconfSource  # noqa: E402
from tests.netconf_server.lab import PASSWORD, NetconfLab  # noqa: E402


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


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


def bench_flavor(lab: NetconfLab, url: str, flavor: str, runs: int) -> dict[str, Any]:
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
        routes = size = 0
        for _ in range(runs):
            c, t = time.process_time(), time.perf_counter()
            snap = src.fetch_sync()
            fetch_wall.append(time.perf_counter() - t)
            fetch_cpu.append(time.process_time() - c)
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
            t = time.perf_counter()
            src.change_marker_sync()
            marker_wall.append(time.perf_counter() - t)
        med = statistics.median
        return {
            "flavor": flavor, "routes": routes, "reply_bytes": size, "runs": runs,
            "fetch_wall_s": round(med(fetch_wall), 3), "fetch_wall_min_s": round(min(fetch_wall), 3),
            "fetch_cpu_s": round(med(fetch_cpu), 3),
            "route_rpc_wall_s": round(med(rpc_wall), 3),
            "parse_wall_s": round(med(parse_wall), 3), "parse_cpu_s": round(med(parse_cpu), 3),
            "naive_dom_parse_wall_s": round(med(naive_wall), 3),
            "change_marker_wall_s": round(med(marker_wall), 3),
            "routes_per_s_fetch": round(routes / med(fetch_wall)),
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
            results.append(bench_flavor(lab, lab.url(srv, flavor), flavor, args.runs))
    finally:
        lab.down()
    report = {
        "benchmark": "netconf_fetch", "kernel_routes": args.routes, "ip_batch_fill_s": round(fill_s, 3),
        "target": "10k routes fetched+parsed < 2 s", "results": results,
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_before": load_before, "loadavg_after": _load(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cols = ["flavor", "routes", "reply_bytes", "fetch_wall_s", "fetch_cpu_s", "route_rpc_wall_s",
            "parse_wall_s", "parse_cpu_s", "naive_dom_parse_wall_s", "change_marker_wall_s"]
    print(" ".join(f"{c:>14}" for c in cols))
    for r in results:
        print(" ".join(f"{r[c]!s:>14}" for c in cols))
    print(f"client peak RSS {report['client_peak_rss_mb']} MB; load average {load_before} -> "
          f"{report['loadavg_after']} on {report['cpus']} CPUs")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
