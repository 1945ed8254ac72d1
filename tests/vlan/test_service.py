"""LinkService: reconcile on new router interface lists, keep the last good map on errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.model import Interface, LinkMap
from lab import netns
from tests.vlan.nsutil import sh
from vlan.config import LinksConfig
from vlan.service import LinkService

pytestmark = [pytest.mark.root, pytest.mark.netns]

CONFIG = LinksConfig.from_dict(
    {
        "mode": "direct",
        "pool": "2001:db8:aa::/56",
        "map": [{"router_if": "ge-0/0/1.0", "link": "xe1"}, {"router_if": "ge-0/0/2.0", "link": "xe2"}],
    }
)


@pytest.fixture
def eng() -> Iterator[str]:
    with netns.temporary("xvl-seng") as (ns,):
        sh("link", "add", "xe1", "type", "veth", "peer", "name", "xr1", ns=ns)
        sh("link", "set", "xr1", "up", ns=ns)
        yield ns


def test_updates_swap_the_map_and_notify_and_errors_keep_the_last_good_one(eng: str) -> None:
    seen: list[LinkMap] = []
    service = LinkService(CONFIG, netns=eng, neighbor_wait_s=0, on_linkmap=seen.append)
    service.update([Interface("ge-0/0/1.0", 1)])
    assert service.engine_ifname("ge-0/0/1.0") == "xe1"
    assert service.engine_ifname("ge-0/0/2.0") is None
    assert len(seen) == 1 and seen[0] is service.linkmap
    good = service.linkmap

    # The router grows ge-0/0/2.0, mapped to xe2, which does not exist on the engine.
    assert service.update([Interface("ge-0/0/1.0", 1), Interface("ge-0/0/2.0", 2)]) is None
    assert service.linkmap is good
    state = service.state()
    assert state["errors"] == 1 and state["reconciles"] == 1 and state["links"] == 1
    assert "link xe2 for router interface ge-0/0/2.0 does not exist" in state["last_error"]

    sh("link", "add", "xe2", "type", "veth", "peer", "name", "xr2", ns=eng)
    assert service.update([Interface("ge-0/0/1.0", 1), Interface("ge-0/0/2.0", 2)]) is not None
    assert service.engine_ifname("ge-0/0/2.0") == "xe2"
    assert service.state()["last_error"] is None and len(seen) == 2
