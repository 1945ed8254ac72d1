"""Interface plan: mapping/auto allocation, stability across runs, errors that name the field."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Interface, IPv6Network

import pytest

from engine.model import Interface
from vlan.config import LinksConfig, PlanError
from vlan.plan import Allocation, build_plan, owner_router_if

AUTO = {"mode": "vlan", "trunk": "eth1", "vlan_range": [100, 103], "pool": "2001:db8:ff::/62"}


def ifs(*names: str, down: tuple[str, ...] = ()) -> list[Interface]:
    return [Interface(name=n, index=i + 1, oper_up=n not in down) for i, n in enumerate(names)]


def test_explicit_mapping_gives_exact_values() -> None:
    cfg = LinksConfig.from_dict(
        {
            "trunk": "eth1",
            "map": [
                {
                    "router_if": "ge-0/0/1.0",
                    "vlan": 101,
                    "subnet": "2001:db8:101::/64",
                    "engine_addr": "2001:db8:101::a",
                    "router_addr": "2001:db8:101::b",
                }
            ],
        }
    )
    plan = build_plan(cfg, ifs("ge-0/0/1.0", "lo0.0"))
    (link,) = plan.links
    assert link.router_ifname == "ge-0/0/1.0"
    assert link.engine_ifname == "xc-v101"
    assert link.vlan_id == 101
    assert link.engine_addr == IPv6Interface("2001:db8:101::a/64")
    assert link.router_addr == IPv6Address("2001:db8:101::b")
    assert link.source == "links.map[0]"
    assert plan.unmapped == {"lo0.0": "no mapping entry matches"}
    assert owner_router_if(link.alias) == "ge-0/0/1.0"


def test_auto_allocation_lowest_free_in_ifindex_order() -> None:
    cfg = LinksConfig.from_dict(AUTO)
    plan = build_plan(cfg, ifs("ge-0/0/0.0", "ge-0/0/1.0", down=("ge-0/0/1.0",)))
    got = {
        lk.router_ifname: (lk.vlan_id, str(lk.engine_addr), str(lk.router_addr), lk.oper_up)
        for lk in plan.links
    }
    assert got == {
        "ge-0/0/0.0": (100, "2001:db8:ff::1/64", "2001:db8:ff::2", True),
        "ge-0/0/1.0": (101, "2001:db8:ff:1::1/64", "2001:db8:ff:1::2", False),
    }


def test_auto_allocation_is_stable_when_interfaces_come_and_go() -> None:
    cfg = LinksConfig.from_dict(AUTO)
    first = build_plan(cfg, ifs("a", "b", "c"))
    previous = {lk.router_ifname: Allocation(lk.vlan_id, lk.engine_addr.network) for lk in first.links}
    # "a" disappears and a new "d" shows up with a lower ifIndex than everyone: b and c keep theirs.
    second = build_plan(cfg, [Interface("d", 0), Interface("b", 2), Interface("c", 3)], previous)
    got = {lk.router_ifname: (lk.vlan_id, lk.engine_addr.network) for lk in second.links}
    assert got["b"] == (101, IPv6Network("2001:db8:ff:1::/64"))
    assert got["c"] == (102, IPv6Network("2001:db8:ff:2::/64"))
    assert got["d"] == (100, IPv6Network("2001:db8:ff::/64"))  # reuses the freed VLAN and subnet


def test_explicit_value_wins_over_a_previous_auto_allocation() -> None:
    cfg = LinksConfig.from_dict(
        {
            **AUTO,
            "map": [
                {"router_if": "b", "vlan": 100, "subnet": "2001:db8:ff::/64"},
                {"router_if": "*"},
            ],
        }
    )
    previous = {"a": Allocation(100, IPv6Network("2001:db8:ff::/64"))}
    plan = build_plan(cfg, ifs("a", "b"), previous)
    got = {lk.router_ifname: (lk.vlan_id, lk.engine_addr.network) for lk in plan.links}
    assert got == {"b": (100, IPv6Network("2001:db8:ff::/64")), "a": (101, IPv6Network("2001:db8:ff:1::/64"))}


def test_exclude_and_pattern() -> None:
    cfg = LinksConfig.from_dict({**AUTO, "exclude": ["fxp*", "lo*"], "map": [{"router_if": "ge-*"}]})
    plan = build_plan(cfg, ifs("fxp0", "lo0.0", "ge-1/0/0", "xe-0/0/0"))
    assert [lk.router_ifname for lk in plan.links] == ["ge-1/0/0"]
    assert plan.unmapped == {"fxp0": "excluded", "lo0.0": "excluded", "xe-0/0/0": "no mapping entry matches"}


def test_vlan_range_exhausted() -> None:
    cfg = LinksConfig.from_dict({**AUTO, "vlan_range": [100, 101]})
    with pytest.raises(PlanError) as err:
        build_plan(cfg, ifs("a", "b", "c"))
    assert err.value.field == "links.vlan_range"
    assert "exhausted" in str(err.value) and "for c" in str(err.value)


def test_pool_exhausted() -> None:
    cfg = LinksConfig.from_dict({**AUTO, "vlan_range": [100, 199], "pool": "2001:db8:ff::/63"})
    with pytest.raises(PlanError) as err:
        build_plan(cfg, ifs("a", "b", "c"))
    assert err.value.field == "links.pool"
    assert "no free /64 in 2001:db8:ff::/63 for c" in str(err.value)


def test_direct_mode_maps_existing_links() -> None:
    cfg = LinksConfig.from_dict(
        {
            "mode": "direct",
            "pool": "2001:db8:aa::/56",
            "map": [
                {"router_if": "ge-0/0/1", "link": "veth-r1"},
                {
                    "router_if": "ge-0/0/2",
                    "link": "veth-r2",
                    "subnet": "2001:db8:bb::/64",
                    "engine_addr": "2001:db8:bb::10",
                },
            ],
        }
    )
    plan = build_plan(cfg, ifs("ge-0/0/1", "ge-0/0/2"))
    got = {
        lk.router_ifname: (lk.engine_ifname, lk.vlan_id, str(lk.engine_addr), str(lk.router_addr))
        for lk in plan.links
    }
    assert got == {
        "ge-0/0/1": ("veth-r1", None, "2001:db8:aa::1/64", "2001:db8:aa::2"),
        "ge-0/0/2": ("veth-r2", None, "2001:db8:bb::10/64", "2001:db8:bb::2"),
    }


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"trunk": "eth1", "vlan_range": [0, 10]}, "links.vlan_range", "1 <= first <= last <= 4094"),
        ({"trunk": "eth1", "map": [{"router_if": "a", "vlan": 4095}]}, "links.map[0].vlan", "4095"),
        (
            {"trunk": "eth1", "map": [{"router_if": "a", "vlan": 7}, {"router_if": "b", "vlan": 7}]},
            "links.map[1].vlan",
            "VLAN 7 already used by links.map[0]",
        ),
        (
            {"trunk": "eth1", "map": [{"router_if": "a", "vlan": 7, "subnet": "10.0.0.0/24"}]},
            "links.map[0].subnet",
            "not an IPv6 subnet",
        ),
        (
            {"trunk": "eth1", "map": [{"router_if": "a", "vlan": 7, "subnet": "2001:db8::1/64"}]},
            "links.map[0].subnet",
            "host bits set",
        ),
        (
            {
                "trunk": "eth1",
                "map": [
                    {"router_if": "a", "vlan": 7, "subnet": "2001:db8::/64", "engine_addr": "2001:db9::1"}
                ],
            },
            "links.map[0].engine_addr",
            "not inside subnet 2001:db8::/64",
        ),
        (
            {
                "trunk": "eth1",
                "map": [
                    {
                        "router_if": "a",
                        "vlan": 7,
                        "subnet": "2001:db8::/64",
                        "engine_addr": "2001:db8::1",
                        "router_addr": "2001:db8::1",
                    }
                ],
            },
            "links.map[0].router_addr",
            "same as engine_addr",
        ),
        ({"vlan_range": [1, 2]}, "links.trunk", "required in vlan mode"),
        ({"trunk": "a-name-that-is-too-long", "vlan_range": [1, 2]}, "links.trunk", "Linux interface name"),
        ({"mode": "bridge"}, "links.mode", "'bridge' is not allowed: must be one of 'vlan', 'direct'"),
        (
            {"trunk": "eth1", "vlan_range": [1, 2], "pool": "2001:db8::/70"},
            "links.pool",
            "smaller than one /64",
        ),
        ({"trunk": "eth1", "vlan_range": [1, 2], "vlans": 3}, "links.vlans", "unknown key"),
        ({"mode": "direct", "map": [{"router_if": "a"}]}, "links.map[0].link", "required in direct"),
        ({"trunk": "eth1"}, "links.map", "give a mapping"),
    ],
)
def test_config_errors_name_the_field(raw: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(PlanError) as err:
        LinksConfig.from_dict(raw)
    assert err.value.field == field
    assert words in str(err.value)


def test_pattern_with_fixed_vlan_matching_several_interfaces_is_refused() -> None:
    cfg = LinksConfig.from_dict(
        {"trunk": "eth1", "pool": "2001:db8::/48", "map": [{"router_if": "ge-*", "vlan": 5}]}
    )
    with pytest.raises(PlanError) as err:
        build_plan(cfg, ifs("ge-1", "ge-2"))
    assert err.value.field == "links.map[0].router_if"
    assert "matches 2 interfaces" in str(err.value)


def test_overlapping_explicit_subnets_are_refused() -> None:
    cfg = LinksConfig.from_dict(
        {
            "trunk": "eth1",
            "map": [
                {"router_if": "a", "vlan": 5, "subnet": "2001:db8::/64"},
                {"router_if": "b", "vlan": 6, "subnet": "2001:db8::/56"},
            ],
        }
    )
    with pytest.raises(PlanError) as err:
        build_plan(cfg, ifs("a", "b"))
    assert err.value.field == "links.map[1].subnet"
    assert "overlaps 2001:db8::/64 of a" in str(err.value)


def test_duplicate_router_interface_is_refused() -> None:
    cfg = LinksConfig.from_dict(AUTO)
    with pytest.raises(PlanError, match="reported twice"):
        build_plan(cfg, [Interface("a", 1), Interface("a", 2)])


def test_the_same_router_interface_mapped_twice_is_refused() -> None:
    with pytest.raises(PlanError) as err:
        LinksConfig.from_dict(
            {"trunk": "eth1", "map": [{"router_if": "a", "vlan": 1}, {"router_if": "a", "vlan": 2}]}
        )
    assert err.value.field == "links.map[1].router_if"
