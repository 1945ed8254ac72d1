"""``direct`` mode reconcile on real veths in namespaces on this host (no 802.1Q needed)."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv6Address

import pytest

from engine.model import Interface
from lab import netns
from tests.vlan.nsutil import addrs, sh
from vlan.config import LinksConfig
from vlan.reconcile import ReconcileError, reconcile

pytestmark = [pytest.mark.root, pytest.mark.netns]

CONFIG = {
    "mode": "direct",
    "pool": "2001:db8:aa::/56",
    "map": [
        {"router_if": "ge-0/0/1.0", "link": "xe1"},
        {"router_if": "ge-0/0/2.0", "link": "xe2"},
    ],
}


@pytest.fixture
def lab() -> Iterator[tuple[str, str]]:
    """Engine and router namespaces joined by two veth pairs (xe1<->xr1, xe2<->xr2)."""
    with netns.temporary("xvl-eng", "xvl-rtr") as (eng, rtr):
        for i in (1, 2):
            sh("link", "add", f"xe{i}", "type", "veth", "peer", "name", f"xr{i}", "netns", rtr, ns=eng)
            sh("link", "set", f"xr{i}", "up", ns=rtr)
            sh("addr", "add", f"2001:db8:aa:{i - 1}::2/64", "dev", f"xr{i}", "nodad", ns=rtr)
        yield eng, rtr


def router_ifs(down: tuple[str, ...] = ()) -> list[Interface]:
    return [
        Interface("ge-0/0/1.0", 1, "ge-0/0/1.0" not in down),
        Interface("ge-0/0/2.0", 2, "ge-0/0/2.0" not in down),
    ]


def test_direct_reconcile_addresses_links_and_learns_router_macs(lab: tuple[str, str]) -> None:
    eng, rtr = lab
    cfg = LinksConfig.from_dict(CONFIG)
    result = reconcile(cfg, router_ifs(), netns=eng, neighbor_wait_s=5.0)
    assert result.applied
    ops = sorted((a.op, a.ifname) for a in result.actions)
    assert ops == [("addr-add", "xe1"), ("addr-add", "xe2"), ("set", "xe1"), ("set", "xe2")]
    assert addrs(eng, "xe1") == {"2001:db8:aa::1/64"}
    assert addrs(eng, "xe2") == {"2001:db8:aa:1::1/64"}
    for i, router_if in ((1, "ge-0/0/1.0"), (2, "ge-0/0/2.0")):
        link = result.linkmap.for_router_if(router_if)
        assert link is not None
        kernel = netns.link_info(eng, f"xe{i}")
        peer = netns.link_info(rtr, f"xr{i}")
        assert link.engine_ifname == f"xe{i}" and link.vlan_id is None
        assert link.engine_ifindex == kernel["ifindex"]
        assert link.engine_mac == bytes.fromhex(str(kernel["address"]).replace(":", ""))
        assert link.engine_addr == IPv6Address(f"2001:db8:aa:{i - 1}::1").packed
        assert link.router_addr == IPv6Address(f"2001:db8:aa:{i - 1}::2").packed
        # Learned through a real Neighbor Solicitation/Advertisement between the namespaces.
        assert link.router_mac == bytes.fromhex(str(peer["address"]).replace(":", ""))
        assert link.oper_up
    assert result.linkmap.source_for("ge-0/0/2.0") == IPv6Address("2001:db8:aa:1::1").packed


def test_direct_reconcile_is_idempotent_and_follows_oper_status(lab: tuple[str, str]) -> None:
    eng, _ = lab
    cfg = LinksConfig.from_dict(CONFIG)
    reconcile(cfg, router_ifs(), netns=eng)
    again = reconcile(cfg, router_ifs(), netns=eng)
    assert again.actions == []
    down = reconcile(cfg, router_ifs(down=("ge-0/0/2.0",)), netns=eng)
    assert [(a.op, a.ifname, a.up) for a in down.actions] == [("set", "xe2", False)]
    assert "DOWN" in str(netns.link_info(eng, "xe2")["operstate"])
    lk = down.linkmap.for_router_if("ge-0/0/2.0")
    assert lk is not None and not lk.oper_up
    # Addresses kept across a restart: the plan reads them back from the kernel (stable allocation).
    assert addrs(eng, "xe2") == {"2001:db8:aa:1::1/64"}


def test_direct_reconcile_removes_only_its_own_stale_addresses(lab: tuple[str, str]) -> None:
    eng, _ = lab
    sh("addr", "add", "2001:db8:aa:7::1/64", "dev", "xe1", "nodad", ns=eng)  # inside the pool: ours
    sh("addr", "add", "2001:db8:cafe::1/64", "dev", "xe1", "nodad", ns=eng)  # operator's: untouched
    cfg = LinksConfig.from_dict(
        {
            **CONFIG,
            "map": [
                {"router_if": "ge-0/0/1.0", "link": "xe1", "subnet": "2001:db8:aa:3::/64"},
                {"router_if": "ge-0/0/2.0", "link": "xe2"},
            ],
        }
    )
    reconcile(cfg, router_ifs(), netns=eng)
    assert addrs(eng, "xe1") == {"2001:db8:aa:3::1/64", "2001:db8:cafe::1/64"}


def test_dry_run_changes_nothing(lab: tuple[str, str]) -> None:
    eng, _ = lab
    cfg = LinksConfig.from_dict(CONFIG)
    result = reconcile(cfg, router_ifs(), netns=eng, dry_run=True)
    assert not result.applied
    assert [a.describe() for a in result.actions if a.op == "addr-add"] == [
        "+ xe1             address 2001:db8:aa::1/64",
        "+ xe2             address 2001:db8:aa:1::1/64",
    ]
    assert addrs(eng, "xe1") == set()


def test_missing_direct_link_is_a_clear_error(lab: tuple[str, str]) -> None:
    eng, _ = lab
    cfg = LinksConfig.from_dict(
        {"mode": "direct", "pool": "2001:db8:aa::/56", "map": [{"router_if": "ge-0/0/9.0", "link": "xe9"}]}
    )
    with pytest.raises(ReconcileError, match=r"link xe9 for router interface ge-0/0/9.0 does not exist"):
        reconcile(cfg, [Interface("ge-0/0/9.0", 9)], netns=eng)


def test_unknown_namespace_is_a_clear_error() -> None:
    cfg = LinksConfig.from_dict(CONFIG)
    with pytest.raises(ReconcileError, match="xvl-no-such-ns"):
        reconcile(cfg, router_ifs(), netns="xvl-no-such-ns")
