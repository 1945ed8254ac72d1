"""Test/benchmark harness: a router namespace filled with real kernel routes + the NETCONF server.

Creates ``<prefix>-r<tag>-<pid>`` (the "router", interfaces ``xnc-ge0..N``) and
``<prefix>-n<tag>-<pid>`` (the far ends of the veth pairs) with :func:`lab.netns.temporary`, a
temp dir ``<prefix>-*`` with the SSH host key and known_hosts, and starts
``python -m lab.netconf_server`` as a subprocess.  Everything is removed by
:meth:`NetconfLab.down` (servers stopped by PID).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from engine.model import NextHop, Route
from lab import netns
from lab.netconf_server import kernel
from lab.netconf_server.junos import junos_name
from lab.procs import stop_process
from sync.netconf_xml import hop_order

WORKTREE = Path(__file__).resolve().parents[2]
PASSWORD = "xnc-s3cret-pw"
USER = "xcast"


@dataclass
class ServerProc:
    """A running NETCONF server subprocess."""

    proc: subprocess.Popen[str]
    port: int

    def stop(self) -> None:
        stop_process(self.proc)


class NetconfLab:
    """Router namespace + NETCONF server(s) for one test module."""

    def __init__(self, tag: str, n_ifaces: int = 3, prefix: str = "xnc") -> None:
        """``tag`` tells one module's lab from another's; ``prefix`` is the suite's name prefix
        (namespaces and temp dir)."""
        self.tag, self.prefix = tag, prefix
        self.netns = self.peer_ns = ""    # named by up()
        self.n_ifaces = n_ifaces
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        self.host_key = self.tmp / "host_rsa"
        self.known_hosts = self.tmp / "known_hosts"
        self.client_key = self.tmp / "client_ed25519"
        self.servers: list[ServerProc] = []
        self._namespaces = contextlib.ExitStack()

    # -- namespace --
    def up(self) -> NetconfLab:
        """Create both namespaces, the veth pairs with the router's addresses, the host key."""
        self.netns, self.peer_ns = self._namespaces.enter_context(
            netns.temporary(f"{self.prefix}-r{self.tag}", f"{self.prefix}-n{self.tag}"))
        try:
            lines = []
            for n in range(self.n_ifaces):
                netns.veth(self.netns, f"xnc-ge{n}", self.peer_ns, f"xnc-pe{n}")
                lines.append(f"addr add 2001:db8:0:{n + 1}::1/64 dev xnc-ge{n} nodad")
            self.batch(lines)
        except BaseException:
            self.down()   # callers only tear down what up() returned
            raise
        key = paramiko.RSAKey.generate(2048)
        key.write_private_key_file(str(self.host_key))
        self._host_pub = f"{key.get_name()} {key.get_base64()}"
        return self

    def batch(self, lines: list[str]) -> None:
        """Apply ``ip -batch`` lines inside the router namespace."""
        netns.batch(self.netns, lines)

    def gateway(self, n: int) -> str:
        return f"2001:db8:0:{n + 1}::2"

    def fill_basic(self) -> None:
        """Connected (from the addresses), via-gateway, multipath, blackhole and unreachable routes."""
        self.batch([
            f"route add 2001:db8:100::/48 via {self.gateway(0)} dev xnc-ge0",
            f"route add 2001:db8:101::/48 via {self.gateway(1)} dev xnc-ge1",
            f"route add ::/0 via {self.gateway(0)} dev xnc-ge0",
            f"route add 2001:db8:200::/48 nexthop via {self.gateway(0)} dev xnc-ge0"
            f" nexthop via {self.gateway(1)} dev xnc-ge1 nexthop via {self.gateway(2)} dev xnc-ge2",
            "route add blackhole 2001:db8:dead::/48",
            "route add unreachable 2001:db8:dea1::/48",
            f"route add 2001:db8:300::1/128 via {self.gateway(2)} dev xnc-ge2",
            f"route add fe80:0:0:1::/64 via {self.gateway(0)} dev xnc-ge0",  # link-local: skipped
        ])

    def fill_many(self, count: int) -> None:
        """``count`` /64 routes over the interfaces; every 10th is 2-way multipath."""
        lines = []
        for i in range(count):
            net = f"2001:db8:{0x1000 + i // 0x10000:x}:{i % 0x10000:x}::/64"
            a, b = i % self.n_ifaces, (i + 1) % self.n_ifaces
            if i % 10 == 9:
                lines.append(f"route add {net} nexthop via {self.gateway(a)} dev xnc-ge{a}"
                             f" nexthop via {self.gateway(b)} dev xnc-ge{b}")
            else:
                lines.append(f"route add {net} via {self.gateway(a)} dev xnc-ge{a}")
        self.batch(lines)

    # -- server --
    def start_server(self, *, fault: str = "none", chunk: int = 16384, authorized_key: bool = False,
                     xml_header: bool = False, nmda: bool = False, base10: bool = False) -> ServerProc:
        cmd = [sys.executable, "-m", "lab.netconf_server", "--netns", self.netns, "--host-key",
               str(self.host_key), "--user", USER, "--fault", fault, "--chunk", str(chunk)]
        if xml_header:
            cmd.append("--xml-header")
        if nmda:
            cmd.append("--nmda")
        if base10:
            cmd.append("--base10")
        if authorized_key:
            if not self.client_key.exists():
                key = paramiko.ECDSAKey.generate()
                key.write_private_key_file(str(self.client_key))
                (self.tmp / "client.pub").write_text(f"{key.get_name()} {key.get_base64()}\n")
            cmd += ["--authorized-key", str(self.tmp / "client.pub")]
        env = dict(os.environ, XNC_SERVER_PASSWORD=PASSWORD, PYTHONPATH=str(WORKTREE))
        proc = subprocess.Popen(cmd, cwd=WORKTREE, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY port="):
            stop_process(proc)
            raise RuntimeError(f"netconf server did not start: {line!r}")
        srv = ServerProc(proc, int(line.split("=")[1]))
        self.servers.append(srv)
        with self.known_hosts.open("a") as fh:
            fh.write(f"[127.0.0.1]:{srv.port} {self._host_pub}\n")
        return srv

    def url(self, srv: ServerProc, flavor: str, **opts: str) -> str:
        query = {"flavor": flavor, "known_hosts": str(self.known_hosts), "timeout": "20", **opts}
        return f"netconf://{USER}@127.0.0.1:{srv.port}?" + "&".join(f"{k}={v}" for k, v in query.items())

    def down(self) -> None:
        for srv in self.servers:
            srv.stop()
        self._namespaces.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- expectations from the REAL kernel table --
    def expected_routes(self, flavor: str) -> dict[ipaddress.IPv6Network, Route]:
        """What a correct fetch must return, from the REAL kernel table of the namespace."""
        return expected_from(kernel.routes(self.netns), flavor)


def expected_from(routes: list[kernel.KernelRoute], flavor: str) -> dict[ipaddress.IPv6Network, Route]:
    """Every forwarding main-table route, mapped the way each flavor reports it."""
    want = {}
    for r in routes:
        net = ipaddress.IPv6Network(r.dst)
        if r.kind != "unicast" or net.is_link_local or net.is_multicast:
            continue
        hops = tuple(sorted(
            (NextHop(ifname=junos_name(h.dev) if flavor == "junos" else h.dev,
                     gateway=ipaddress.IPv6Address(h.gateway).packed if h.gateway else None)
             for h in r.hops),
            key=hop_order,
        ))
        protocol = "direct" if r.protocol == "kernel" else "static"
        # Junos reports <metric> for static routes (the reproduction uses the kernel
        # metric); ietf-routing has no metric leaf.
        metric = r.metric if flavor == "junos" and protocol == "static" else 0
        want[net] = Route(prefix=net, nexthops=hops, protocol=protocol, metric=metric)
    return want


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll ``predicate()`` until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
