"""Test helpers for sync apply tests: namespaces (prefix ``xsa``, from lab.netns) and a kernel-table
RouteSource.

``KernelTableSource`` is sync's own ``kernel://`` source (:mod:`sync.kernelsource`) with a fetch
counter and an injectable failure: a namespace's kernel IPv6 table is a real router's table.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from engine.model import Route, Snapshot
from lab import netns as lab_netns
from sync.kernelsource import KernelSource
from sync.source import Progress, SourceError


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


class KernelTableSource(KernelSource):
    """sync's ``kernel://`` source for one namespace's table, counting fetches and able to fail
    the next one on request (for the failure paths of the sync tests)."""

    def __init__(self, ns: str, table: int = 254) -> None:
        super().__init__(f"kernel://{ns}?table={table}")
        self.ns = ns
        self.fetches = 0
        self.fail_next: str | None = None

    async def fetch(self, progress: Progress | None = None) -> Snapshot:
        """The table as sync's KernelSource reads it, or the failure asked for."""
        if self.fail_next:
            msg, self.fail_next = self.fail_next, None
            raise SourceError(msg)
        snap = await super().fetch(progress)
        self.fetches += 1
        return snap
