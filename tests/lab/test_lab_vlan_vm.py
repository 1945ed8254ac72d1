"""The lab in ``vlan`` mode: router<->engine links are 802.1Q subinterfaces on one veth trunk
per router, as on a real deployment.  This host's kernel has no 802.1Q, so these tests carry
the ``vm`` marker and run inside the QEMU real-kernel harness (tests/vm).

The whole end-to-end suite (tests/lab/test_lab_e2e.py) runs against this same lab through the
``vlan`` case of the ``e2e_lab`` fixture; what is left here is what only vlan mode has."""

from __future__ import annotations

import json

import pytest

from engine.lab import netns
from engine.lab.topology import Topology

pytestmark = [pytest.mark.vm, pytest.mark.root, pytest.mark.netns, pytest.mark.slow]


@pytest.mark.parametrize("r", ["a", "b"])
def test_links_are_8021q_subinterfaces(vlan_lab: Topology, r: str) -> None:
    """Every engine link, on both ends, is an 802.1Q subinterface of the trunk with its own VLAN id."""
    router = vlan_lab.routers[r]
    for k in range(len(router.interfaces)):
        rif, eif, _raddr, _eaddr = router.engine_link(k)
        for ns, ifname in ((vlan_lab.engine_ns(r), eif), (vlan_lab.router_ns(r), rif)):
            info = json.loads(netns.ip(ns, "-d", "-j", "link", "show", "dev", ifname).stdout)[0]
            assert info["link"] == "trunk", f"{ns} {ifname}: parent {info.get('link')}"
            data = info["linkinfo"]["info_data"]
            assert (info["linkinfo"]["info_kind"], data["protocol"], data["id"]) == \
                ("vlan", "802.1Q", vlan_lab.vlan_id(k)), f"{ns} {ifname}: {info['linkinfo']}"
