"""Test helpers for sync apply tests: namespaces (prefix ``xsa``) and a kernel-table RouteSource.

``KernelTableSource`` is a real route source: it reads a namespace's kernel IPv6 table over
netlink (pyroute2) the way an SNMP agent on a Linux router would, so sync can be tested
end to end before the SNMP/NETCONF sources land.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine.model import Interface, NextHop, Route, Snapshot
from lab.procs import stop_process
from sync.source import Progress

_counter = itertools.count()


def sh(cmd: str, check: bool = True) -> str:
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"{cmd!r} failed: {res.stderr.strip()}")
    return res.stdout


@contextmanager
def netns() -> Iterator[str]:
    """A fresh namespace ``xsa-<pid>-<n>`` with lo up; deleted afterwards."""
    name = f"xsa-{os.getpid()}-{next(_counter)}"
    sh(f"ip netns add {name}")
    try:
        sh(f"ip -n {name} link set lo up")
        yield name
    finally:
        sh(f"ip netns del {name}", check=False)


def add_veth(ns: str, a: str, b: str) -> None:
    sh(f"ip -n {ns} link add {a} type veth peer name {b} && ip -n {ns} link set {a} up && "
       f"ip -n {ns} link set {b} up")


def ip_batch(ns: str, lines: list[str]) -> None:
    subprocess.run(["ip", "-6", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                   check=True)


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


class XsaSnmpd:
    """net-snmp ``snmpd`` in a 'router' namespace ``xsa-snr-*`` reachable from the host.

    The namespace gets ``nlinks`` router links ``xsa-r<i>`` (2001:db8:<i>::1/64) and a veth
    to the host for the agent.  ``expire()`` drops snmpd's 60 s route/interface caches
    (NET-SNMP nsCacheStatus), which a real router does not have.
    """

    def __init__(self, nlinks: int = 3) -> None:
        import socket as _socket
        import tempfile

        n = next(_counter)
        self.ns = f"xsa-snr-{os.getpid()}-{n}"
        self.host_if, self.ns_if = f"xsa-h{os.getpid() % 10000}-{n}", f"xsa-n{os.getpid() % 10000}-{n}"
        self.agent = f"fd58:7873:61{n % 100:02d}::2"
        with _socket.socket(_socket.AF_INET6, _socket.SOCK_DGRAM) as s6:
            s6.bind(("::", 0))
            self.port = int(s6.getsockname()[1])
        self.tmp = tempfile.mkdtemp(prefix="xsa-snmpd-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.nlinks = nlinks

    @property
    def target(self) -> str:
        return f"udp6:[{self.agent}]:{self.port}"

    def url(self, query: str = "marker=counts") -> str:
        return f"snmp://public@[{self.agent}]:{self.port}?{query}"

    def __enter__(self) -> XsaSnmpd:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        sh(f"ip netns add {self.ns}")
        sh(f"ip netns exec {self.ns} sysctl -q -w net.ipv6.conf.all.accept_dad=0 "
           "net.ipv6.conf.default.accept_dad=0")
        sh(f"ip link add {self.host_if} type veth peer name {self.ns_if} && "
           f"ip link set {self.ns_if} netns {self.ns}")
        sh(f"ip addr add {self.agent[:-1]}1/64 dev {self.host_if} nodad && ip link set {self.host_if} up")
        cmds = ["link set lo up", f"addr add {self.agent}/64 dev {self.ns_if} nodad",
                f"link set {self.ns_if} up"]
        for i in range(self.nlinks):
            cmds += [f"link add xsa-r{i} type veth peer name xsa-r{i}p", f"link set xsa-r{i} up",
                     f"link set xsa-r{i}p up", f"addr add 2001:db8:{i}::1/64 dev xsa-r{i} nodad"]
        ip_batch(self.ns, cmds)
        conf = f"{self.tmp}/snmpd.conf"
        with open(conf, "w") as f:
            f.write(f"agentAddress udp6:[{self.agent}]:{self.port}\nrocommunity6 public default\n"
                    "rwcommunity6 xsarw default\n")
        env = dict(os.environ, MIBS="", SNMP_PERSISTENT_DIR=self.tmp)
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "/usr/sbin/snmpd", "-f", "-Lo", "-C",
                                      "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env)
        for _ in range(100):
            if subprocess.run(["snmpget", "-v2c", "-c", "public", "-t", "0.3", "-r", "0", self.target,
                               "1.3.6.1.2.1.1.3.0"], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("snmpd did not answer within 10 s")

    def expire(self) -> None:
        for subtree in ("1.3.6.1.2.1.4.24.7", "1.3.6.1.2.1.2.2", "1.3.6.1.2.1.4.34"):
            subprocess.run(["snmpset", "-v2c", "-c", "xsarw", self.target,
                            f"1.3.6.1.4.1.8072.1.5.3.1.3.{subtree}", "i", "3"], capture_output=True)

    def stop_agent(self) -> None:
        stop_process(self.proc)

    def __exit__(self, *exc: object) -> None:
        import shutil

        self.stop_agent()
        sh(f"ip link del {self.host_if}", check=False)
        sh(f"ip netns del {self.ns}", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
