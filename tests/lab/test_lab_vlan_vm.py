"""The lab in ``vlan`` mode: router<->engine links are 802.1Q subinterfaces on one veth trunk
per router, as on a real deployment.  This host's kernel has no 802.1Q, so these tests carry
the ``vm`` marker and run inside the QEMU real-kernel harness (tests/vm).

The whole end-to-end suite (tests/lab/test_lab_e2e.py) runs against this same lab through the
``vlan`` and ``vlan-python`` variants of the ``e2e_lab`` fixture; what is left here is what only
vlan mode has, in both data paths (the TC program and the Python workers each pick the VLAN)."""

from __future__ import annotations

import json

import pytest

from lab import netns
from lab.demo import deliveries, engine_counters, reset_logs, send_xcast
from lab.topology import Topology
from tests.lab import variants
from tests.lab.test_lab_e2e import assert_exactly_once, payloads

pytestmark = [pytest.mark.vm, pytest.mark.root, pytest.mark.netns, pytest.mark.slow,
              pytest.mark.parametrize("lab_variant", variants.params("vlan"), indirect=True)]


@pytest.mark.parametrize("r", ["a", "b"])
def test_links_are_8021q_subinterfaces(e2e_lab: Topology, r: str) -> None:
    """Every engine link, on both ends, is an 802.1Q subinterface of the trunk with its own VLAN id."""
    router = e2e_lab.routers[r]
    for k in range(len(router.interfaces)):
        rif, eif, _raddr, _eaddr = router.engine_link(k)
        for ns, ifname in ((e2e_lab.engine_ns(r), eif), (e2e_lab.router_ns(r), rif)):
            info = json.loads(netns.ip(ns, "-d", "-j", "link", "show", "dev", ifname).stdout)[0]
            assert info["link"] == "trunk", f"{ns} {ifname}: parent {info.get('link')}"
            data = info["linkinfo"]["info_data"]
            assert (info["linkinfo"]["info_kind"], data["protocol"], data["id"]) == \
                ("vlan", "802.1Q", e2e_lab.vlan_id(k)), f"{ns} {ifname}: {info['linkinfo']}"


def _link_packets(ns: str, ifname: str) -> tuple[int, int]:
    """(rx, tx) packets of one interface."""
    stats = json.loads(netns.ip(ns, "-s", "-j", "link", "show", "dev", ifname).stdout)[0]["stats64"]
    return int(stats["rx"]["packets"]), int(stats["tx"]["packets"])


def test_copies_return_on_the_vlan_of_the_routers_egress_interface(e2e_lab: Topology) -> None:
    """Engine A returns the X2U copy for h1 on VLAN 101 (router interface ra-h1) and the one for h2
    on VLAN 102 (ra-h2), and nothing on the inter-router interface's VLAN 103 (no destination
    behind router B): one 802.1Q subinterface per router interface, chosen by the next hop's
    egress interface.  (VLAN 100, ra-snd, also carries the engine's SNMP polls, so its packet
    counts say nothing about copies; the worker's own counter shows what came in.)"""
    ens, rns = e2e_lab.engine_ns("a"), e2e_lab.router_ns("a")
    router = e2e_lab.routers["a"]
    k_of = {ifname: k for k, ifname in enumerate(router.interfaces)}
    h1, h2 = e2e_lab.host("h1"), e2e_lab.host("h2")
    links = {name: router.engine_link(k_of[name]) for name in ("ra-h1", "ra-h2", "ra-rb")}

    def sample() -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
        return {name: (_link_packets(ens, eif), _link_packets(rns, rif))
                for name, (rif, eif, _r, _e) in links.items()}

    def received() -> int:
        st = engine_counters(e2e_lab, "a")
        assert st is not None, "engine a has no counter file"
        return int(st["totals"]["received"])

    before, received0 = sample(), received()
    sent = payloads("vlan-egress", 3)
    reset_logs(e2e_lab)
    send_xcast(e2e_lab, [h1.addr, h2.addr], sent)
    got = deliveries(e2e_lab, expect=2 * len(sent), timeout=20, settle=1.0)
    assert_exactly_once(e2e_lab, got, [h1.addr, h2.addr], sent, kind="udp")
    after, n = sample(), len(sent)
    assert received() - received0 == n
    # copies: engine tx on the subinterface == router rx on its peer (neighbour discovery may add one)
    moved = {name: {"engine_tx": after[name][0][1] - before[name][0][1],
                    "router_rx": after[name][1][0] - before[name][1][0]} for name in links}
    for name in ("ra-h1", "ra-h2"):
        assert moved[name]["engine_tx"] >= n and moved[name]["router_rx"] >= n, \
            f"{name}: copies did not return on VLAN {e2e_lab.vlan_id(k_of[name])}: {moved}"
    assert moved["ra-rb"]["engine_tx"] < n, f"copies left on VLAN {e2e_lab.vlan_id(k_of['ra-rb'])}: {moved}"
