"""Real net-snmp ``snmpd`` inside a network namespace whose kernel holds the routes.

The namespace ``xsnmp-XXXX`` gets a veth to the host (ULA /64, no DAD) on which snmpd
listens; the test talks to it from the host side.  Routes are added with ``ip -batch``;
the expected table is read back with ``ip -j -6 route show table main``.  snmpd runs with
``-f -Lo -C -c <our conf>`` and a private persistent dir (v3 users are created there).
Everything is removed by PID / name on teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.model import NextHop
from lab.procs import stop_process

SNMPD = "/usr/sbin/snmpd"
V3_USERS = {
    # user: (auth proto for snmpd, auth key, priv proto for snmpd, priv key, our url names)
    "xs256": ("SHA-256", "authpass256", "AES", "privpass128", "sha256", "aes128"),
    "xs384": ("SHA-384", "authpass384", "AES-192", "privpass192", "sha384", "aes192"),
    "xs512": ("SHA-512", "authpass512", "AES-256", "privpass256", "sha512", "aes256"),
}


def run(*args: str, input_text: str | None = None) -> str:
    """Run a command, raise with its stderr on failure."""
    proc = subprocess.run(args, input=input_text, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


@dataclass
class SnmpdLab:
    """One namespace + snmpd.  ``url()`` gives a source string that reaches it."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    port: int = field(default_factory=free_udp_port)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="xsnmp-")))
    links: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ns(self) -> str:
        return f"xsnmp-{self.tag}"

    @property
    def agent_ip(self) -> str:
        return f"fd58:736e:{int(self.tag, 16):x}::2"

    def setup(self, nlinks: int = 3) -> None:
        host_if, ns_if = f"xsnmp-{self.tag}h", f"xsnmp-{self.tag}n"
        run("ip", "netns", "add", self.ns)
        # No DAD: link-local addresses finishing DAD add local-table routes while snmpd reads
        # /proc/net/ipv6_route, and that seq-file walk then skips rows (seen: 6 of 10k missing).
        run("ip", "netns", "exec", self.ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0")
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", self.ns)
        run("ip", "netns", "exec", self.ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{ns_if}.accept_dad=0")
        run("ip", "addr", "add", f"fd58:736e:{int(self.tag, 16):x}::1/64", "dev", host_if, "nodad")
        run("ip", "link", "set", host_if, "up")
        cmds = ["link set lo up", f"addr add {self.agent_ip}/64 dev {ns_if} nodad", f"link set {ns_if} up"]
        # Router "interfaces": veth pairs inside the namespace (no dummy driver in this kernel).
        for i in range(nlinks):
            name = f"xsnmp-r{i}"
            self.links.append(name)
            cmds += [f"link add {name} type veth peer name {name}p", f"link set {name} up",
                     f"link set {name}p up", f"addr add 2001:db8:{i}::1/64 dev {name} nodad"]
        self.ip_batch(cmds)

    def ip_batch(self, commands: list[str]) -> None:
        """Apply ``ip`` commands inside the namespace in one ``ip -batch``."""
        run("ip", "-n", self.ns, "-batch", "-", input_text="\n".join(commands) + "\n")

    def start(self, extra_conf: str = "") -> None:
        persist = self.tmp / "persist"
        persist.mkdir(exist_ok=True)
        lines = [
            f"agentAddress udp6:[{self.agent_ip}]:{self.port}",
            "rocommunity6 public default",
            "rwcommunity6 xsnmprw default",  # only to expire snmpd's 60 s caches (nsCacheStatus)
        ]
        for user, (auth, akey, priv, pkey, _, _) in V3_USERS.items():
            lines.append(f"createUser {user} {auth} {akey} {priv} {pkey}")
            lines.append(f"rouser {user} authpriv")
        conf = self.tmp / "snmpd.conf"
        conf.write_text("\n".join(lines) + "\n" + extra_conf)
        env = dict(os.environ, MIBS="", MIBDIRS=str(self.tmp / "nomibs"), SNMP_PERSISTENT_DIR=str(persist))
        log = (self.tmp / "snmpd.log").open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, SNMPD, "-f", "-Lo", "-C", "-c", str(conf)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = subprocess.run(
                ["snmpget", "-v2c", "-c", "public", "-t", "0.3", "-r", "0", "-On",
                 f"udp6:[{self.agent_ip}]:{self.port}", "1.3.6.1.2.1.1.3.0"],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode == 0:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"snmpd did not come up: {(self.tmp / 'snmpd.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def teardown(self) -> None:
        self.stop()
        with contextlib.suppress(RuntimeError):
            run("ip", "link", "del", f"xsnmp-{self.tag}h")
        with contextlib.suppress(RuntimeError):
            run("ip", "netns", "del", self.ns)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def url(self, query: str = "", community: str = "public") -> str:
        return f"snmp://{community}@[{self.agent_ip}]:{self.port}" + (f"?{query}" if query else "")

    def v3_url(self, user: str, query: str = "") -> str:
        _, akey, _, pkey, aproto, pproto = V3_USERS[user]
        base = (f"snmpv3://{user}@[{self.agent_ip}]:{self.port}?auth_proto={aproto}&priv_proto={pproto}"
                f"&auth_key={akey}&priv_key={pkey}")
        return base + (f"&{query}" if query else "")

    def expire_route_cache(self) -> None:
        """Make snmpd reload its route and interface tables now (nsCacheStatus = expired)."""
        target = f"udp6:[{self.agent_ip}]:{self.port}"
        for subtree in ("1.3.6.1.2.1.4.24.7", "1.3.6.1.2.1.2.2", "1.3.6.1.2.1.4.34"):
            subprocess.run(["snmpset", "-v2c", "-c", "xsnmprw", "-On", target,
                            f"1.3.6.1.4.1.8072.1.5.3.1.3.{subtree}", "i", "3"],
                           capture_output=True, check=False)

    def kernel_routes(self) -> dict[ipaddress.IPv6Network, tuple[frozenset[NextHop], int]]:
        """The namespace's main IPv6 table as the SNMP source should see it."""
        data = json.loads(run("ip", "-n", self.ns, "-j", "-6", "route", "show", "table", "main"))
        out: dict[ipaddress.IPv6Network, tuple[frozenset[NextHop], int]] = {}
        for entry in data:
            if entry.get("type", "unicast") != "unicast":
                continue  # blackhole/unreachable/prohibit: discards, not next hops
            dst = entry["dst"]
            prefix = ipaddress.IPv6Network("::/0" if dst == "default" else dst)
            if prefix.subnet_of(ipaddress.IPv6Network("fe80::/10")):
                continue
            hops = entry.get("nexthops") or [entry]
            nhs = frozenset(
                NextHop(ifname=h["dev"],
                        gateway=ipaddress.IPv6Address(h["gateway"]).packed if "gateway" in h else None)
                for h in hops
            )
            out[prefix] = (nhs, int(entry.get("metric", 0)))
        return out

    def interfaces(self) -> dict[str, bool]:
        """Namespace interface name -> oper up (as IF-MIB ifOperStatus will say)."""
        data = json.loads(run("ip", "-n", self.ns, "-j", "link", "show"))
        return {d["ifname"]: d.get("operstate") in ("UP", "UNKNOWN") for d in data}


def route_batch(count: int, nlinks: int, start: int = 0) -> list[str]:
    """``ip -batch`` lines for ``count`` routes: 80 % via gateway, 10 % multipath, 10 % connected."""
    lines = []
    for n in range(start, start + count):
        prefix = f"2001:db8:{0x8000 + n // 0x10000:x}:{n % 0x10000:x}::/64"
        link = n % nlinks
        kind = n % 10
        if kind == 0:
            other = (link + 1) % nlinks
            lines.append(f"route add {prefix} nexthop via 2001:db8:{link}::{2 + n % 5:x} dev xsnmp-r{link} "
                         f"nexthop via 2001:db8:{other}::{2 + n % 7:x} dev xsnmp-r{other}")
        elif kind == 1:
            lines.append(f"route add {prefix} dev xsnmp-r{link} metric {100 + n % 50}")
        else:
            lines.append(f"route add {prefix} via 2001:db8:{link}::{2 + n % 9:x} dev xsnmp-r{link}")
    return lines


_SNMPSIM_MAIN = (
    "import sys, dbm, dbm.dumb, json, bz2, gzip, random;"
    "import encodings.latin_1, encodings.ascii, encodings.hex_codec;"
    "from snmpsim.commands.responder import main; sys.argv[0] = 'snmpsim-command-responder'; sys.exit(main())"
)


def _recordings() -> Path:
    """snmpsim-data's router recordings, wherever the package is installed (it is a test extra)."""
    import importlib.util

    spec = importlib.util.find_spec("snmpsim_data")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the snmpsim-data package is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "network" / "router"



@dataclass
class SnmpsimAgent:
    """snmpsim serving ``.snmprec`` files on loopback; the community is the file's stem."""

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="xsnmp-sim-")))
    port: int = field(default_factory=free_udp_port)
    proc: subprocess.Popen[bytes] | None = None

    def add_recording(self, community: str, text: str) -> None:
        data = self.tmp / "data"
        data.mkdir(exist_ok=True)
        (data / f"{community}.snmprec").write_text(text)

    def add_real_recording(self, community: str, name: str) -> None:
        """Decompress one of snmpsim-data's router recordings under ``community``."""
        import bz2

        raw = bz2.decompress((_recordings() / f"{name}.snmprec.bz2").read_bytes())
        self.add_recording(community, raw.decode())

    def start(self) -> None:
        for sub in ("data", "cache"):
            (self.tmp / sub).mkdir(exist_ok=True)
        os.chmod(self.tmp, 0o755)
        for path in self.tmp.rglob("*"):
            os.chmod(path, 0o777 if path.is_dir() else 0o644)
        log = (self.tmp / "snmpsim.log").open("wb")
        self.proc = subprocess.Popen(
            # snmpsim insists on dropping root; the interpreter lives under /root (mode 700), so
            # modules it imports lazily after the drop (dbm.dumb for its index) are preloaded.
            [sys.executable, "-c", _SNMPSIM_MAIN, f"--data-dir={self.tmp / 'data'}",
             f"--cache-dir={self.tmp / 'cache'}", f"--agent-udpv6-endpoint=[::1]:{self.port}",
             "--process-user=nobody", "--process-group=nogroup", "--log-level=error"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        community = next((self.tmp / "data").glob("*.snmprec")).stem
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            proc = subprocess.run(
                ["snmpget", "-v2c", "-c", community, "-t", "0.5", "-r", "0", "-On",
                 f"udp6:[::1]:{self.port}", "1.3.6.1.2.1.1.3.0"],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode == 0 or "No Such" in proc.stdout:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"snmpsim did not come up: {(self.tmp / 'snmpsim.log').read_text()[-2000:]}")

    def url(self, community: str, query: str = "") -> str:
        return f"snmp://{community}@[::1]:{self.port}" + (f"?{query}" if query else "")

    def teardown(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


class UdpFaultProxy:
    """A UDP relay on [::1] in front of an agent that misbehaves on purpose.

    ``drop_after=N``: relay N replies, then swallow every later reply (timeout mid-walk).
    ``truncate_at=N``: cut the N-th reply (1-based) to half its length (reply cut short).
    Runs in the test's own event loop, next to the client.
    """

    def __init__(self, upstream: tuple[str, int], *, drop_after: int | None = None,
                 truncate_at: int | None = None) -> None:
        self.upstream = upstream
        self.drop_after = drop_after
        self.truncate_at = truncate_at
        self.replies = 0
        self.port = 0
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None
        self._client: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        proxy = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                proxy._client = addr
                if proxy._back is not None:
                    proxy._back.sendto(data)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                proxy.replies += 1
                if proxy.drop_after is not None and proxy.replies > proxy.drop_after:
                    return
                if proxy.truncate_at == proxy.replies:
                    data = data[: len(data) // 2]
                if proxy._front is not None and proxy._client is not None:
                    proxy._front.sendto(data, proxy._client)

        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=("::1", 0))
        self._back, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.upstream)
        self.port = self._front.get_extra_info("sockname")[1]

    def close(self) -> None:
        for transport in (self._front, self._back):
            if transport is not None:
                transport.close()
