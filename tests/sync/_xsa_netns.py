"""Test helpers for sync apply tests: namespaces (prefix ``xsa``) and a kernel-table RouteSource.

``KernelTableSource`` is sync's own ``kernel://`` source (:mod:`sync.kernelsource`) with a fetch
counter and an injectable failure: a namespace's kernel IPv6 table is a real router's table.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine.model import Route, Snapshot
from lab.procs import stop_process
from sync.kernelsource import KernelSource
from sync.source import Progress, SourceError

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
