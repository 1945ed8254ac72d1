"""``xcast6-engine routes fetch|diff|history`` against a namespace 'router' (kernel:// scheme)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import main as cli
from engine.model import NextHop, Route, Snapshot, ip6
from sync import registry
from sync.store import HistoryEntry, SyncStore
from tests.sync._xsa_netns import add_veth, ip_batch, netns

runner = CliRunner()


@pytest.fixture(autouse=True)
def commands() -> None:
    cli._register()


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(cli.app, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.root
@pytest.mark.netns
def test_fetch_diff_and_history(tmp_path: Path) -> None:
    with netns() as ns:
        add_veth(ns, "xsa-a", "xsa-b")
        ip_batch(ns, [f"route add 2001:db8:{i:x}::/64 via fe80::1 dev xsa-a" for i in range(30)]
                 + ["route add 2001:db9::/32 nexthop via fe80::1 dev xsa-a nexthop via fe80::2 dev xsa-b"])
        code, out, err = invoke("routes", "fetch", f"kernel://{ns}", "--json")
        assert code == 0, err
        doc = json.loads(out)
        prefixes = {r["prefix"] for r in doc["routes"]}
        assert {str(ipaddress.IPv6Network(f"2001:db8:{i:x}::/64")) for i in range(30)} <= prefixes
        ecmp = next(r for r in doc["routes"] if r["prefix"] == "2001:db9::/32")
        assert sorted((h["gateway"], h["ifname"]) for h in ecmp["nexthops"]) == [("fe80::1", "xsa-a"),
                                                                                 ("fe80::2", "xsa-b")]
        assert {"xsa-a", "xsa-b", "lo"} <= {i["name"] for i in doc["interfaces"]}
        assert "routes:" in err      # progress went to stderr

        code, out, _ = invoke("routes", "fetch", f"kernel://{ns}", "--limit", "3", "-q")
        assert code == 0 and "interfaces:" in out and "more (--limit 0 for all)" in out

        # stored snapshot: 10 of the routes, one with another next hop, plus one the router lost
        store = SyncStore(tmp_path)
        stored = [Route(ipaddress.IPv6Network(f"2001:db8:{i:x}::/64"), (NextHop("xsa-a", ip6("fe80::1")),),
                        "boot", 1024) for i in range(10)]
        stored[3] = Route(stored[3].prefix, (NextHop("xsa-b", ip6("fe80::9")),), "boot", 1024)
        stored.append(Route(ipaddress.IPv6Network("2001:dbf::/48"), (NextHop("xsa-a"),), "boot", 1024))
        store.save_snapshot(Snapshot(stored, [], "snmp://secret@[2001:db8::1]"))
        store.add_history(HistoryEntry(1.0, 2.0, "snmp://***@[2001:db8::1]", "poll", "failed",
                                       "no response from 2001:db8::1", 1.0))
        store.close()
        code, out, err = invoke("routes", "diff", f"kernel://{ns}", "--state-dir", str(tmp_path), "-q")
        assert code == 6, err      # EXIT_DIFFERS, as for verify --exit-code
        assert "secret" not in out and "***@[2001:db8::1]" in out
        assert "- 2001:dbf::/48" in out
        assert "+ 2001:db8:a::/64" in out
        assert "~ 2001:db8:3::/64" in out and "-> fe80::1 dev xsa-a" in out
        code, out, _ = invoke("routes", "diff", f"kernel://{ns}", "--state-dir", str(tmp_path), "--json",
                              "-q")
        doc = json.loads(out)
        assert doc["counts"]["removed"] == 1 and doc["counts"]["changed"] == 1
        assert doc["safety_valve"] == {"would_hold": False, "reason": None}

        code, out, _ = invoke("routes", "history", "--state-dir", str(tmp_path))
        assert code == 0 and "failed" in out and "no response from 2001:db8::1" in out


def test_errors_name_the_problem(tmp_path: Path) -> None:
    code, _, err = invoke("routes", "fetch", "bogus://router")
    assert code == 2 and "unknown source scheme 'bogus'" in err
    code, _, err = invoke("routes", "fetch", "router.example.net")
    assert code == 2 and "has no scheme" in err
    code, _, err = invoke("routes", "history", "--state-dir", str(tmp_path / "none"))
    assert code == 2 and "sync.sqlite3 missing" in err
    assert err.startswith("xcast6-engine: ")


def test_unreachable_router_is_exit_3_not_a_usage_error() -> None:
    """An SNMP agent that does not answer is 'unreachable' (3) in the one exit-code table, in
    text and in JSON; a usage error stays 2."""
    url = "snmp://public@[::1]:9?timeout=0.2&retries=0"      # discard port: nothing answers
    code, _, err = invoke("routes", "fetch", url, "-q")
    assert code == 3, err
    assert err.startswith("xcast6-engine: ") and "public" not in err
    code, out, err = invoke("routes", "fetch", url, "-q", "--json")
    assert code == 3 and json.loads(out)["error"]["kind"] == "unreachable"


def test_strip_secrets() -> None:
    assert registry.strip_secrets("snmp://public@[2001:db8::1]:161") == "snmp://***@[2001:db8::1]:161"
    assert registry.strip_secrets("netconf://admin:hunter2@r1:830?flavor=junos") == \
        "netconf://admin:***@r1:830?flavor=junos"
    assert registry.strip_secrets("snmpv3://ops@r1?auth=sha256&authkey=abc&privkey=def&priv=aes128") == \
        "snmpv3://ops@r1?auth=sha256&authkey=***&privkey=***&priv=aes128"


def test_build_service_validates_and_wires(tmp_path: Path) -> None:
    from engine.forwarding.fib import Fib
    from sync.service import build_service

    svc = build_service("snmp://public@[2001:db8::1]", Fib(), str(tmp_path), kernel_table=0)
    assert svc.applier.mirror is None and svc.store is not None
    assert "public" not in svc.state()["source"]
    with pytest.raises(ValueError, match="kernel table must be a dedicated table id"):
        build_service("snmp://public@[2001:db8::1]", Fib(), None, kernel_table=254)
    with pytest.raises(ValueError, match=r"kernel protocol must be 5\.\.255"):
        build_service("snmp://public@[2001:db8::1]", Fib(), None, kernel_protocol=2)
    with pytest.raises(ValueError, match="unknown source scheme 'ftp'"):
        build_service("ftp://router", Fib(), None)


def test_kernel_scheme_is_in_the_one_registry() -> None:
    from sync.kernelsource import KernelSource
    from sync.source import SourceError

    src = registry.open_source("kernel://localhost?table=100")
    assert isinstance(src, KernelSource) and src.netns is None and src.table == 100
    assert isinstance(registry.open_source("kernel://xsa-r1"), KernelSource)
    with pytest.raises(SourceError, match="unknown parameter 'tabel'"):
        registry.open_source("kernel://xsa-r1?tabel=1")
    with pytest.raises(ValueError, match="expected one of snmp://, snmpv3://, netconf://, kernel://"):
        registry.open_source("ftp://router")
