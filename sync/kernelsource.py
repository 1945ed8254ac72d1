"""A route source over a Linux kernel table (optionally in a network namespace), via pyroute2.

``kernel://NETNS?table=254`` reads the IPv6 unicast routes of table 254 in namespace NETNS
(``kernel://localhost`` = the daemon's own namespace).  A Linux box (FRR, BIRD, the lab's
router namespaces) is a real router, so this serves as a source for such routers and for
tests.  Registered as the ``kernel://`` scheme in :mod:`sync.registry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

from engine.model import Interface, NextHop, Route, Snapshot
from sync.source import Credentials, Progress, SourceError

RTN_UNICAST = 1
_PROTO_NAMES = {
    1: "redirect",
    2: "kernel",
    3: "boot",
    4: "static",
    8: "gated",
    9: "ra",
    11: "zebra",
    12: "bird",
    16: "dhcp",
    42: "babel",
    186: "bgp",
    187: "isis",
    188: "ospf",
    189: "rip",
}
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_MULTICAST = ipaddress.IPv6Network("ff00::/8")


def _proto_name(n: int) -> str:
    return _PROTO_NAMES.get(n, str(n))


async def read_kernel_table(
    netns: str | None, table: int, proto: int | None = None
) -> tuple[list[Route], list[Interface]]:
    """IPv6 unicast routes of one table (link-local and multicast left out) and the interfaces.

    A namespace is entered by a short-lived thread of its own (``setns`` is per thread), never
    by the process: pyroute2's in-process netns support forks, which is unsafe in the daemon.
    """
    result: list[tuple[list[Route], list[Interface]]] = []
    error: list[BaseException] = []
    done = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def _finish() -> None:
        if not done.done():
            done.set_result(None)

    def work() -> None:
        try:
            if netns is not None:
                _enter_netns(netns)
            result.append(_dump(table, proto))
        except BaseException as exc:
            error.append(exc)
        finally:
            # a cancelled read (the service stopping) may find its loop already closed
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_finish)

    threading.Thread(target=work, name=f"kernel-read-{netns or 'host'}", daemon=True).start()
    await done
    if error:
        exc = error[0]
        where = f"network namespace {netns!r}" if netns else "this host"
        if isinstance(exc, OSError):
            raise SourceError(f"kernel table {table} in {where}: {exc.strerror or exc}") from exc
        raise SourceError(f"kernel table {table} in {where}: {exc}") from exc
    return result[0]


def _enter_netns(name: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET, this thread only
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def _dump(table: int, proto: int | None) -> tuple[list[Route], list[Interface]]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names: dict[int, str] = {}
        interfaces = []
        for link in ipr.get_links():
            name = link.get("ifname")
            names[link["index"]] = name
            interfaces.append(
                Interface(
                    name=name,
                    index=link["index"],
                    oper_up=link.get("operstate") in ("UP", "UNKNOWN"),
                    descr=link.get("ifalias") or "",
                )
            )
        routes = []
        for msg in ipr.route("dump", family=socket.AF_INET6, table=table):
            if msg["type"] != RTN_UNICAST or (proto is not None and msg["proto"] != proto):
                continue
            if msg.get("table") != table:
                continue
            prefix = ipaddress.IPv6Network((msg.get("dst") or "::", msg["dst_len"]))
            if prefix.subnet_of(_LINK_LOCAL) or prefix.subnet_of(_MULTICAST):
                continue
            legs = msg.get("multipath") or [
                {"oif": msg.get("oif"), "attrs": [("RTA_GATEWAY", msg.get("gateway"))]}
            ]
            hops = []
            for leg in legs:
                gw = dict(leg.get("attrs") or []).get("RTA_GATEWAY")
                oif = leg.get("oif")
                hops.append(
                    NextHop(
                        ifname=names.get(oif, f"if{oif}"),
                        gateway=None if not gw else ipaddress.IPv6Address(gw).packed,
                    )
                )
            routes.append(
                Route(
                    prefix=prefix,
                    nexthops=tuple(sorted(hops)),
                    protocol=_proto_name(msg["proto"]),
                    metric=msg.get("priority") or 0,
                )
            )
    return routes, interfaces


class KernelSource:
    """RouteSource over a Linux kernel routing table."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "kernel" or not parts.hostname:
            raise SourceError(
                f"source {url!r}: expected kernel://NETNS[?table=N] (NETNS 'localhost' = this one)"
            )
        self.url = url
        self.netns = None if parts.hostname == "localhost" else parts.hostname
        query = parse_qs(parts.query)
        unknown = set(query) - {"table"}
        if unknown:
            raise SourceError(f"source {url!r}: unknown parameter {sorted(unknown)[0]!r} (known: table)")
        try:
            self.table = int(query.get("table", ["254"])[0])
        except ValueError:
            raise SourceError(f"source {url!r}: table must be an integer table id") from None

    @classmethod
    def from_url(cls, url: str, credentials: Credentials | None = None) -> KernelSource:
        """The constructor under the name every registered source has (:mod:`sync.registry`);
        the host's own table needs no credentials."""
        return cls(url)

    async def fetch(self, progress: Progress | None = None) -> Snapshot:
        """Read the table and the interface list (raises SourceError)."""
        t0 = time.monotonic()
        routes, interfaces = await read_kernel_table(self.netns, self.table)
        if progress:
            progress(len(routes), "routes")
        return Snapshot(
            routes=routes, interfaces=interfaces, source=self.url, duration_s=time.monotonic() - t0
        )

    async def change_marker(self) -> str | None:
        """Digest of the table and interfaces: no cheaper change counter exists in the kernel."""
        routes, interfaces = await read_kernel_table(self.netns, self.table)
        return Snapshot(routes=routes, interfaces=interfaces).digest()
