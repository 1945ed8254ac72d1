"""API benchmark: request latency and throughput of every read endpoint over an Internet-size
table, through a real uvicorn server on loopback.  Prints a table and writes JSON.

    python -m bench.api --routes 250000 --requests 200 --out bench-api.json
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import platform
import random
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from api.linkview import LinkView
from api.state import EngineView, StaticSync
from engine.dataplane.supervisor import WorkerSupervisor
from engine.forwarding.fib import Fib
from engine.forwarding.fib_synth import address_in, internet_table
from engine.model import Snapshot

TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(view: EngineView, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(view, TOKEN),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread


def _measure(client: httpx.Client, path: str, params: dict[str, str], n: int) -> dict[str, Any]:
    times = []
    t_all = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        times.append(time.perf_counter() - t0)
        r.raise_for_status()
    wall = time.perf_counter() - t_all
    times.sort()
    return {
        "path": path,
        "params": params,
        "requests": n,
        "bytes": len(r.content),
        "p50_ms": round(statistics.median(times) * 1e3, 3),
        "p99_ms": round(times[min(n - 1, int(n * 0.99))] * 1e3, 3),
        "max_ms": round(times[-1] * 1e3, 3),
        "req_per_s": round(n / wall, 1),
    }


def run(routes: int, requests: int, seed: int = 1) -> dict[str, Any]:
    """Build the table, serve it, and time each endpoint (sequential requests, one client)."""
    table = internet_table(routes, seed=seed)
    fib = Fib()
    t0 = time.perf_counter()
    sync = StaticSync(fib, Snapshot(routes=table, interfaces=[], source="synthetic"))
    load_s = time.perf_counter() - t0
    view = EngineView(
        fib=fib,
        sync=sync,
        workers=WorkerSupervisor(None),
        links=LinkView("vlan"),
        version="bench",
    )
    t0 = time.perf_counter()
    view.routes(limit=1)
    first_sort_s = time.perf_counter() - t0
    rng = random.Random(seed)
    r32 = next(r for r in table if r.prefix.prefixlen == 32)
    dst = str(ipaddress.IPv6Address(address_in(rng.choice(table).prefix, rng)))
    port = _free_port()
    server, thread = _serve(view, port)
    results = []
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            trust_env=False,
            timeout=60,
        ) as c:
            cases: list[tuple[str, dict[str, str]]] = [
                ("/healthz", {}),
                ("/status", {}),
                ("/routes", {"limit": "100"}),
                ("/routes", {"limit": "100", "offset": str(routes // 2)}),
                ("/routes", {"prefix": str(r32.prefix), "limit": "100"}),
                ("/routes", {"dst": dst}),
                ("/routes/lookup", {"dst": dst}),
                ("/interfaces", {}),
                ("/stats", {}),
                ("/metrics", {}),
            ]
            for path, params in cases:
                _measure(c, path, params, 5)  # warm-up
                results.append(_measure(c, path, params, requests))
    finally:
        server.should_exit = True
        thread.join(10)
    return {
        "benchmark": "api",
        "routes": routes,
        "requests_per_case": requests,
        "table_load_s": round(load_s, 3),
        "first_sort_s": round(first_sort_s, 3),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=250_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("bench-api.json"))
    args = ap.parse_args(argv)
    doc = asyncio.run(asyncio.to_thread(run, args.routes, args.requests))
    print(f"{doc['routes']} routes: table load {doc['table_load_s']} s, first sort {doc['first_sort_s']} s")
    print(f"{'endpoint':<52} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'bytes':>8}")
    for r in doc["results"]:
        q = "&".join(f"{k}={v}" for k, v in r["params"].items())
        name = r["path"] + (f"?{q}" if q else "")
        print(f"{name[:52]:<52} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['req_per_s']:>8} {r['bytes']:>8}")
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
