"""Pure parts of the lab: names, rules, the daemon config it generates, the receiver's XCAST6 parse."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from typer.testing import CliRunner

from api import main as cli
from engine.dataplane import kernel_path
from engine.dataplane.counters import CounterFile
from engine.model import LinkMap
from lab.demo import read_logs
from lab.receiver import xcast_deliveries
from lab.topology import Topology
from tests.lab import variants
from tests.lab.scapy_xcast import xcast_packet


def test_names_follow_the_prefix() -> None:
    t = Topology(prefix="xq-")
    assert all(ns.startswith("xq-") for ns in t.all_namespaces())
    assert len(set(t.all_namespaces())) == 11     # + hm, the small-MTU receiver
    assert t.routers["a"].engine_link(0) == ("eng0", "to-ra-snd", "2001:db8:ea0::1", "2001:db8:ea0::2")


def test_divert_rules_exclude_every_engine_link() -> None:
    t = Topology()
    rules = t.divert_ruleset("a")
    n = len(t.routers["a"].interfaces)
    for k in range(n):
        assert f'"eng{k}"' in rules
    assert "ip6 dscp 23" in rules and "meta mark set 0x5c" in rules and "iifname !=" in rules
    assert "ip6 dscp 23 counter drop" in t.engine_guard_ruleset()


def test_enough_loopbacks_for_126_destinations() -> None:
    t = Topology()
    addrs = [a for h in t.receivers for a in h.loopbacks()]
    assert len(addrs) >= 126 and len(set(addrs)) == len(addrs)


def test_receiver_delivers_live_local_destinations_only() -> None:
    dests = ["2001:db8:c1::1", "2001:db8:c1::2", "2001:db8:c2::1", "2001:db8:c1::3"]
    pkt = xcast_packet("2001:db8:a0::2", dests, b"hello", sport=40000, dport=5000, live=[1, 2, 3])
    local = {ipaddress.IPv6Address(a).packed for a in ("2001:db8:c1::1", "2001:db8:c1::2", "2001:db8:c1::3")}
    recs = xcast_deliveries(pkt[40:], local)      # raw sockets see the packet after the outer header
    assert [r["dst"] for r in recs] == ["2001:db8:c1::2", "2001:db8:c1::3"]
    assert all(r["csum_ok"] and bytes.fromhex(r["payload"]) == b"hello" for r in recs)
    assert recs[0]["src"] == "2001:db8:a0::2" and (recs[0]["sport"], recs[0]["dport"]) == (40000, 5000)
    assert xcast_deliveries(pkt[40:60], local) == []


def test_counters_command_reads_the_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.shm"
    cf = CounterFile.create(path, 1)
    cf.slot(0).add("received", 7)
    cli._register()
    res = CliRunner().invoke(cli.app, ["counters", "--file", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert '"received": 7' in res.output
    res = CliRunner().invoke(cli.app, ["counters", "--file", str(path)])     # the 'show stats' layout
    assert res.exit_code == 0 and res.output.splitlines()[1].split() == ["received", "7", "-"], res.output
    res = CliRunner().invoke(cli.app, ["counters", "--file", str(tmp_path / "missing")])
    assert res.exit_code == 3 and "no counter file" in res.output     # no running engine: unreachable


def test_lab_prefix_is_validated() -> None:
    cli._register()
    res = CliRunner().invoke(cli.app, ["lab", "status", "--prefix", "bad prefix!"])
    assert res.exit_code != 0 and "prefix" in res.output


def test_generated_daemon_config_is_valid_and_maps_every_router_interface(tmp_path: Path) -> None:
    from api.config import load_config
    from lab.build import engine_toml
    from lab.topology import API_PORT, KERNEL_TABLE

    for mode in ("direct", "vlan"):
        t = Topology(prefix="xq-", state_dir=tmp_path / mode, mode=mode, workers=2)
        t.state_dir.mkdir()
        path = tmp_path / f"{mode}.toml"
        path.write_text(engine_toml(t, "b"))
        cfg = load_config(path)
        router = t.routers["b"]
        assert cfg.sync.source == f"snmp://public@[{router.snmp_addr}]:161?marker=column"
        assert cfg.sync.change_detect == 1.0 and cfg.sync.kernel_table == KERNEL_TABLE
        assert cfg.links.mode == "direct"
        assert [m.router_if for m in cfg.links.entries] == list(router.interfaces)
        assert [m.link for m in cfg.links.entries] == [f"to-{i}" for i in router.interfaces]
        want_addrs = [router.engine_link(k)[2] for k in range(len(router.interfaces))]
        got_addrs = [None if m.router_addr is None else str(m.router_addr) for m in cfg.links.entries]
        assert got_addrs == want_addrs
        assert cfg.workers.count == 2 and list(cfg.workers.ingress) == [m.link for m in cfg.links.entries]
        assert cfg.workers.counters_file == t.counters_path("b")
        assert (cfg.api.listen, cfg.api.port) == ("127.0.0.1", API_PORT)
        assert (cfg.api.tls_cert, cfg.api.tls_key) == (t.api_cert_path("b"), t.api_key_path("b"))
        assert cfg.api_url() == f"https://127.0.0.1:{API_PORT}"
        assert cfg.api.token is not None and cfg.api.token.reveal() == t.api_token_path.read_text().strip()
        assert oct(t.api_token_path.stat().st_mode & 0o777) == "0o600"


def test_kill_escalates_to_sigkill_of_the_process_group(tmp_path: Path) -> None:
    """``lab down`` stops a daemon that ignores SIGTERM, and the workers it forked, by pid."""
    import subprocess
    import sys
    import time

    from lab.build import _kill, _running

    code = ("import os, signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "child = os.fork()\n"
            "if child == 0:\n"
            "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    pidfile = tmp_path / "engine-x.pid"
    pidfile.write_text(str(p.pid))
    time.sleep(0.3)
    group = [int(x) for x in subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True,
                                            text=True).stdout.split()]
    assert p.pid in group and len(group) == 2
    t0 = time.monotonic()
    _kill(pidfile, wait=0.5)
    assert time.monotonic() - t0 < 5
    assert not pidfile.exists()
    deadline = time.monotonic() + 5
    while any(_running(pid) for pid in group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in group), group
    assert p.returncode is not None or p.poll() is not None


def test_lab_pki_gives_each_engine_a_certificate_the_lab_ca_signed(tmp_path: Path) -> None:
    """The lab's API TLS material (issue 20): a CA, a certificate per engine for 127.0.0.1 that a
    client verifying against the CA accepts; made once, kept while young."""
    import contextlib
    import ssl

    from api.config import ApiSection
    from api.tls import client_context, server_context
    from lab.build import lab_pki

    t = Topology(prefix="xq-", state_dir=tmp_path / "lab", mode="direct", workers=0)
    lab_pki(t)
    first = t.api_ca_path.read_bytes()
    lab_pki(t)
    assert t.api_ca_path.read_bytes() == first
    for r in ("a", "b"):
        server = server_context(ApiSection(tls_cert=t.api_cert_path(r), tls_key=t.api_key_path(r)))
        client = client_context(t.api_ca_path)
        a, b = ssl.MemoryBIO(), ssl.MemoryBIO()
        c = client.wrap_bio(a, b, server_hostname="127.0.0.1")
        s = server.wrap_bio(b, a, server_side=True)
        for _ in range(10):                 # a handshake in memory: both ends verify
            for end in (c, s):
                with contextlib.suppress(ssl.SSLWantReadError):
                    end.do_handshake()
        assert c.version() == "TLSv1.3" and s.version() == "TLSv1.3"
        assert oct(t.api_key_path(r).stat().st_mode & 0o777) == "0o600"


def test_lab_variants_are_link_mode_times_data_path() -> None:
    """One rule gives the e2e suite's variants, their ids and where they run (vlan: the guest)."""
    ps = variants.params()
    assert [p.id for p in ps] == ["direct", "direct-python", "vlan", "vlan-python"]
    assert [p.values[0] for p in ps] == [("direct", "auto"), ("direct", "python"),
                                         ("vlan", "auto"), ("vlan", "python")]
    assert [bool(p.marks) for p in ps] == [False, False, True, True]
    assert [p.id for p in variants.params("vlan")] == ["vlan", "vlan-python"]


def test_data_path_proof_catches_a_silent_fallback_and_a_program_in_python_mode() -> None:
    def moved(received: int, kernel: int, punted: int, relay: int = 0) -> dict[str, dict[str, int]]:
        return {"a": {"received": received, "kernel_received": kernel, "kernel_punted": punted,
                      "relay": relay}}

    # auto: every frame went through the program (branched there, or punted and counted again)
    assert variants.violations("auto", moved(5, 3, 2)) == []
    assert variants.violations("auto", moved(0, 0, 0)) == []
    assert variants.violations("auto", moved(3, 0, 0))        # fell back to the workers
    assert variants.violations("auto", moved(5, 3, 0))        # two frames bypassed it
    assert variants.violations("auto", moved(5, 3, 0, 2)) == []   # two routers' errors relayed
    # python: the program's counters never move
    assert variants.violations("python", moved(3, 0, 0)) == []
    assert variants.violations("python", moved(3, 3, 0))
    assert variants.violations("python", moved(3, 0, 1))
    # the wording the check expects is the daemon's
    _kp, said = kernel_path.start("python", [], LinkMap([]), [], None)
    assert said.startswith(variants.SAYS["python"])


def test_receiver_logs_are_read_in_whole_lines(tmp_path: Path) -> None:
    """A line the receiver is still writing is left for the next read, not parsed half-way."""
    t = Topology(state_dir=tmp_path)
    rec = {"kind": "udp", "dst": "2001:db8:a1::2", "payload": "00"}
    t.receiver_log("h1").write_text(json.dumps(rec) + "\n" + json.dumps(rec)[:20])
    assert [r["dst"] for r in read_logs(t)] == ["2001:db8:a1::2"]
    with t.receiver_log("h1").open("a") as f:
        f.write(json.dumps(rec)[20:] + "\n")
    assert len(read_logs(t)) == 2
