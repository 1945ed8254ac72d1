"""Router MAC learning and refresh through the kernel neighbor table (real ND between namespaces)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from engine.model import Interface, LinkMap
from lab import netns
from tests.vlan.nsutil import sh
from vlan.config import LinksConfig
from vlan.neighbors import NeighborRefresher, refresh_linkmap
from vlan.reconcile import open_ipr, reconcile

pytestmark = [pytest.mark.root, pytest.mark.netns]

CONFIG = LinksConfig.from_dict(
    {"mode": "direct", "pool": "2001:db8:aa::/56", "map": [{"router_if": "ge-0/0/1.0", "link": "xe1"}]}
)
MAC1 = "02:00:00:00:aa:01"
MAC2 = "02:00:00:00:aa:02"


@pytest.fixture
def lab() -> Iterator[tuple[str, str]]:
    with netns.temporary("xvl-neng", "xvl-nrtr") as (eng, rtr):
        sh("link", "add", "xe1", "type", "veth", "peer", "name", "xr1", "netns", rtr, ns=eng)
        sh("link", "set", "xr1", "address", MAC1, "up", ns=rtr)
        sh("addr", "add", "2001:db8:aa::2/64", "dev", "xr1", "nodad", ns=rtr)
        yield eng, rtr


def mac_of(linkmap: LinkMap) -> str | None:
    link = linkmap.for_router_if("ge-0/0/1.0")
    assert link is not None
    return ":".join(f"{b:02x}" for b in link.router_mac) if link.router_mac else None


def test_unresolved_without_waiting_then_learned_by_solicitation(lab: tuple[str, str]) -> None:
    eng, _ = lab
    first = reconcile(CONFIG, [Interface("ge-0/0/1.0", 1)], netns=eng, neighbor_wait_s=0)
    assert mac_of(first.linkmap) is None  # nothing in the table yet: not guessed
    with open_ipr(eng) as ipr:
        learned = refresh_linkmap(ipr, first.linkmap, wait_s=5)
    assert mac_of(learned) == MAC1


def test_stale_entry_is_resolicited_and_a_new_router_mac_picked_up(lab: tuple[str, str]) -> None:
    eng, rtr = lab
    result = reconcile(CONFIG, [Interface("ge-0/0/1.0", 1)], netns=eng, neighbor_wait_s=5)
    assert mac_of(result.linkmap) == MAC1
    # The router's port is replaced (new MAC); the engine's entry ages to STALE.  AF_PACKET
    # output never re-verifies it, so the refresher must.
    sh("link", "set", "xr1", "address", MAC2, ns=rtr)
    sh("neigh", "change", "2001:db8:aa::2", "dev", "xe1", "lladdr", MAC1, "nud", "stale", ns=eng)
    current = [result.linkmap]
    changed = threading.Event()

    def on_change(new: LinkMap) -> None:
        current[0] = new
        changed.set()

    refresher = NeighborRefresher(lambda: open_ipr(eng), lambda: current[0], on_change, interval_s=0.2)
    refresher.start()
    try:
        assert changed.wait(10), "refresher never reported the new router MAC"
    finally:
        refresher.stop()
    assert mac_of(current[0]) == MAC2
    assert refresher.errors == 0
