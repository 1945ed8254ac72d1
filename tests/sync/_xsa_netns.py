"""Test helpers for sync apply tests: namespaces (prefix ``xsa``, from lab.netns) and a kernel-table
RouteSource.

``KernelTableSource`` is a real route source: it reads a namespace's kernel IPv6 table over
netlink (pyroute2) the way an SNMP agent on a Linux router would, so sync can be tested
end to end before the SNMP/NETCONF sources land.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine.model import Interface, NextHop, Route, Snapshot
from lab import netns as lab_netns
from sync.source import Progress


def sh(cmd: str, check: bool = True) -> str:
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"{cmd!r} failed: {res.stderr.strip()}")
    return res.stdout


@contextmanager
def netns() -> Iterator[str]:
    """A fresh namespace ``xsa-<pid>[-<n>]`` (lab.netns.temporary); deleted afterwards."""
    with lab_netns.temporary("xsa") as (name,):
        yield name


ip_batch = lab_netns.batch   # the sync tests' name for it


def add_veth(ns: str, a: str, b: str) -> None:
    """A veth pair with both ends in ``ns``, both up."""
    lab_netns.veth(ns, a, ns, b)


def kernel_routes(ns: str, table: int) -> list[dict[str, object]]:
    """``ip -j -6 route show table N`` parsed: iproute2 as an independent reader."""
    res = subprocess.run(f"ip -n {ns} -j -6 route show table {table}", shell=True, capture_output=True,
                         text=True)
    if res.returncode and "table does not exist" in res.stderr:
        return []            # the kernel drops an IPv6 table with its last route
    if res.returncode:
        raise RuntimeError(f"ip route show table {table} failed: {res.stderr.strip()}")
    return json.loads(res.stdout) if res.stdout.strip() else []


def kernel_view(ns: str, table: int, proto: str | None = None) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """Routes as (dst, {(gateway or '', dev)}) from iproute2, optionally only one protocol."""
    out = set()
    for rt in kernel_routes(ns, table):
        if proto is not None and str(rt.get("protocol")) != proto:
            continue
        dst = str(rt["dst"])
        if dst == "default":
            dst = "::/0"
        elif "/" not in dst:
            dst += "/128"
        hops = rt.get("nexthops") or [rt]
        out.add((dst, frozenset((str(h.get("gateway", "")), str(h["dev"])) for h in hops)))  # type: ignore[union-attr]
    return out


def expected_view(routes: list[Route], ifmap: dict[str, str]) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    out = set()
    for r in routes:
        hops = frozenset((nh.gateway_text() or "", ifmap[nh.ifname])
                         for nh in r.nexthops if nh.ifname in ifmap)
        if hops:
            out.add((str(r.prefix), hops))
    return out


class KernelTableSource:
    """RouteSource reading a namespace's main IPv6 table through pyroute2 (a Linux 'router')."""

    def __init__(self, ns: str, table: int = 254) -> None:
        self.ns = ns
        self.table = table
        self.url = f"kernel://{ns}?table={table}"
        self.fetches = 0
        self.fail_next: str | None = None

    @classmethod
    def from_url(cls, url: str, credentials: object = None) -> KernelTableSource:
        """``kernel://<netns>[?table=N]`` (registered as a scheme by tests only)."""
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(url)
        return cls(parts.netloc, int(parse_qs(parts.query).get("table", ["254"])[0]))

    def _read(self) -> tuple[list[Route], list[Interface]]:
        from pyroute2 import IPRoute

        with IPRoute(netns=self.ns) as ipr:
            links = {int(x["index"]): x for x in ipr.get_links()}
            names = {i: str(x.get("ifname")) for i, x in links.items()}
            routes = []
            for m in ipr.get_routes(family=socket.AF_INET6, table=self.table):
                if m["type"] != 1 or m["dst_len"] is None:
                    continue
                dst = m.get("dst") or "::"
                net = ipaddress.IPv6Network(f"{dst}/{m['dst_len']}")
                if net.is_link_local or net.is_multicast:
                    continue
                hops = []
                for nh in m.get("multipath") or [m]:
                    gw = nh.get("gateway")
                    gw16 = ipaddress.IPv6Address(gw).packed if gw else None
                    hops.append(NextHop(names[int(nh.get("oif"))], gw16))
                proto = {2: "kernel", 3: "boot", 4: "static"}.get(m["proto"], str(m["proto"]))
                routes.append(Route(net, tuple(hops), proto, int(m.get("priority") or 0)))
            ifaces = [Interface(names[i], i, str(x.get("operstate")) in ("UP", "UNKNOWN"))
                      for i, x in links.items()]
        return routes, ifaces

    async def fetch(self, progress: Progress | None = None) -> Snapshot:
        import asyncio

        from sync.source import SourceError

        if self.fail_next:
            msg, self.fail_next = self.fail_next, None
            raise SourceError(msg)
        t0 = time.perf_counter()
        routes, ifaces = await asyncio.to_thread(self._read)
        self.fetches += 1
        if progress:
            progress(len(routes), "routes")
        return Snapshot(routes, ifaces, self.url, time.time(), time.perf_counter() - t0)

    async def change_marker(self) -> str | None:
        """Hash of ``ip -6 route show table N`` (tens of ms, like a router's change counter)."""
        import asyncio

        proc = await asyncio.create_subprocess_exec(
            "ip", "-6", "-n", self.ns, "route", "show", "table", str(self.table),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return hashlib.sha256(out).hexdigest()
