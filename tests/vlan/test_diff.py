"""Pure reconcile diff for vlan mode: ownership, recreate, MTU following the trunk, deletions."""

from __future__ import annotations

from ipaddress import IPv6Interface

import pytest

from engine.model import Interface
from vlan.config import LinksConfig
from vlan.kernel import KernelLink, KernelView
from vlan.plan import build_plan
from vlan.reconcile import ReconcileError, diff, is_owned, previous_allocations

CFG = LinksConfig.from_dict({"trunk": "eth1", "vlan_range": [100, 199], "pool": "2001:db8:ff::/56"})
TRUNK = KernelLink(2, "eth1", "veth", None, None, None, 9000, True, "UP", b"\x02" * 6, frozenset())


def vlan_link(
    index: int,
    name: str,
    vid: int,
    alias: str | None,
    addrs: tuple[str, ...] = (),
    mtu: int = 9000,
    up: bool = True,
    parent: int = 2,
) -> KernelLink:
    return KernelLink(
        index,
        name,
        "vlan",
        vid,
        parent,
        alias,
        mtu,
        up,
        "UP" if up else "DOWN",
        b"\x02\x00\x00\x00\x00" + bytes([index]),
        frozenset(IPv6Interface(a) for a in addrs),
    )


def view(*links: KernelLink) -> KernelView:
    return KernelView({lk.name: lk for lk in (TRUNK, *links)})


def test_fresh_trunk_creates_one_subinterface_per_router_interface() -> None:
    plan = build_plan(CFG, [Interface("ge-0/0/0.0", 1), Interface("ge-0/0/1.0", 2, oper_up=False)])
    lines = [a.describe() for a in diff(CFG, plan, view())]
    assert lines == [
        "+ xc-v100         vlan 100 on eth1 for ge-0/0/0.0 mtu 9000 up",
        "+ xc-v100         address 2001:db8:ff::1/64",
        "+ xc-v101         vlan 101 on eth1 for ge-0/0/1.0 mtu 9000 down",
        "+ xc-v101         address 2001:db8:ff:1::1/64",
    ]


def test_matching_kernel_gives_no_actions_and_allocations_are_read_back() -> None:
    kernel = view(
        vlan_link(10, "xc-v107", 107, "xcast6-engine:ge-0/0/0.0", ("2001:db8:ff:9::1/64",)),
    )
    prev = previous_allocations(CFG, kernel)
    plan = build_plan(CFG, [Interface("ge-0/0/0.0", 1)], prev)
    assert plan.links[0].vlan_id == 107
    assert str(plan.links[0].engine_addr) == "2001:db8:ff:9::1/64"
    assert diff(CFG, plan, kernel) == []


def test_changes_follow_trunk_mtu_oper_status_and_address() -> None:
    kernel = view(
        vlan_link(
            10, "xc-v100", 100, "xcast6-engine:a", ("2001:db8:ff::1/64", "2001:db8:dead::1/64"), mtu=1500
        ),
    )
    plan = build_plan(CFG, [Interface("a", 1, oper_up=False)], previous_allocations(CFG, kernel))
    lines = [a.describe() for a in diff(CFG, plan, kernel)]
    assert lines == [
        "~ xc-v100         mtu 1500 -> 9000 (follows eth1)",
        "~ xc-v100         down (router a is oper down)",
        "- xc-v100         address 2001:db8:dead::1/64",
    ]


def test_owned_links_no_longer_wanted_are_deleted_foreign_ones_are_not() -> None:
    kernel = view(
        vlan_link(10, "xc-v100", 100, "xcast6-engine:gone-0"),
        vlan_link(11, "xc-v150", 150, None),  # our prefix, no marker: not ours
        vlan_link(12, "eth1.300", 300, "uplink"),  # operator's VLAN on the trunk
        vlan_link(13, "xc-v151", 151, "xcast6-engine:x"),  # marker but... also ours
    )
    assert [n for n, lk in kernel.links.items() if is_owned(lk, CFG)] == ["xc-v100", "xc-v151"]
    plan = build_plan(CFG, [], previous_allocations(CFG, kernel))
    lines = [a.describe() for a in diff(CFG, plan, kernel)]
    assert lines == [
        "- xc-v100         vlan 100 (router interface gone-0 not wanted)",
        "- xc-v151         vlan 151 (router interface x not wanted)",
    ]


def test_owned_link_with_wrong_vlan_is_recreated() -> None:
    cfg = LinksConfig.from_dict(
        {"trunk": "eth1", "map": [{"router_if": "a", "vlan": 100, "subnet": "2001:db8:1::/64"}]}
    )
    kernel = view(vlan_link(10, "xc-v100", 999, "xcast6-engine:a", ("2001:db8:1::1/64",)))
    ops = [(a.op, a.ifname) for a in diff(cfg, build_plan(cfg, [Interface("a", 1)]), kernel)]
    assert ops == [("delete", "xc-v100"), ("create", "xc-v100"), ("addr-add", "xc-v100")]


def test_name_taken_by_a_foreign_link_is_an_error_naming_it() -> None:
    kernel = view(vlan_link(10, "xc-v100", 100, None))
    plan = build_plan(CFG, [Interface("a", 1)], previous_allocations(CFG, kernel))
    with pytest.raises(ReconcileError, match=r"xc-v100 exists but is not owned by xcast6-engine"):
        diff(CFG, plan, kernel)


def test_vlan_used_by_a_foreign_subinterface_is_an_error_naming_it() -> None:
    kernel = view(vlan_link(12, "eth1.100", 100, "uplink"))
    plan = build_plan(CFG, [Interface("a", 1)])
    with pytest.raises(ReconcileError, match=r"VLAN 100 on eth1 is already used by eth1.100"):
        diff(CFG, plan, kernel)


def test_missing_trunk_is_an_error_naming_the_field() -> None:
    plan = build_plan(CFG, [Interface("a", 1)])
    with pytest.raises(ReconcileError, match=r"links.trunk: eth1 does not exist"):
        diff(CFG, plan, KernelView({}))


def test_auto_allocation_skips_vlans_of_foreign_subinterfaces() -> None:
    from vlan.reconcile import foreign_trunk_vlans

    kernel = view(vlan_link(12, "eth1.100", 100, "uplink"), vlan_link(13, "other", 101, None, parent=99))
    assert foreign_trunk_vlans(CFG, kernel) == {100}
    plan = build_plan(
        CFG, [Interface("a", 1)], previous_allocations(CFG, kernel), foreign_trunk_vlans(CFG, kernel)
    )
    assert plan.links[0].vlan_id == 101
    assert [a.op for a in diff(CFG, plan, kernel)] == ["create", "addr-add"]


def test_vlan_handed_to_another_router_interface_gets_a_fresh_link() -> None:
    kernel = view(vlan_link(10, "xc-v100", 100, "xcast6-engine:a", ("2001:db8:ff::1/64",)))
    plan = build_plan(CFG, [Interface("d", 4)], previous_allocations(CFG, kernel))
    lines = [a.describe() for a in diff(CFG, plan, kernel)]
    assert lines == [
        "- xc-v100         vlan 100 (router interface a not wanted)",
        "+ xc-v100         vlan 100 on eth1 for d mtu 9000 up",
        "+ xc-v100         address 2001:db8:ff::1/64",
    ]
