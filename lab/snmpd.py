"""Real net-snmp ``snmpd`` in network namespaces, for tests, the lab and bench.

:class:`Snmpd` is the one way anything here runs snmpd: it writes the config, starts the
agent inside a namespace (foreground, log to a file), waits until it answers, lowers or
expires its table caches, and stops it by PID.  :class:`SnmpdLab` is the test and benchmark
"router": a namespace ``xsnmp-XXXX`` with a veth to the host (ULA /64, no DAD) on which
snmpd listens, router links inside, routes added with ``ip -batch``; the expected table is
read back with ``ip -j -6 route show table main``.  Everything is removed by PID / name on
teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.model import NextHop
from lab import netns
from lab.procs import stop_process

SNMPD = "/usr/sbin/snmpd"
V3_USERS = {
    # user: (auth proto for snmpd, auth key, priv proto for snmpd, priv key, our url names)
    "xs256": ("SHA-256", "authpass256", "AES", "privpass128", "sha256", "aes128"),
    "xs384": ("SHA-384", "authpass384", "AES-192", "privpass192", "sha384", "aes192"),
    "xs512": ("SHA-512", "authpass512", "AES-256", "privpass256", "sha512", "aes256"),
}
# NET-SNMP-AGENT-MIB nsCacheTable columns, indexed by the cached table's OID (IMPLIED, no length).
NS_CACHE_TIMEOUT = "1.3.6.1.4.1.8072.1.5.3.1.2"
NS_CACHE_STATUS = "1.3.6.1.4.1.8072.1.5.3.1.3"   # write 3 (expired): reload on the next request
CACHED_TABLES = (
    "1.3.6.1.2.1.4.24.7",   # inetCidrRouteTable (default cache 60 s)
    "1.3.6.1.2.1.4.24.4",   # ipCidrRouteTable
    "1.3.6.1.2.1.2.2",      # ifTable (ifXTable reads the same cache)
    "1.3.6.1.2.1.4.34",     # ipAddressTable
)
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"


def run(*args: str, input_text: str | None = None) -> str:
    """Run a command, raise with its stderr on failure."""
    proc = subprocess.run(args, input=input_text, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def free_udp_port() -> int:
    """A UDP port nothing listens on now (for an agent's non-standard port)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


@dataclass
class Snmpd:
    """One net-snmp ``snmpd`` in namespace ``ns``, its files in ``workdir``.

    ``listen`` are the agent's transport addresses (``udp6:[addr]:port``); ``target`` is the
    one the readiness and cache requests go to (default: the first), sent from ``client_ns``
    (``None``: the host).  MIB loading is off (Debian ships no MIB files: everything is
    numeric) and the persistent dir is private, so v3 users are created there and two agents
    never share ``/var/lib/snmp``.
    """

    ns: str
    workdir: Path
    listen: Sequence[str]
    target: str = ""
    client_ns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.target = self.target or self.listen[0]

    @property
    def conf_path(self) -> Path:
        return self.workdir / "snmpd.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "snmpd.log"

    def write_conf(self, lines: Iterable[str]) -> Path:
        """Write the agent's snmpd.conf (communities, users, views: the agent addresses are
        on the command line)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text("".join(f"{line}\n" for line in lines))
        return self.conf_path

    def command(self) -> list[str]:
        """snmpd's argv to run inside the namespace: foreground (stopped by its PID), log on stdout."""
        return [SNMPD, "-f", "-Lo", "-C", "-c", str(self.conf_path), *self.listen]

    def env(self) -> dict[str, str]:
        """The environment snmpd needs: no MIBs, a private persistent dir."""
        persist = self.workdir / "persist"
        persist.mkdir(parents=True, exist_ok=True)
        return dict(os.environ, MIBS="", MIBDIRS=str(self.workdir / "nomibs"),
                    SNMP_PERSISTENT_DIR=str(persist))

    def start(self, conf: Iterable[str], community: str = "public", timeout: float = 10.0) -> None:
        """Write ``conf``, start snmpd and wait until it answers ``community``."""
        self.write_conf(conf)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *self.command()],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env())
        try:
            self.wait_ready(community, timeout)
        except BaseException:
            self.stop()
            raise

    def request(self, tool: str, community: str, *args: str, timeout: float = 1.0,
                retries: int = 0) -> subprocess.CompletedProcess[str]:
        """Run ``snmpget``/``snmpset``/... v2c against ``target`` (from ``client_ns``)."""
        cmd = [tool, "-v2c", "-c", community, "-On", "-t", str(timeout), "-r", str(retries),
               self.target, *args]
        if self.client_ns:
            cmd = ["ip", "netns", "exec", self.client_ns, *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def wait_ready(self, community: str = "public", timeout: float = 10.0) -> None:
        """Poll sysUpTime until the agent answers; raise with its log when it does not (or died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("snmpget", community, SYS_UPTIME, timeout=0.3).returncode == 0:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise RuntimeError(f"snmpd in {self.ns} did not answer on {self.target}: {log}")

    def set_caches(self, community: str, column: str, value: int,
                   tables: Sequence[str] = CACHED_TABLES, timeout: float = 0.0) -> None:
        """Set an nsCacheTable column for each cached table (needs a write community).

        ``timeout`` 0: one try each, failures ignored (expiring a cache is best effort).
        Otherwise each is retried until it works and a RuntimeError names the one that did not.
        """
        deadline = time.monotonic() + timeout
        for oid in tables:
            while True:
                p = self.request("snmpset", community, f"{column}.{oid}", "i", str(value), timeout=0.5,
                                 retries=1 if timeout else 0)
                if p.returncode == 0 or not timeout:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"snmpd in {self.ns}: cannot set {column}.{oid}: {p.stderr.strip()}")
                time.sleep(0.2)

    def expire_caches(self, community: str) -> None:
        """Make snmpd reload its route and interface tables on the next request (a real router
        has no such 60 s cache)."""
        self.set_caches(community, NS_CACHE_STATUS, 3)

    def stop(self) -> None:
        """Stop the agent by its PID (SIGTERM, then SIGKILL); no-op if not running."""
        stop_process(self.proc)
        self.proc = None


@dataclass
class SnmpdLab:
    """One namespace + snmpd.  ``url()`` gives a source string that reaches it."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    port: int = field(default_factory=free_udp_port)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="xsnmp-")))
    links: list[str] = field(default_factory=list)
    snmpd: Snmpd | None = None
    ns: str = ""                  # the namespace, named by setup()
    _ns: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The running snmpd (None when stopped)."""
        return self.snmpd.proc if self.snmpd else None

    @property
    def agent_ip(self) -> str:
        return f"fd58:736e:{int(self.tag, 16):x}::2"

    def setup(self, nlinks: int = 3, link_base: str = "xsnmp-r") -> None:
        """The namespace, its veth to the host, and ``nlinks`` router links ``<link_base><i>``
        (2001:db8:<i>::1/64, each a veth whose peer ``...p`` stays in the namespace)."""
        (self.ns,) = self._ns.enter_context(netns.temporary(f"xsnmp-{self.tag}"))
        host_if, ns_if = f"xsnmp-{self.tag}h", f"xsnmp-{self.tag}n"
        netns.veth(None, host_if, self.ns, ns_if)
        netns.addr(None, host_if, f"fd58:736e:{int(self.tag, 16):x}::1/64")
        cmds = [f"addr add {self.agent_ip}/64 dev {ns_if} nodad"]
        # Router "interfaces": veth pairs inside the namespace (no dummy driver in this kernel).
        for i in range(nlinks):
            name = f"{link_base}{i}"
            self.links.append(name)
            cmds += [f"link add {name} type veth peer name {name}p", f"link set {name} up",
                     f"link set {name}p up", f"addr add 2001:db8:{i}::1/64 dev {name} nodad"]
        self.ip_batch(cmds)

    def ip_batch(self, commands: list[str]) -> None:
        """Apply ``ip`` commands inside the namespace in one ``ip -batch``."""
        netns.batch(self.ns, commands)

    def start(self, extra_conf: str = "") -> None:
        """Start snmpd: v2c ``public`` (read) and ``xsnmprw`` (caches only), the v3 users."""
        lines = [
            "rocommunity6 public default",
            "rwcommunity6 xsnmprw default",  # only to expire snmpd's 60 s caches (nsCacheStatus)
        ]
        for user, (auth, akey, priv, pkey, _, _) in V3_USERS.items():
            lines.append(f"createUser {user} {auth} {akey} {priv} {pkey}")
            lines.append(f"rouser {user} authpriv")
        self.snmpd = Snmpd(self.ns, self.tmp, [f"udp6:[{self.agent_ip}]:{self.port}"])
        self.snmpd.start([*lines, *extra_conf.splitlines()])

    def stop(self) -> None:
        """Stop snmpd (the namespace stays)."""
        if self.snmpd is not None:
            self.snmpd.stop()

    def teardown(self) -> None:
        """Stop snmpd, delete the namespace (the host's veth end goes with it) and the files."""
        self.stop()
        self._ns.close()
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
        if self.snmpd is not None:
            self.snmpd.expire_caches("xsnmprw")

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
    :meth:`forged_replies` (for subclasses): datagrams sent to the client before a request is
    relayed (an attacker on the path answering first).
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
                if proxy._front is not None:
                    for forged in proxy.forged_replies(data):
                        proxy._front.sendto(forged, addr)
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

    def forged_replies(self, request: bytes) -> list[bytes]:
        """Datagrams to answer ``request`` with before the agent does (none: a plain relay)."""
        return []

    def close(self) -> None:
        for transport in (self._front, self._back):
            if transport is not None:
                transport.close()
