"""Pure parts of the lab: names, rules, route filtering/diff, the receiver's XCAST6 end-host parse."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from typer.testing import CliRunner

from engine import cli
from engine.counters import CounterFile
from engine.lab.engine_proc import route_diff, usable_routes
from engine.lab.receiver import xcast_deliveries
from engine.lab.topology import Topology
from engine.model import NextHop, Route
from tests.lab.scapy_xcast import xcast_packet
from vlan.linkmap import EngineLink, LinkMap


def test_names_follow_the_prefix() -> None:
    t = Topology(prefix="xq-")
    assert all(ns.startswith("xq-") for ns in t.all_namespaces())
    assert len(set(t.all_namespaces())) == 10
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


def _links() -> LinkMap:
    z = bytes(16)
    return LinkMap([EngineLink("ra-h1", "to-ra-h1", 5, None, z, z, b"\2" * 6, b"\4" * 6)])


def _r(prefix: str, *ifs: str) -> Route:
    return Route(ipaddress.IPv6Network(prefix), tuple(NextHop(i) for i in ifs))


def test_routes_without_engine_link_are_ignored_and_ecmp_members_pruned() -> None:
    routes = [_r("2001:db8:1::/64", "ra-h1"), _r("::/0", "eng0"), _r("2001:db8:2::/64", "ra-h1", "eng1")]
    kept, ignored = usable_routes(routes, _links())
    assert ignored == 1
    assert [str(r.prefix) for r in kept] == ["2001:db8:1::/64", "2001:db8:2::/64"]
    assert kept[1].nexthops == (NextHop("ra-h1"),)


def test_route_diff() -> None:
    old = {r.prefix: r for r in [_r("2001:db8:1::/64", "a"), _r("2001:db8:2::/64", "a")]}
    new = [_r("2001:db8:1::/64", "b"), _r("2001:db8:3::/64", "a")]
    adds, removes = route_diff(old, new)
    assert sorted(str(r.prefix) for r in adds) == ["2001:db8:1::/64", "2001:db8:3::/64"]
    assert removes == [ipaddress.IPv6Network("2001:db8:2::/64")]


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
    res = CliRunner().invoke(cli.app, ["counters", "--file", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no counter file" in res.output


def test_lab_prefix_is_validated() -> None:
    cli._register()
    res = CliRunner().invoke(cli.app, ["lab", "status", "--prefix", "bad prefix!"])
    assert res.exit_code != 0 and "prefix" in res.output
