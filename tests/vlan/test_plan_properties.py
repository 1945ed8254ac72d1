"""Plan invariants over random interface lists and histories (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import Interface
from vlan.config import LinksConfig, PlanError
from vlan.plan import Allocation, build_plan

CFG = LinksConfig.from_dict(
    {"trunk": "eth1", "vlan_range": [10, 40], "pool": "2001:db8:ff::/59"}  # 31 VLANs, 32 subnets
)
names = st.lists(st.sampled_from([f"ge-0/0/{i}.0" for i in range(40)]), unique=True, max_size=40)


def as_ifs(ns: list[str]) -> list[Interface]:
    return [Interface(n, i + 1) for i, n in enumerate(ns)]


@settings(max_examples=150, deadline=None)
@given(first=names, second=names)
def test_unique_vlans_disjoint_subnets_and_stable_survivors(first: list[str], second: list[str]) -> None:
    try:
        plan1 = build_plan(CFG, as_ifs(first))
    except PlanError as exc:
        assert len(first) > 31 and exc.field == "links.vlan_range"
        return
    vlans = [lk.vlan_id for lk in plan1.links]
    assert len(set(vlans)) == len(vlans) and all(v is not None and 10 <= v <= 40 for v in vlans)
    nets = [lk.engine_addr.network for lk in plan1.links]
    assert len(set(nets)) == len(nets)
    assert all(lk.router_addr in lk.engine_addr.network for lk in plan1.links)
    previous = {lk.router_ifname: Allocation(lk.vlan_id, lk.engine_addr.network) for lk in plan1.links}
    try:
        plan2 = build_plan(CFG, as_ifs(second), previous)
    except PlanError as exc:
        assert len(second) > 31 and exc.field == "links.vlan_range"
        return
    for lk in plan2.links:
        if lk.router_ifname in previous:  # survivors keep VLAN and subnet whatever else changed
            assert previous[lk.router_ifname] == Allocation(lk.vlan_id, lk.engine_addr.network)
    vlans2 = [lk.vlan_id for lk in plan2.links]
    assert len(set(vlans2)) == len(vlans2)
    assert len({lk.engine_addr.network for lk in plan2.links}) == len(plan2.links)
