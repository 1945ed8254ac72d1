"""Fixtures: a real "router" (a network namespace whose kernel table holds the routes) and a
real daemon process syncing from it, with its API on a loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab import netns
from lab.procs import stop_process
from lab.snmpd import Snmpd, free_udp_port

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "xapi-test-token-0123456789abcdefghij"


def sh(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, text=True, capture_output=True, input=input)


@dataclass
class Router:
    """A namespace standing for the router: routes via two interfaces, a connected /64, ECMP."""

    ns: str

    @property
    def host_link(self) -> str:
        """The engine side of a direct link to the router's interface ``xapi-e2``."""
        return host_link(self.ns)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return netns.ip(self.ns, *args, check=check)

    def batch(self, lines: list[str]) -> None:
        netns.batch(self.ns, lines)

    def add_routes(self, start: int, count: int, via: str = "2001:db8:a::2", dev: str = "xapi-e0") -> None:
        self.batch(
            [
                f"route add 2001:db8:{0x1000 + i:x}::/48 via {via} dev {dev}"
                for i in range(start, start + count)
            ]
        )

    def del_routes(self, start: int, count: int) -> None:
        self.batch([f"route del 2001:db8:{0x1000 + i:x}::/48" for i in range(start, start + count)])


def host_link(ns: str) -> str:
    return f"xapi-l{ns[5:]}"[:15]


def _mk_router(ns: str, routes: int) -> Router:
    """Fill namespace ``ns`` as the router: two links with routes, ECMP, a direct engine link."""
    r = Router(ns)
    for a, b, net in (("xapi-e0", "xapi-p0", "2001:db8:a::1/64"), ("xapi-e1", "xapi-p1", "2001:db8:b::1/64")):
        netns.veth(ns, a, ns, b)
        netns.addr(ns, a, net)
    # a direct engine link: host side (the "engine") <-> xapi-e2 in the router (no global address,
    # so it adds no connected route); the daemon's [links] map points at it
    sh("ip", "link", "del", r.host_link, check=False)
    netns.veth(None, r.host_link, ns, "xapi-e2")
    r.add_routes(0, routes)
    r.ip(
        "-6",
        "route",
        "add",
        "2001:db8:ecb::/48",
        "nexthop",
        "via",
        "2001:db8:a::3",
        "dev",
        "xapi-e0",
        "nexthop",
        "via",
        "2001:db8:b::3",
        "dev",
        "xapi-e1",
    )
    return r


@contextlib.contextmanager
def router_namespace(base: str, routes: int = 20) -> Iterator[Router]:
    """A router namespace ``<base>-<pid>`` (lab.netns.temporary) with ``routes`` routes; always
    deleted (the host end of its engine link goes with it)."""
    with netns.temporary(base) as (ns,):
        yield _mk_router(ns, routes)


@pytest.fixture
def xtmp() -> Iterator[Path]:
    """A temp dir with this suite's prefix (pytest's shared tmp_path root is pruned by other runs)."""
    d = Path(tempfile.mkdtemp(prefix="xapi-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def router() -> Iterator[Router]:
    with router_namespace("xapi-r") as r:
        yield r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path,
    state: Path,
    source: str,
    port: int,
    *,
    link: str,
    token: str | None = TOKEN,
    change_detect: float = 0.5,
    safety_valve: float = 0.5,
    extra: str = "",
) -> None:
    tok = f'token = "{token}"\n' if token else ""
    path.write_text(f"""
[engine]
state_dir = "{state}"
log_format = "json"
log_level = "debug"

[sync]
source = "{source}"
interval = 120
change_detect = {change_detect}
safety_valve = {safety_valve}
timeout = 10

[links]
mode = "direct"

[[links.map]]
router_if = "xapi-e2"
link = "{link}"
subnet = "2001:db8:c::/64"
engine_addr = "2001:db8:c::2"
router_addr = "2001:db8:c::1"

[workers]
count = 0

[api]
listen = "127.0.0.1"
port = {port}
{tok}{extra}""")


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    url: str
    config: Path
    log: Path
    env: dict[str, str]

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 15 s); the exit status (-9: it had to be killed)."""
        rc = stop_process(self.proc, grace=15)
        assert rc is not None
        return rc

    def logs(self) -> str:
        return self.log.read_text()


def start_daemon(
    config: Path, log: Path, url: str, ready: bool = True, env: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> Daemon:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("XCAST6_API_TOKEN", None) if env is None or "XCAST6_API_TOKEN" not in env else None
    fh = log.open("w")
    proc = subprocess.Popen(
        [PY, "-m", "api.main", "run", "--config", str(config)],
        cwd=ROOT,
        env=full_env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        text=True,
    )
    d = Daemon(proc, url, config, log, full_env)
    deadline = time.monotonic() + 30
    path = "/readyz" if ready else "/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + path, timeout=1, trust_env=False, verify=verify).status_code == 200:
                return d
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    d.stop()
    raise AssertionError(f"daemon not {path} within 30 s:\n{log.read_text()}")


@pytest.fixture
def daemon(router: Router, xtmp: Path) -> Iterator[Daemon]:
    port = free_port()
    cfg = xtmp / "engine.toml"
    write_config(cfg, xtmp / "state", f"kernel://{router.ns}", port, link=router.host_link)
    d = start_daemon(cfg, xtmp / "daemon.log", f"http://127.0.0.1:{port}")
    try:
        yield d
    finally:
        rc = d.stop()
        assert rc == 0, f"daemon exit status {rc} on SIGTERM:\n{d.logs()}"


def wait_for(cond, timeout: float = 10.0, every: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


class InProcessDaemon:
    """The daemon run in a thread of the test process (its own event loop)."""

    def __init__(self, cfg_path: Path, **kwargs: object) -> None:
        import asyncio
        import threading

        from api.config import load_config
        from api.daemon import Daemon as _Daemon

        self.cfg = load_config(cfg_path)
        self.loop = asyncio.new_event_loop()
        self.daemon = _Daemon(self.cfg, **kwargs)  # type: ignore[arg-type]
        self.error: BaseException | None = None
        self.url = self.cfg.api_url()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.daemon.run())
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=main, name="xapi-daemon", daemon=True)
        self.thread.start()
        ok = wait_for(lambda: self.error is not None or self._healthy(), 30)
        if self.error is not None or not ok:
            raise AssertionError(f"in-process daemon did not start: {self.error!r}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.daemon.request_stop)
        self.thread.join(30)
        assert not self.thread.is_alive(), "daemon thread did not stop"
        assert self.error is None, repr(self.error)


@dataclass
class SnmpRouter:
    """A Router namespace that also runs net-snmp snmpd, reachable from the host over a veth."""

    router: Router
    agent: str
    port: int
    host_if: str
    snmpd: Snmpd

    def url(self) -> str:
        return f"snmp://{SNMP_COMMUNITY}@[{self.agent}]:{self.port}?timeout=2&retries=1"

    def v3_url(self) -> str:
        """SNMPv3 authPriv (SHA-256/AES-128); the keys come from the config file or env."""
        return (
            f"snmpv3://{SNMP_V3_USER}@[{self.agent}]:{self.port}"
            "?auth_proto=sha256&priv_proto=aes128&timeout=2&retries=1"
        )

    def expire_cache(self) -> None:
        """snmpd caches its route/interface tables for 60 s: expire them (nsCacheStatus = 3)."""
        self.snmpd.expire_caches("xapirw")


SNMP_COMMUNITY = "xapi-community"
SNMP_V3_USER, SNMP_V3_AUTH, SNMP_V3_PRIV = "xapiv3", "xapi-auth-secret", "xapi-priv-secret"


def start_snmpd(router: Router, tmp: Path) -> SnmpRouter:
    """snmpd in the router namespace on a ULA veth from the host (v2c community, one v3 user)."""
    tag = os.getpid() % 0xFFFF
    host_if, ns_if = f"xapi-h{tag:x}", "xapi-n0"
    agent = f"fd58:6170:{tag:x}::2"
    sh("ip", "link", "del", host_if, check=False)
    netns.veth(None, host_if, router.ns, ns_if)
    netns.addr(None, host_if, f"fd58:6170:{tag:x}::1/64")
    netns.addr(router.ns, ns_if, f"{agent}/64")
    port = free_udp_port()
    snmpd = Snmpd(router.ns, tmp, [f"udp6:[{agent}]:{port}"])
    lab = SnmpRouter(router, agent, port, host_if, snmpd)
    try:
        snmpd.start(
            [
                f"rocommunity6 {SNMP_COMMUNITY} default",
                "rwcommunity6 xapirw default",
                f"createUser {SNMP_V3_USER} SHA-256 {SNMP_V3_AUTH} AES {SNMP_V3_PRIV}",
                f"rouser {SNMP_V3_USER} authpriv",
            ],
            community=SNMP_COMMUNITY,
        )
    except RuntimeError as exc:
        stop_snmpd(lab)
        raise AssertionError(f"snmpd did not start: {exc}") from exc
    return lab


def stop_snmpd(lab: SnmpRouter) -> None:
    """Stop snmpd and remove its veth (the router namespace stays)."""
    lab.snmpd.stop()
    sh("ip", "link", "del", lab.host_if, check=False)


def workers_summary(status: dict[str, Any]) -> dict[str, Any]:
    """/status ``workers`` without ``data_path`` (what runs and why: checked on its own)."""
    return {k: v for k, v in status["workers"].items() if k != "data_path"}
