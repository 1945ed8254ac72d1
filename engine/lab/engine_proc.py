"""One lab engine: sync the router's table over its RouteSource, run the worker pool.

This is the smallest supervisor that joins the pieces (route source -> Fib -> workers) for the
lab; the product daemon (``xcast6-engine run``, api/) does the same with config, API and the
kernel mirror.  Sequence: fetch the whole table, build the Fib, fork the workers (they inherit
the table copy-on-write), then poll the source and send each change to the workers as a diff.
A failed fetch keeps the last good table and is reported in the status file.

Status file (JSON, rewritten atomically): state, routes, generation, syncs, last_sync,
last_change, last_error, workers (pids alive).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine.fib import Fib
from engine.model import Route
from engine.worker import WorkerPool
from sync.model import Snapshot
from sync.source import RouteSource
from vlan.linkmap import EngineLink, LinkMap


def open_source(url: str) -> RouteSource:
    """The sync package's dispatcher (sync.sources), or the SNMP source directly."""
    try:
        from sync.sources import open_source as dispatch  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from sync.snmp import SnmpSource  # type: ignore[import-not-found,unused-ignore]

        return SnmpSource.from_url(url)  # type: ignore[no-any-return,unused-ignore]
    return dispatch(url)  # type: ignore[no-any-return,unused-ignore]


def links_from_config(items: list[dict[str, Any]]) -> LinkMap:
    return LinkMap([
        EngineLink(
            router_ifname=i["router_ifname"], engine_ifname=i["engine_ifname"],
            engine_ifindex=int(i["engine_ifindex"]), vlan_id=i.get("vlan_id"),
            engine_addr=ipaddress.IPv6Address(i["engine_addr"]).packed,
            router_addr=ipaddress.IPv6Address(i["router_addr"]).packed,
            engine_mac=bytes.fromhex(i["engine_mac"]), router_mac=bytes.fromhex(i["router_mac"]),
            mtu=int(i.get("mtu", 1500)),
        )
        for i in items
    ])


def usable_routes(routes: list[Route], links: LinkMap) -> tuple[list[Route], int]:
    """Routes with at least one next hop the engine can reach (an engine link exists).

    A router's routes out of its engine-facing interfaces (the engine links' own subnets, the
    divert table's default toward the engine) are not forwarding paths for copies: keeping
    them would turn "no route" into "no engine link".  Next hops without a link are pruned.
    """
    out: list[Route] = []
    ignored = 0
    for r in routes:
        hops = tuple(nh for nh in r.nexthops if links.for_router_if(nh.ifname) is not None)
        if not hops:
            ignored += 1
            continue
        out.append(r if hops == r.nexthops else dataclasses.replace(r, nexthops=hops))
    return out, ignored


def route_diff(old: dict[ipaddress.IPv6Network, Route], new: list[Route]
               ) -> tuple[list[Route], list[ipaddress.IPv6Network]]:
    """(routes added or changed, prefixes removed) between two tables."""
    new_by = {r.prefix: r for r in new}
    adds = [r for p, r in new_by.items() if old.get(p) != r]
    removes = [p for p in old if p not in new_by]
    return adds, removes


class EngineProcess:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.status_path = Path(cfg["status_path"])
        self.source = open_source(cfg["source_url"])
        self.links = links_from_config(cfg["links"])
        self.pool: WorkerPool | None = None
        self.table: dict[ipaddress.IPv6Network, Route] = {}
        self.status: dict[str, Any] = {"state": "starting", "name": cfg.get("name"), "pid": os.getpid(),
                                       "source": cfg["source_url"], "syncs": 0, "routes": 0,
                                       "last_error": None, "last_change": None}
        self.stopping = False

    def write_status(self) -> None:
        if self.pool is not None:
            self.status["generation"] = self.pool.fib.generation
            self.status["workers"] = [p.pid for p in self.pool.procs]
            self.status["workers_alive"] = self.pool.alive()
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status, default=str))
        os.replace(tmp, self.status_path)

    async def fetch(self) -> Snapshot | None:
        try:
            snap = await self.source.fetch()
        except Exception as exc:   # keep the last good table; say why in the status
            self.status["last_error"] = f"{type(exc).__name__}: {exc}"
            self.status["errors"] = int(self.status.get("errors", 0)) + 1
            return None
        routes, ignored = usable_routes(snap.routes, self.links)
        snap.routes = routes
        self.status["ignored_routes"] = ignored
        self.status["syncs"] += 1
        self.status["last_sync"] = time.time()
        self.status["last_error"] = None
        return snap

    async def run(self) -> None:
        while not self.stopping:
            snap = await self.fetch()
            if snap is not None:
                break
            self.write_status()
            await asyncio.sleep(0.5)
        else:
            return
        self.table = {r.prefix: r for r in snap.routes}
        self.pool = WorkerPool(Fib(snap.routes), self.links, list(self.cfg["ingress"]),
                               workers=int(self.cfg.get("workers", 1)),
                               counters_path=Path(self.cfg["counters_path"]))
        self.pool.start()
        self.status.update(state="running", routes=len(self.table), last_change=time.time())
        self.write_status()
        interval = float(self.cfg.get("poll_interval", 1.0))
        while not self.stopping:
            await asyncio.sleep(interval)
            revived = self.pool.revive()
            if revived:
                self.status["worker_restarts"] = self.pool.restarts
                self.status["last_error"] = f"restarted dead worker(s) {revived}"
            snap = await self.fetch()
            if snap is not None:
                adds, removes = route_diff(self.table, snap.routes)
                if adds or removes:
                    self.pool.apply_diff(adds, removes)
                    self.table = {r.prefix: r for r in snap.routes}
                    self.status.update(routes=len(self.table), last_change=time.time(),
                                       last_diff={"added_or_changed": len(adds), "removed": len(removes)})
            self.write_status()

    def stop(self) -> None:
        self.stopping = True


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    eng = EngineProcess(cfg)
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, eng.stop)
    try:
        loop.run_until_complete(eng.run())
    except Exception as exc:
        eng.status.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        eng.write_status()
        raise
    finally:
        if eng.pool is not None:
            eng.pool.stop()
        eng.status["state"] = "stopped" if eng.status["state"] != "failed" else "failed"
        eng.write_status()


if __name__ == "__main__":
    main()
