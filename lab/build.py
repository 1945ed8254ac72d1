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
from typing import Any

from api.config import read_or_create_token
from lab import netns
from lab.netns import LabError
from lab.snmpd import NS_CACHE_TIMEOUT, Snmpd
from lab.topology import API_PORT, DIVERT_MARK, DIVERT_TABLE, KERNEL_TABLE, RECEIVER_PORT, Topology

PYTHON = sys.executable
ENGINE_STOP_TIMEOUT = 10.0
BFDD = "/usr/lib/frr/bfdd"        # Debian's frr package
VTYSH = "/usr/bin/vtysh"


def _pidfile(topo: Topology, what: str) -> Path:
    return topo.state_dir / f"{what}.pid"


def _spawn(topo: Topology, what: str, ns: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Start a long-running process inside a namespace; its PID goes to a pid file."""
    log = open(topo.state_dir / f"{what}.log", "ab")   # noqa: SIM115 - handed to the child
    p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True,
                         env={**(env or os.environ), "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    log.close()
    _pidfile(topo, what).write_text(str(p.pid))
    return p.pid


def _links(topo: Topology) -> None:
    for h in (topo.sender, *topo.receivers, topo.mtu_host):
        rns = topo.router_ns(h.router)
        netns.veth(topo.ns(h.name), "eth0", rns, h.router_if, topo.link_mtu(h.router_if))
        netns.ip(topo.ns(h.name), "addr", "add", f"{h.addr}/64", "dev", "eth0", "nodad")
        netns.ip(rns, "addr", "add", f"{h.gw}/64", "dev", h.router_if, "nodad")
        netns.ip(topo.ns(h.name), "-6", "route", "add", "default", "via", h.gw, "dev", "eth0")
        if h.loopbacks():
            # one `ip -batch` per host, not 26 processes: process start-up is what a lab build
            # mostly costs, above all in vlan mode under the QEMU harness (TCG)
            batch = "".join(f"addr add {a}/128 dev lo\n" for a in h.loopbacks())
            netns.run(["ip", "-batch", "-"], ns=topo.ns(h.name), input=batch)
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
    # engine with an 802.1Q subinterface per router interface on both ends (vlan mode; needs
    # the 8021q module, i.e. the QEMU harness on this host).  Names are the same in both modes;
    # Topology.wiring is the plan, this only carries it out.
    for w in topo.wiring_plan():
        if w.router_trunk is not None and w.engine_trunk is not None:
            netns.veth(w.router_ns, w.router_trunk, w.engine_ns, w.engine_trunk, w.trunk_mtu)
            # one ``ip -batch`` per end, not four processes per subinterface: process start-up is
            # what a vlan lab build under the QEMU harness (TCG) mostly costs.  No per-link DAD
            # sysctl: add_ns turned DAD off for every interface the namespace gets.
            for ns, parent, side in ((w.router_ns, w.router_trunk, "router"),
                                     (w.engine_ns, w.engine_trunk, "engine")):
                lines = []
                for lk in w.links:
                    name = lk.router_name if side == "router" else lk.engine_name
                    addr = lk.router_addr if side == "router" else lk.engine_addr
                    lines += [f"link add link {parent} name {name} type vlan id {lk.vlan}",
                              f"link set {name} mtu {lk.mtu} up",
                              f"addr add {addr}/64 dev {name} nodad"]
                netns.batch(ns, lines)
            continue
        for lk in w.links:
            netns.veth(w.router_ns, lk.router_name, w.engine_ns, lk.engine_name, lk.mtu)
            netns.ip(w.router_ns, "addr", "add", f"{lk.router_addr}/64", "dev", lk.router_name, "nodad")
            netns.ip(w.engine_ns, "addr", "add", f"{lk.engine_addr}/64", "dev", lk.engine_name, "nodad")


def _routing(topo: Topology) -> None:
    for name, router in topo.routers.items():
        rns = topo.router_ns(name)
        netns.sysctl(rns, "net.ipv6.conf.all.forwarding", "1")
        # Routers answer every traceroute probe: Linux limits ICMPv6 errors to one a second per
        # destination after a burst of 6, which a 3-probe traceroute of 5 receivers exceeds.
        netns.sysctl(rns, "net.ipv6.icmp.ratelimit", "0")
        for prefix, gw, dev in topo.router_statics(name):
            netns.ip(rns, "-6", "route", "add", prefix, "via", gw, "dev", dev)
        # divert: mark TC 010111xx from non-engine interfaces, route marked packets to the engine
        netns.nft(rns, topo.divert_ruleset(name))
        eng_if, _, _, eng_addr = router.engine_link(0)
        netns.ip(rns, "-6", "rule", "add", "fwmark", hex(DIVERT_MARK), "lookup", str(DIVERT_TABLE),
                 "pref", "100")
        if not topo.ha:
            # one engine, no liveness check: what a static divert next hop does
            netns.ip(rns, "-6", "route", "add", "default", "via", eng_addr, "dev", eng_if,
                     "table", str(DIVERT_TABLE))
        # with engine pairs the table is lab.bfdroute's: next hops whose BFD session is up
    for e in topo.engines:
        ens = topo.engine_ns(e)
        netns.sysctl(ens, "net.ipv6.conf.all.forwarding", "0")
        netns.nft(ens, topo.engine_guard_ruleset())


def _snmpd(topo: Topology, r: str) -> None:
    """Router ``r``'s snmpd, started like every lab process (pid file, own session), its table
    caches lowered to 1 s so a route change is visible within a second, not after 60 s."""
    ns = topo.router_ns(r)
    router = topo.routers[r]
    engines = [topo.engine_index(e) for e in topo.router_engines(r)]
    listen = [f"udp6:[{router.engine_link(0, i)[2]}]:161" for i in engines]
    snmpd = Snmpd(ns, topo.engine_dir(r), [*listen, "udp6:[::1]:161"],
                  target="udp6:[::1]:161", client_ns=ns)
    # Read-only community for the engines' link networks only; a write community on the
    # router's own loopback only, for the cache timeouts below.
    snmpd.write_conf([*(f"rocommunity6 public {router.engine_subnet(0, i)}" for i in engines),
                      "rocommunity6 public ::1/128", "rwcommunity6 xl-lab-rw ::1/128"])
    _spawn(topo, f"snmpd-{r}", ns, snmpd.command(), env=snmpd.env())
    try:
        snmpd.set_caches("xl-lab-rw", NS_CACHE_TIMEOUT, 1, timeout=10)
    except RuntimeError as exc:
        raise LabError(f"snmpd on router {r}: {exc}") from exc


def router_bfd_dir(topo: Topology, r: str) -> Path:
    return topo.state_dir / f"router-{r}-bfd"


def bfdroute_state(topo: Topology, r: str) -> Path:
    """lab.bfdroute's JSON lines: each change of router ``r``'s divert next hops."""
    return topo.state_dir / f"bfdroute-{r}.jsonl"


def start_router_bfd(topo: Topology, r: str) -> None:
    """Router ``r``'s side of engine pairs: FRR's bfdd with one session per engine (on the
    engine's link 0, the divert link), and lab.bfdroute selecting the divert next hops by the
    sessions' state (see lab/bfdroute.py for why not staticd)."""
    from api.bfdd import Peer, render_config

    ns, d = topo.router_ns(r), router_bfd_dir(topo, r)
    d.mkdir(parents=True, exist_ok=True)
    # on each engine's divert link (in vlan mode: VLAN vlan_base + 0 of that engine's own trunk)
    divert = [topo.wiring(e).divert for e in topo.router_engines(r)]
    links = [(lk.router_name, lk.engine_name, lk.router_addr, lk.engine_addr) for lk in divert]
    conf = render_config([Peer(rif, eaddr, raddr) for rif, _eif, raddr, eaddr in links],
                         topo.bfd_tx_ms, topo.bfd_tx_ms, topo.bfd_multiplier)
    (d / "bfdd.conf").write_text(conf.replace("  shutdown\n", ""))   # the router's side is always on
    with contextlib.suppress(KeyError):
        import grp
        import pwd
        os.chown(d, pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid)
    _spawn(topo, f"bfdd-r{r}", ns, [BFDD, "-f", str(d / "bfdd.conf"), "--vty_socket", str(d),
                                     "--bfdctl", str(d / "bfdd.sock"), "-i", str(d / "bfdd.pid"),
                                     "-z", str(d / "zserv.api"), "--log", "stdout"])
    deadline = time.monotonic() + topo.start_timeout
    while not (d / "bfdd.sock").exists():
        if time.monotonic() > deadline:
            raise LabError(f"bfdd on router {r} did not start (log {topo.state_dir}/bfdd-r{r}.log)")
        time.sleep(0.05)
    bfdroute_state(topo, r).write_text("")
    _spawn(topo, f"bfdroute-{r}", ns, [PYTHON, "-m", "lab.bfdroute", "--ctl", str(d / "bfdd.sock"),
                                        "--table", str(DIVERT_TABLE), "--fail", topo.fail_mode,
                                        "--state", str(bfdroute_state(topo, r)),
                                        *(f"--nexthop={eaddr}@{rif}" for rif, _eif, _raddr, eaddr in links)])


def router_divert_live(topo: Topology, r: str) -> list[str]:
    """The engine addresses router ``r`` diverts to now (lab.bfdroute's last record)."""
    lines = bfdroute_state(topo, r).read_text().strip().splitlines()
    return list(json.loads(lines[-1])["live"]) if lines else []


def wait_bfd(topo: Topology, timeout: float = 30.0, routers: tuple[str, ...] = ("a", "b")) -> None:
    """Wait until every engine of ``routers`` is a divert next hop (BFD up after hold-down)."""
    deadline = time.monotonic() + timeout
    for r in routers:
        want = {topo.routers[r].engine_link(0, topo.engine_index(e))[3] for e in topo.router_engines(r)}
        while set(router_divert_live(topo, r)) != want:
            if time.monotonic() > deadline:
                raise LabError(f"router {r}: divert next hops {router_divert_live(topo, r)}, want "
                               f"{sorted(want)} (logs {topo.state_dir}/bfdd-r{r}.log, bfdroute-{r}.log)")
            time.sleep(0.1)


def accept_divert_default(topo: Topology, routers: tuple[str, ...] = ("a", "b")) -> None:
    """Apply, past the safety valve, the divert default that lab.bfdroute added to table 92.

    A lab artefact: Linux's snmpd reports every routing table, so the divert default (whose next
    hops are engine links, i.e. no_route for the engines) enters each engine's table; with engine
    pairs it appears only once BFD is up, after the engines' first sync, and the safety valve
    rightly holds back "a default route that was not there" -- with every later change of the
    router's table behind it.  A vendor router keeps the divert in its forwarding instance, out of
    the MIB.  So after BFD is up (and after the engines come back from all being down) the lab
    does what an operator would after checking: resync --force.
    """
    from lab import engine_api

    # change detection needs a poll or two to see the new route (SNMP cache 1 s in the lab)
    deadline = time.monotonic() + 3.0 + 3 * topo.poll_interval
    pending = [e for e in topo.engines if topo.engine_router(e) in routers]
    while pending and time.monotonic() < deadline:
        for e in list(pending):
            sync = (read_status(topo, e) or {}).get("sync") or {}
            if sync.get("state") == "held" and "default route" in str(sync.get("held_reason")):
                engine_api.request(topo, e, "POST", "/resync", json={"force": True})
                pending.remove(e)
        time.sleep(0.2)


def _q(value: object) -> str:
    """A TOML value (JSON's strings, numbers and arrays are valid TOML)."""
    return json.dumps(value)


def engine_toml(topo: Topology, r: str) -> str:
    """The product daemon's configuration for engine ``r`` (``xcast6-engine run --config``).

    Real SNMP sync from the router's snmpd, change detection every second, a kernel mirror
    table in the engine namespace, one ``direct`` link per router interface (the engine end of
    its veth or 802.1Q subinterface), the workers on those links, and the API on loopback.
    In ``vlan`` mode the lab builds the 802.1Q subinterfaces itself (as on the router side) and
    the daemon uses them as existing (``direct``) links.
    """
    router = topo.routers[topo.engine_router(r)]
    idx = topo.engine_index(r)
    d = topo.engine_dir(r)
    lines = [
        f"# generated by `xcast6-engine lab up` (engine {r.upper()})",
        "[engine]",
        f"state_dir = {_q(str(d / 'state'))}",
        'log_format = "text"',
        'log_level = "info"',
        "",
        "[sync]",
        f"source = {_q(source_url(topo, r))}",
        # change detection finds every change (marker=column), so full walks can be rare
        "interval = 300",
        f"change_detect = {float(topo.poll_interval)}",
        "safety_valve = 0.5",
        f"kernel_table = {KERNEL_TABLE}",
        "timeout = 10.0",
        "",
        "[links]",
        'mode = "direct"',
    ]
    for k, rifname in enumerate(router.interfaces):
        _rif, eif, raddr, eaddr = router.engine_link(k, idx)
        lines += [
            "",
            "[[links.map]]",
            f"router_if = {_q(rifname)}",
            f"link = {_q(eif)}",
            f"subnet = {_q(router.engine_subnet(k, idx))}",
            f"engine_addr = {_q(eaddr)}",
            f"router_addr = {_q(raddr)}",
        ]
    ingress = [router.engine_link(k, idx)[1] for k in range(len(router.interfaces))]
    lines += [
        "",
        "[workers]",
        f"count = {topo.workers}",
        f"ingress = {_q(ingress)}",
        "restart_backoff = 0.5",
        f"counters_file = {_q(str(topo.counters_path(r)))}",
        *([f"cpus = {list(topo.worker_cpus)}"] if topo.worker_cpus and r in topo.tuned_engines else []),
        f"busy_poll_us = {topo.worker_busy_poll_us if r in topo.tuned_engines else 0}",
        *([f"rx_buffer_kb = {topo.worker_rx_buffer_kb}"]
          if topo.worker_rx_buffer_kb and r in topo.tuned_engines else []),
        *([f"cpu_resume_latency_us = {topo.worker_cpu_resume_latency_us}"]
          if topo.worker_cpu_resume_latency_us is not None and topo.worker_cpus
          and r in topo.tuned_engines else []),
        "",
        "[dataplane]",
        f"mode = {_q(topo.dataplane)}",
        f"pin_dir = {_q(f'/sys/fs/bpf/xcast6-{topo.prefix}{r}')}",
        "",
        "[api]",
        'listen = "127.0.0.1"',
        f"port = {API_PORT}",
        f"token = {_q(lab_token(topo))}",
        f"tls_cert = {_q(str(topo.api_cert_path(r)))}",
        f"tls_key = {_q(str(topo.api_key_path(r)))}",
        "",
    ]
    if topo.ha:
        lines += [
            "[ha]",
            "enabled = true",
            f"links = {_q([topo.wiring(r).divert.engine_name])}",
            f"tx_interval_ms = {topo.bfd_tx_ms}",
            f"rx_interval_ms = {topo.bfd_tx_ms}",
            f"multiplier = {topo.bfd_multiplier}",
            f"hold_down = {float(topo.ha_hold_down)}",
            f"drain_time = {float(topo.ha_drain_time)}",
            # as long as the lab waits for a daemon: three engines starting at once on the QEMU
            # guest's one emulated CPU took longer than the default 10 s to get bfdd's sockets
            f"start_timeout = {float(topo.start_timeout)}",
            *([f"bfdd = {_q(BFDD)}", f"vtysh = {_q(VTYSH)}"]),
            "",
        ]
    return "\n".join(lines)


def source_url(topo: Topology, r: str, marker: str = "column") -> str:
    """Engine ``r``'s route source: router ``r``'s snmpd.  ``marker=column`` makes change
    detection see a route replaced in place (same count, new next hop), which the lab's
    route-change tests do; the product default (``counts``) would leave it to the full walk."""
    router = topo.routers[topo.engine_router(r)]
    return f"snmp://public@[{router.engine_link(0, topo.engine_index(r))[2]}]:161?marker={marker}"


def lab_token(topo: Topology) -> str:
    """The lab's API token, generated once per ``lab up`` (mode 0600 in the state dir)."""
    return read_or_create_token(topo.api_token_path, nbytes=24)


def lab_pki(topo: Topology) -> None:
    """The lab's API certificates: a lab CA and one certificate per engine for 127.0.0.1 (the API
    listens there inside each engine's namespace), so the lab runs the API as deployed, over TLS,
    and its clients verify it (lab/engine_api.py).  Made at the first start of a lab, again when
    older than a day (they are valid for five)."""
    from lab.pki import issue, make_ca

    ca = topo.api_ca_path
    if ca.exists() and time.time() - ca.stat().st_mtime < 86400 and all(
            topo.api_cert_path(e).exists() for e in topo.engines):
        return
    topo.state_dir.mkdir(parents=True, exist_ok=True)
    made = make_ca(topo.state_dir, "api-ca")
    for e in topo.engines:     # every engine, engine pairs included (a, a2, ..., b)
        topo.engine_dir(e).mkdir(parents=True, exist_ok=True)
        cert = issue(made, topo.engine_dir(e), "api", hosts=("127.0.0.1", "::1", "localhost"))
        assert (cert.cert, cert.key) == (topo.api_cert_path(e), topo.api_key_path(e))


def start_engine(topo: Topology, r: str) -> None:
    """Start the product daemon (``xcast6-engine run``) inside engine ``r``'s namespace."""
    d = topo.engine_dir(r)
    d.mkdir(parents=True, exist_ok=True)
    cfg = topo.config_path(r)
    lab_pki(topo)
    cfg.write_text(engine_toml(topo, r))
    _spawn(topo, f"engine-{r}", topo.engine_ns(r), [PYTHON, "-m", "api.main", "run", "--config", str(cfg)])


def _log_tail(topo: Topology, r: str, lines: int = 5) -> str:
    try:
        text = (topo.state_dir / f"engine-{r}.log").read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:])


def _engine_alive(topo: Topology, r: str) -> bool:
    try:
        pid = int(_pidfile(topo, f"engine-{r}").read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def is_ready(st: dict[str, Any] | None) -> bool:
    """A daemon /status that says: table loaded and every worker running."""
    if not st:
        return False
    sync = st.get("sync") or {}
    workers = st.get("workers") or {}
    return (bool(st.get("ready")) and int(sync.get("route_count", 0)) > 0
            and int(workers.get("running", 0)) == int(workers.get("configured", -1)) > 0)


def wait_engines(topo: Topology, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """Wait until every daemon's API reports ready; raise naming the one that is not."""
    deadline = time.monotonic() + timeout
    out: dict[str, dict[str, Any]] = {}
    for r in topo.engines:
        while True:
            st = read_status(topo, r)
            if st is not None and is_ready(st):
                out[r] = st
                break
            if not _engine_alive(topo, r):
                raise LabError(f"engine {r} daemon exited: {_log_tail(topo, r)} "
                               f"(log {topo.state_dir}/engine-{r}.log)")
            if time.monotonic() > deadline:
                raise LabError(f"engine {r} not ready after {timeout:.0f}s: status {st} "
                               f"(log {topo.state_dir}/engine-{r}.log)")
            time.sleep(0.3)
    return out


def read_status(topo: Topology, r: str) -> dict[str, Any] | None:
    """Engine ``r``'s ``GET /status`` through its API (None while it does not answer)."""
    from lab import engine_api

    return engine_api.status(topo, r)


def start_receivers(topo: Topology) -> None:
    hosts = (*topo.receivers, topo.mtu_host)
    for h in hosts:
        log = topo.receiver_log(h.name)
        log.write_text("")
        _spawn(topo, f"recv-{h.name}", topo.ns(h.name),
               [PYTHON, "-m", "lab.receiver", "--port", str(RECEIVER_PORT), "--log", str(log),
                "--ready", str(topo.state_dir / f"recv-{h.name}.ready")])
    deadline = time.monotonic() + topo.start_timeout
    for h in hosts:
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
    if topo.ha and not (Path(BFDD).exists() and shutil.which("vtysh")):
        raise LabError(f"engine pairs need FRR's bfdd ({BFDD}) and vtysh: apt-get install frr")
    (topo.state_dir / "topology.json").write_text(json.dumps(
        {"prefix": topo.prefix, "workers": topo.workers, "poll_interval": topo.poll_interval,
         "mode": topo.mode, "engines_per_router": topo.engines_per_router,
         "fail_mode": topo.fail_mode}))
    try:
        for ns in topo.all_namespaces():
            netns.add_ns(ns)
        _links(topo)
        _routing(topo)
        for r in ("a", "b"):
            _snmpd(topo, r)
            if topo.ha:
                start_router_bfd(topo, r)
        start_receivers(topo)
        for r in topo.engines:
            start_engine(topo, r)
        if wait:
            wait_engines(topo, timeout=2 * topo.start_timeout)
            if topo.ha:
                wait_bfd(topo, timeout=2 * topo.start_timeout)
                accept_divert_default(topo)
    except BaseException:
        down(topo)
        raise


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (exited, waiting for its parent or init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _kill(pidfile: Path, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    """Stop the process in ``pidfile``: ``sig``, then SIGKILL to its process group after ``wait`` s.

    Every lab process is started in its own session (pgid = pid), so the group kill also takes
    the daemon's forked workers if the daemon itself did not stop them.
    """
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
        if not _running(pid):
            break
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    with contextlib.suppress(ChildProcessError):   # our own child (lab started in this process)
        os.waitpid(pid, os.WNOHANG)
    pidfile.unlink(missing_ok=True)


def stop_engine(topo: Topology, r: str) -> None:
    """Stop engine ``r``'s daemon: SIGTERM (graceful: API, sync, workers), SIGKILL after 10 s."""
    _kill(_pidfile(topo, f"engine-{r}"), wait=ENGINE_STOP_TIMEOUT)


def down(topo: Topology) -> list[str]:
    """Stop every daemon by its pid file, delete the namespaces, remove the state dir."""
    if topo.state_dir.exists():
        for r in topo.engines:
            stop_engine(topo, r)
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
