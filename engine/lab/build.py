"""``lab up`` / ``lab down``: build and tear down the namespaces, links, daemons of a Topology."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.lab import netns
from engine.lab.netns import LabError
from engine.lab.topology import DIVERT_MARK, DIVERT_TABLE, RECEIVER_PORT, Topology

PYTHON = sys.executable
# NET-SNMP-AGENT-MIB::nsCacheTimeout, indexed by the cached table's OID (IMPLIED, no length).
NS_CACHE_TIMEOUT = "1.3.6.1.4.1.8072.1.5.3.1.2"
SNMP_CACHED_TABLES = (
    "1.3.6.1.2.1.4.24.7",   # inetCidrRouteTable (default cache 60 s)
    "1.3.6.1.2.1.4.24.4",   # ipCidrRouteTable
    "1.3.6.1.2.1.2.2",      # ifTable
    "1.3.6.1.2.1.4.34",     # ipAddressTable
)


def _pidfile(topo: Topology, what: str) -> Path:
    return topo.state_dir / f"{what}.pid"


def _spawn(topo: Topology, what: str, ns: str, cmd: list[str]) -> int:
    """Start a long-running process inside a namespace; its PID goes to a pid file."""
    log = open(topo.state_dir / f"{what}.log", "ab")   # noqa: SIM115 - handed to the child
    p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    log.close()
    _pidfile(topo, what).write_text(str(p.pid))
    return p.pid


def _links(topo: Topology) -> None:
    r = topo.routers
    for h in (topo.sender, *topo.receivers):
        rns = topo.router_ns(h.router)
        netns.veth(topo.ns(h.name), "eth0", rns, h.router_if, topo.mtu)
        netns.ip(topo.ns(h.name), "addr", "add", f"{h.addr}/64", "dev", "eth0", "nodad")
        netns.ip(rns, "addr", "add", f"{h.gw}/64", "dev", h.router_if, "nodad")
        netns.ip(topo.ns(h.name), "-6", "route", "add", "default", "via", h.gw, "dev", "eth0")
        for a in h.loopbacks():
            netns.ip(topo.ns(h.name), "addr", "add", f"{a}/128", "dev", "lo")
    # inter-router link
    netns.veth(topo.router_ns("a"), "ra-rb", topo.router_ns("b"), "rb-ra", topo.mtu)
    netns.ip(topo.router_ns("a"), "addr", "add", f"{topo.inter_net}1/64", "dev", "ra-rb", "nodad")
    netns.ip(topo.router_ns("b"), "addr", "add", f"{topo.inter_net}2/64", "dev", "rb-ra", "nodad")
    # router B's spare link to h5 (a second path for route-change tests)
    h5 = topo.ns("h5")
    netns.veth(h5, "eth1", topo.router_ns("b"), "rb-h5b", topo.mtu)
    netns.ip(h5, "addr", "add", f"{topo.spare_net}2/64", "dev", "eth1", "nodad")
    netns.ip(topo.router_ns("b"), "addr", "add", f"{topo.spare_net}1/64", "dev", "rb-h5b", "nodad")
    # engine links, one per router interface: a veth each (direct mode), or one veth trunk per
    # router with an 802.1Q subinterface per router interface on both ends (vlan mode; needs
    # the 8021q module, i.e. the QEMU harness on this host).  Names are the same in both modes.
    for name, router in r.items():
        rns, ens = topo.router_ns(name), topo.engine_ns(name)
        if topo.mode == "vlan":
            netns.veth(rns, "trunk", ens, "trunk", topo.mtu)
        for k in range(len(router.interfaces)):
            rif, eif, raddr, eaddr = router.engine_link(k)
            if topo.mode == "vlan":
                vid = str(topo.vlan_id(k))
                netns.ip(rns, "link", "add", "link", "trunk", "name", rif, "type", "vlan", "id", vid)
                netns.ip(ens, "link", "add", "link", "trunk", "name", eif, "type", "vlan", "id", vid)
                for ns, n in ((rns, rif), (ens, eif)):
                    netns.sysctl(ns, f"net.ipv6.conf.{n}.accept_dad", "0")
                    netns.ip(ns, "link", "set", n, "up")
            else:
                netns.veth(rns, rif, ens, eif, topo.mtu)
            netns.ip(rns, "addr", "add", f"{raddr}/64", "dev", rif, "nodad")
            netns.ip(ens, "addr", "add", f"{eaddr}/64", "dev", eif, "nodad")


def _routing(topo: Topology) -> None:
    for name, router in topo.routers.items():
        rns = topo.router_ns(name)
        netns.sysctl(rns, "net.ipv6.conf.all.forwarding", "1")
        for prefix, gw, dev in topo.router_statics(name):
            netns.ip(rns, "-6", "route", "add", prefix, "via", gw, "dev", dev)
        # divert: mark TC 010111xx from non-engine interfaces, route marked packets to the engine
        netns.nft(rns, topo.divert_ruleset(name))
        eng_if, _, _, eng_addr = router.engine_link(0)
        netns.ip(rns, "-6", "rule", "add", "fwmark", hex(DIVERT_MARK), "lookup", str(DIVERT_TABLE),
                 "pref", "100")
        netns.ip(rns, "-6", "route", "add", "default", "via", eng_addr, "dev", eng_if,
                 "table", str(DIVERT_TABLE))
        ens = topo.engine_ns(name)
        netns.sysctl(ens, "net.ipv6.conf.all.forwarding", "0")
        netns.nft(ens, topo.engine_guard_ruleset())


def _snmpd(topo: Topology, r: str) -> None:
    d = topo.engine_dir(r)
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "snmpd.conf"
    # Read-only community for the engine's link network only; Debian ships no MIB files, so
    # everything is numeric and MIB loading is switched off (-M/-m) to keep the log clean.
    # A write community on the router's own loopback only: the lab lowers the agent's table
    # caches (below) so a route change is visible within a second, not after 60 s.
    conf.write_text(f"rocommunity6 public 2001:db8:e{r}0::/64\nrocommunity6 public ::1/128\n"
                    "rwcommunity6 xl-lab-rw ::1/128\n")
    ns = topo.router_ns(r)
    addr = topo.routers[r].snmp_addr
    netns.run(["snmpd", "-Lf", str(d / "snmpd.log"), "-C", "-c", str(conf), "-p",
               str(_pidfile(topo, f"snmpd-{r}")), "-M", "/dev/null", "-m", "",
               f"udp6:[{addr}]:161", "udp6:[::1]:161"], ns=ns)
    deadline = time.monotonic() + 10
    for oid in SNMP_CACHED_TABLES:
        while True:
            p = netns.run(["snmpset", "-v2c", "-c", "xl-lab-rw", "-t", "0.5", "-r", "1", "udp6:[::1]:161",
                           f"{NS_CACHE_TIMEOUT}.{oid}", "i", "1"], ns=ns, check=False)
            if p.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LabError(f"snmpd on router {r}: cannot set cache timeout of {oid}: {p.stderr.strip()}")
            time.sleep(0.2)


def engine_config(topo: Topology, r: str) -> dict[str, object]:
    """The engine process's config: its links (direct mode), SNMP source, workers, files."""
    router = topo.routers[r]
    links = []
    for k, rifname in enumerate(router.interfaces):
        rif, eif, raddr, eaddr = router.engine_link(k)
        links.append({
            "router_ifname": rifname, "engine_ifname": eif,
            "engine_ifindex": netns.ifindex(topo.engine_ns(r), eif),
            "engine_addr": eaddr, "router_addr": raddr,
            "engine_mac": netns.mac(topo.engine_ns(r), eif).hex(),
            "router_mac": netns.mac(topo.router_ns(r), rif).hex(),
            "mtu": topo.mtu,
            "vlan_id": topo.vlan_id(k) if topo.mode == "vlan" else None,
        })
    return {
        "name": f"engine-{r}",
        "source_url": f"snmp://public@[{router.snmp_addr}]:161",
        "links": links,
        "ingress": [link["engine_ifname"] for link in links],
        "workers": topo.workers,
        "counters_path": str(topo.counters_path(r)),
        "status_path": str(topo.status_path(r)),
        "poll_interval": topo.poll_interval,
    }


def start_engine(topo: Topology, r: str) -> None:
    d = topo.engine_dir(r)
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "engine.json"
    cfg.write_text(json.dumps(engine_config(topo, r), indent=1))
    with contextlib.suppress(FileNotFoundError):
        topo.status_path(r).unlink()
    _spawn(topo, f"engine-{r}", topo.engine_ns(r), [PYTHON, "-m", "engine.lab.engine_proc", str(cfg)])


def wait_engines(topo: Topology, timeout: float = 60.0) -> dict[str, dict[str, object]]:
    """Wait until both engines report a loaded table; raise naming the one that did not."""
    deadline = time.monotonic() + timeout
    out: dict[str, dict[str, object]] = {}
    for r in ("a", "b"):
        while True:
            st = read_status(topo, r)
            if st and st.get("state") == "running" and int(str(st.get("routes", 0))) > 0:
                out[r] = st
                break
            if st and st.get("state") == "failed":
                raise LabError(f"engine {r} failed: {st.get('error')} (log {topo.state_dir}/engine-{r}.log)")
            if time.monotonic() > deadline:
                raise LabError(f"engine {r} not running after {timeout:.0f}s: status {st} "
                               f"(log {topo.state_dir}/engine-{r}.log)")
            time.sleep(0.2)
    return out


def read_status(topo: Topology, r: str) -> dict[str, object] | None:
    try:
        return dict(json.loads(topo.status_path(r).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def start_receivers(topo: Topology) -> None:
    for h in topo.receivers:
        log = topo.receiver_log(h.name)
        log.write_text("")
        _spawn(topo, f"recv-{h.name}", topo.ns(h.name),
               [PYTHON, "-m", "engine.lab.receiver", "--port", str(RECEIVER_PORT), "--log", str(log),
                "--ready", str(topo.state_dir / f"recv-{h.name}.ready")])
    deadline = time.monotonic() + topo.start_timeout
    for h in topo.receivers:
        while not (topo.state_dir / f"recv-{h.name}.ready").exists():
            if time.monotonic() > deadline:
                raise LabError(f"receiver on {h.name} did not start (log {topo.state_dir}/recv-{h.name}.log)")
            time.sleep(0.05)


def up(topo: Topology, wait: bool = True) -> None:
    """Build the whole lab; on any failure tear down what was built and re-raise."""
    if shutil.which("snmpd") is None or shutil.which("nft") is None:
        raise LabError("the lab needs net-snmp snmpd and nftables: apt-get install snmpd nftables")
    existing = set(netns.namespaces()) & set(topo.all_namespaces())
    if existing:
        raise LabError(f"lab with prefix {topo.prefix!r} already up ({', '.join(sorted(existing))}); "
                       f"run 'lab down --prefix {topo.prefix}' first")
    topo.state_dir.mkdir(parents=True, exist_ok=True)
    (topo.state_dir / "topology.json").write_text(json.dumps(
        {"prefix": topo.prefix, "workers": topo.workers, "poll_interval": topo.poll_interval,
         "mode": topo.mode}))
    try:
        for ns in topo.all_namespaces():
            netns.add_ns(ns)
        _links(topo)
        _routing(topo)
        for r in ("a", "b"):
            _snmpd(topo, r)
        start_receivers(topo)
        for r in ("a", "b"):
            start_engine(topo, r)
        if wait:
            wait_engines(topo, timeout=2 * topo.start_timeout)
    except BaseException:
        down(topo)
        raise


def _kill(pidfile: Path, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def stop_engine(topo: Topology, r: str) -> None:
    _kill(_pidfile(topo, f"engine-{r}"))


def down(topo: Topology) -> list[str]:
    """Stop every daemon by its pid file, delete the namespaces, remove the state dir."""
    if topo.state_dir.exists():
        for pf in sorted(topo.state_dir.glob("*.pid")):
            _kill(pf)
    removed = []
    present = set(netns.namespaces())
    for ns in topo.all_namespaces():
        if ns in present:
            netns.del_ns(ns)
            removed.append(ns)
    if topo.state_dir.exists():
        shutil.rmtree(topo.state_dir, ignore_errors=True)
    return removed
