"""Benchmark: SnmpSource fetch of N IPv6 routes vs net-snmp's snmpbulkwalk, same agent, same run.

Builds a namespace whose kernel holds N routes, runs a real snmpd in it (see
lab/snmpd.py), then times, each ``--repeat`` times (median reported):

* ``snmpbulkwalk -v2c -Cr50 ... 1.3.6.1.2.1.4.24.7.1.7``  (net-snmp, C, one column), and the
  same with ``-v3 -l authPriv -a SHA-256 -x AES``
* SnmpSource.fetch() variants: native v2c codec walking 1 column (default), 2 and 4 columns;
  native SNMPv3 authPriv (SHA-256/AES-128, SHA-512/AES-256); the same through pysnmp
* one native walk of the ifIndex column alone
* change_marker() with marker=counts (default) and marker=column

Usage: python bench/bench_snmp.py [--routes 10000] [--repeat 3] [--out bench/results/bench_snmp.json]
Needs root (namespaces).  Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.snmpd import SnmpdLab, route_batch
from sync import mib
from sync.snmp import SnmpSource
from sync.snmp_url import parse_snmp_url
from sync.snmp_walk import NativeV2cWalker


def timed(fn, repeat: int) -> tuple[float, list[float], object]:
    samples = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), samples, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-repetitions", type=int, default=50)
    parser.add_argument("--out", default="bench/results/bench_snmp.json")
    args = parser.parse_args()

    lab = SnmpdLab()
    results: dict[str, object] = {
        "routes": args.routes,
        "max_repetitions": args.max_repetitions,
        "repeat": args.repeat,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "note": "medians of --repeat runs; machine shared with other jobs, timings are noisy",
    }
    try:
        lab.setup()
        lab.ip_batch(route_batch(args.routes, 3))
        lab.start()
        target = f"udp6:[{lab.agent_ip}]:{lab.port}"
        bulkwalk = ["snmpbulkwalk", "-v2c", "-c", "public", f"-Cr{args.max_repetitions}", "-On", "-t", "5",
                    target, "1.3.6.1.2.1.4.24.7.1.7"]
        subprocess.run(bulkwalk, capture_output=True, check=True)  # warm snmpd's route cache

        def run_bulkwalk() -> int:
            out = subprocess.run(bulkwalk, capture_output=True, check=True, text=True).stdout
            return out.count("\n")

        bulkwalk_v3 = ["snmpbulkwalk", "-v3", "-l", "authPriv", "-u", "xs256", "-a", "SHA-256", "-A",
                       "authpass256", "-x", "AES", "-X", "privpass128", f"-Cr{args.max_repetitions}", "-On",
                       "-t", "5", target, "1.3.6.1.2.1.4.24.7.1.7"]

        def run_bulkwalk_v3() -> int:
            out = subprocess.run(bulkwalk_v3, capture_output=True, check=True, text=True).stdout
            return out.count("\n")

        rows: dict[str, dict[str, object]] = {}
        median, samples, count = timed(run_bulkwalk, args.repeat)
        rows["snmpbulkwalk_one_column"] = {"median_s": median, "samples_s": samples, "rows": count}
        median, samples, count = timed(run_bulkwalk_v3, args.repeat)
        rows["snmpbulkwalk_v3_sha256_aes128_one_column"] = {"median_s": median, "samples_s": samples,
                                                            "rows": count}

        def fetch(url: str):
            def go() -> int:
                snapshot = asyncio.run(SnmpSource.from_url(url).fetch())
                return len(snapshot.routes)
            return go

        mr = f"max_repetitions={args.max_repetitions}"
        variants = {
            "fetch_native_v2c_index (default)": lab.url(mr),
            "fetch_native_v2c_type": lab.url(f"{mr}&columns=type"),
            "fetch_native_v2c_full": lab.url(f"{mr}&columns=full"),
            "fetch_native_v3_sha256_aes128_index": lab.v3_url("xs256", mr),
            "fetch_native_v3_sha512_aes256_index": lab.v3_url("xs512", mr),
            "fetch_pysnmp_v2c_index": lab.url(f"{mr}&engine=pysnmp"),
            "fetch_pysnmp_v3_sha256_aes128_index": lab.v3_url("xs256", f"{mr}&engine=pysnmp"),
        }
        for name, url in variants.items():
            median, samples, count = timed(fetch(url), args.repeat)
            rows[name] = {"median_s": median, "samples_s": samples, "routes": count}

        def native_column() -> int:
            async def go() -> int:
                walker = NativeV2cWalker(parse_snmp_url(lab.url(mr)))
                try:
                    return len(await walker.walk(mib.INET_CIDR_ROUTE_IFINDEX))
                finally:
                    await walker.close()
            return asyncio.run(go())

        median, samples, count = timed(native_column, args.repeat)
        rows["native_walk_one_column"] = {"median_s": median, "samples_s": samples, "rows": count}

        for marker in ("counts", "column"):
            source = SnmpSource.from_url(lab.url(f"{mr}&marker={marker}"))
            median, samples, _ = timed(lambda source=source: asyncio.run(source.change_marker()), args.repeat)
            rows[f"change_marker_{marker}"] = {"median_s": median, "samples_s": samples, "rows": "-"}
        base = rows["snmpbulkwalk_one_column"]["median_s"]
        for row in rows.values():
            row["x_snmpbulkwalk"] = round(float(row["median_s"]) / float(base), 2)  # type: ignore[arg-type]
        results["results"] = rows
    finally:
        lab.teardown()

    print(f"{args.routes} routes, max-repetitions {args.max_repetitions}, median of {args.repeat}")
    print(f"{'measurement':42} {'median s':>9} {'x bulkwalk':>10} {'count':>7}")
    for name, row in rows.items():
        count = row.get("routes", row.get("rows"))
        print(f"{name:42} {row['median_s']:9.3f} {row['x_snmpbulkwalk']:10.2f} {count:>7}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
