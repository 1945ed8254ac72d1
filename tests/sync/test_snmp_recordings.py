"""SnmpSource against snmpsim serving real router recordings (snmpsim-data) and crafted faults."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import pytest

from engine.model import NextHop
from lab.snmpd import SnmpsimAgent
from sync.mib import parse_oid
from sync.snmp import SnmpSource
from sync.source import SourceError

pytestmark = pytest.mark.slow

CIDR_IFINDEX = "1.3.6.1.2.1.4.24.7.1.7.2.16"
CIDR_TYPE = "1.3.6.1.2.1.4.24.7.1.8.2.16"


def v6(text: str) -> str:
    return ".".join(str(b) for b in ipaddress.IPv6Address(text).packed)


def cidr_index(dest: str, plen: int, nexthop: str | None, policy: str = "2.0.0") -> str:
    nh = "0.0" if nexthop is None else f"2.16.{v6(nexthop)}"
    return f"{v6(dest)}.{plen}.{policy}.{nh}"


def recording(lines: list[tuple[str, int | str, object]]) -> str:
    """snmprec text, sorted by OID as snmpsim expects."""
    ordered = sorted(lines, key=lambda line: parse_oid(line[0]))
    return "".join(f"{oid}|{kind}|{value}\n" for oid, kind, value in ordered)


IF_ROWS = [
    ("1.3.6.1.2.1.1.3.0", 67, 1234),
    ("1.3.6.1.2.1.31.1.1.1.1.501", 4, "ge-0/0/1.0"),
    ("1.3.6.1.2.1.31.1.1.1.1.502", 4, "ge-0/0/2.0"),
    ("1.3.6.1.2.1.2.2.1.2.501", 4, "ge-0/0/1.0"),
    ("1.3.6.1.2.1.2.2.1.2.502", 4, "ge-0/0/2.0"),
    ("1.3.6.1.2.1.2.2.1.8.501", 2, 1),
    ("1.3.6.1.2.1.2.2.1.8.502", 2, 2),
]


def good_rows() -> list[tuple[str, int | str, object]]:
    rows: list[tuple[str, int | str, object]] = list(IF_ROWS)
    for dest, plen, nh, ifindex, rtype in [
        ("2001:db8:100::", 48, "fe80::1", 501, 4),
        ("2001:db8:100::", 48, "fe80::2", 502, 4),  # ECMP: second row, same prefix
        ("2001:db8:1::", 64, None, 501, 3),  # connected, no next hop (Junos style)
        ("2001:db8:1::1", 128, None, 0, 2),  # Junos: own address as reject, ifIndex 0
        ("2001:db8:dead::", 48, None, 0, 5),  # blackhole
    ]:
        idx = cidr_index(dest, plen, nh)
        rows += [(f"{CIDR_IFINDEX}.{idx}", 2, ifindex), (f"{CIDR_TYPE}.{idx}", 2, rtype)]
    return rows


@pytest.fixture(scope="module")
def agent() -> Iterator[SnmpsimAgent]:
    sim = SnmpsimAgent()
    sim.add_real_recording("mx960-12", "juniper-mx960-12-3r6-6")
    sim.add_real_recording("mx960-13", "juniper-mx960-13-3r9-13")
    sim.add_recording("good", recording(good_rows()))
    bad_value = good_rows()
    bad_value[7] = (bad_value[7][0], 4, "not-a-number")  # first route row's ifIndex as a string
    sim.add_recording("garbagevalue", recording(bad_value))
    sim.add_recording("garbageindex", recording([
        *IF_ROWS, (f"{CIDR_IFINDEX}.{v6('2001:db8::')}.200.2.0.0.0.0", 2, 501)]))
    sim.add_recording("noifindex", recording([
        *IF_ROWS, (f"{CIDR_IFINDEX}.{cidr_index('2001:db8:7::', 48, 'fe80::9')}", 2, 777)]))
    # An agent with only IPV6-MIB: index dest(16).pfxlen.routeIndex, next hop in a column.
    v6only = list(IF_ROWS)
    for n, (dest, plen, nh, ifindex, rtype) in enumerate([
        ("2001:db8:200::", 48, "2001:db8:1::9", 501, 4),
        ("2001:db8:1::", 64, "::", 501, 3),
        ("2001:db8:1::1", 128, "::", 501, 3),
    ]):
        idx = f"{v6(dest)}.{plen}.{n + 1}"
        v6only += [
            (f"1.3.6.1.2.1.55.1.11.1.4.{idx}", 2, ifindex),
            (f"1.3.6.1.2.1.55.1.11.1.5.{idx}", "4x", ipaddress.IPv6Address(nh).packed.hex()),
            (f"1.3.6.1.2.1.55.1.11.1.6.{idx}", 2, rtype),
            (f"1.3.6.1.2.1.55.1.11.1.7.{idx}", 2, 13 if rtype == 4 else 2),
            (f"1.3.6.1.2.1.55.1.11.1.11.{idx}", 66, 10),
        ]
    sim.add_recording("v6only", recording(v6only))
    try:
        sim.start()
        yield sim
    finally:
        sim.teardown()


def fetch(agent: SnmpsimAgent, community: str, query: str = "") -> tuple[SnmpSource, object]:
    source = SnmpSource.from_url(agent.url(community, query))
    return source, asyncio.run(source.fetch())


@pytest.mark.parametrize(("columns", "dropped"), [("index", {"no_interface": 2}), ("type", {"discard": 2})])
def test_crafted_inetcidr_table(agent: SnmpsimAgent, columns: str, dropped: dict[str, int]) -> None:
    source, snapshot = fetch(agent, "good", f"columns={columns}")
    routes = {str(r.prefix): r for r in snapshot.routes}
    assert set(routes) == {"2001:db8:100::/48", "2001:db8:1::/64"}
    assert routes["2001:db8:100::/48"].nexthops == (
        NextHop("ge-0/0/1.0", ipaddress.IPv6Address("fe80::1").packed),
        NextHop("ge-0/0/2.0", ipaddress.IPv6Address("fe80::2").packed),
    )
    assert routes["2001:db8:1::/64"].nexthops == (NextHop("ge-0/0/1.0", None),)
    assert source.last_stats.dropped == dropped  # without the type column, ifIndex 0 tells
    assert [(i.name, i.oper_up) for i in snapshot.interfaces] == [("ge-0/0/1.0", True), ("ge-0/0/2.0", False)]


def test_juniper_mx960_unknown_ifindex_is_an_error_by_default(agent: SnmpsimAgent) -> None:
    # The recording's IF-MIB lacks the logical units the routes point at (613, 675, ...).
    pattern = r"ifIndex not in IF-MIB.*675 \(row 1\.3\.6\.1\.2\.1\.4\.24\.7\.1\.7\.2\.16"
    with pytest.raises(SourceError, match=pattern):
        fetch(agent, "mx960-12")


def test_juniper_mx960_inetcidr_quirks(agent: SnmpsimAgent) -> None:
    source, snapshot = fetch(agent, "mx960-12", "unknown_ifindex=placeholder&columns=full")
    stats = source.last_stats
    assert stats.table == "inetCidrRouteTable"
    # 66 IPv6 rows in the recording = 42 kept + 8 reject (own /128s, discards) + 9 without an
    # interface + 6 link-local + 1 multicast.
    assert stats.rows == 66 and len(snapshot.routes) == 42
    assert stats.dropped == {"discard": 8, "no_interface": 9, "link_local": 6, "multicast": 1}
    routes = {str(r.prefix): r for r in snapshot.routes}
    default = routes["::/0"]  # policy "0.0" (length 2) in the index, link-local next hop
    gateway = ipaddress.IPv6Address("fe80::3a97:d6ff:fe14:e66").packed
    assert default.nexthops == (NextHop("ifindex-675", gateway),)
    assert default.protocol == "ospf" and default.metric == 320
    assert routes["2001:1::/64"].nexthops[0].gateway_text() == "fe80::aad0:e5ff:fef5:a8f7"
    assert 675 in stats.placeholder_ifindexes and 613 in stats.placeholder_ifindexes
    assert len(snapshot.interfaces) == 74
    assert any(i.name == "lo0" for i in snapshot.interfaces)


def test_juniper_mx960_ipv6routetable_quirks(agent: SnmpsimAgent) -> None:
    source, snapshot = fetch(agent, "mx960-12", "unknown_ifindex=placeholder&table=ipv6")
    stats = source.last_stats
    assert stats.table == "ipv6RouteTable"
    # ipv6RouteNextHop is missing for every remote row (33) and 8 zero octets for the others.
    assert stats.dropped["no_nexthop"] == 33
    assert all(nh.gateway is None for r in snapshot.routes for nh in r.nexthops)
    assert all(r.metric == 0 for r in snapshot.routes)  # 4294967295 = "no metric"
    assert not any(r.prefix.prefixlen == 128 for r in snapshot.routes)


def test_second_juniper_recording(agent: SnmpsimAgent) -> None:
    source, snapshot = fetch(agent, "mx960-13", "unknown_ifindex=placeholder&columns=full")
    stats = source.last_stats
    assert stats.rows == 61  # grep -c '^1.3.6.1.2.1.4.24.7.1.7.2.16' on the recording
    assert stats.rows == len(snapshot.routes) + sum(stats.dropped.values())
    assert len(snapshot.routes) == 37
    assert {630, 637, 675, 676} <= set(stats.placeholder_ifindexes)


def test_fallback_to_ipv6routetable(agent: SnmpsimAgent) -> None:
    source, snapshot = fetch(agent, "v6only")
    assert source.last_stats.table == "ipv6RouteTable"
    routes = {str(r.prefix): r for r in snapshot.routes}
    assert set(routes) == {"2001:db8:200::/48", "2001:db8:1::/64"}
    gateway = ipaddress.IPv6Address("2001:db8:1::9").packed
    assert routes["2001:db8:200::/48"].nexthops == (NextHop("ge-0/0/1.0", gateway),)
    assert routes["2001:db8:200::/48"].protocol == "ospf" and routes["2001:db8:200::/48"].metric == 10


def test_garbage_value_in_a_row(agent: SnmpsimAgent) -> None:
    with pytest.raises(SourceError, match=r"garbage value in row 1\.3\.6\.1\.2\.1\.4\.24\.7\.1\.7\.2\.16\..*"
                       r"inetCidrRouteIfIndex should be an integer, got b'not-a-number'"):
        fetch(agent, "garbagevalue")


def test_garbage_index(agent: SnmpsimAgent) -> None:
    with pytest.raises(SourceError, match=r"garbage index in row .*prefix length 200 > 128"):
        fetch(agent, "garbageindex")


def test_ifindex_missing_from_if_mib(agent: SnmpsimAgent) -> None:
    with pytest.raises(SourceError, match=r"ifIndex not in IF-MIB ifName/ifDescr: 777 \(row "):
        fetch(agent, "noifindex")


@pytest.mark.parametrize("community", ["mx960-12", "mx960-13"])
def test_juniper_one_column_walk_gives_the_same_forwarding_table(agent: SnmpsimAgent, community: str) -> None:
    # Junos files rejects/discards with ifIndex 0, so the default one-column walk (no type
    # column) drops the same rows; only protocol/metric are unknown.
    _, full = fetch(agent, community, "unknown_ifindex=placeholder&columns=full")
    _, index = fetch(agent, community, "unknown_ifindex=placeholder")
    assert [(r.prefix, r.nexthops) for r in index.routes] == [(r.prefix, r.nexthops) for r in full.routes]
    assert {r.protocol for r in index.routes} == {"unknown"}
