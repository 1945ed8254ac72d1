"""One egress rule (engine/dataplane/egress.py), one derived-cache rule (engine/forwarding/generation.py)."""

from __future__ import annotations

from engine.dataplane.egress import Egress, EgressEntry, egress_for
from engine.dataplane.worker import default_brancher_factory
from engine.forwarding.fib import Fib
from engine.forwarding.generation import DerivedCaches
from engine.model import EngineLink, LinkMap
from engine.wire.codec import build_xcast
from engine.wire.reasons import DropReason
from tests.engine.helpers import ENGINE_ADDR, SENDER, a, route

MAC_R, MAC_E = b"\x02\0\0\0\0\x01", b"\x02\0\0\0\0\xee"


def _link(router_if: str, mac: bytes | None = MAC_R, up: bool = True) -> EngineLink:
    return EngineLink(router_if, f"to-{router_if}", 7, None, ENGINE_ADDR["ge-0/0/1"], None, MAC_E, mac,
                      1500, up)


def test_the_rule() -> None:
    assert egress_for(None) is None                                   # never an egress
    assert egress_for(_link("x", up=False)) == "egress_no_link"        # down: counted drop
    assert egress_for(_link("x", mac=None)) == "egress_no_mac"        # MAC not learned: counted drop
    e = egress_for(_link("x"))
    assert isinstance(e, EgressEntry) and e.l2 == MAC_R + MAC_E + b"\x86\xdd" and e.ifindex == 7


def test_brancher_and_worker_ask_the_same_rule() -> None:
    eg = Egress(LinkMap([_link("ge-0/0/1"), _link("ge-0/0/2", up=False), _link("ge-0/0/3", mac=None)]))
    # routable for the brancher: every interface with a link, whatever its state
    assert [eg.routable(f"ge-0/0/{k}") for k in (1, 2, 3, 4)] == [True, True, True, False]
    assert eg.resolve("ge-0/0/2") == "egress_no_link" and eg.resolve("ge-0/0/3") == "egress_no_mac"
    assert eg.resolve("ge-0/0/4") == "egress_no_link"


def test_a_down_link_keeps_its_destinations() -> None:
    """Copies towards a down link are made (and dropped at egress, counted), not no_route."""
    fib = Fib([route("2001:db8:1::/48", "ge-0/0/1", "fe80::1"),
               route("2001:db8:2::/48", "ge-0/0/2", "fe80::2")])
    links = LinkMap([_link("ge-0/0/1", up=False)])
    r = default_brancher_factory(fib, links)(
        build_xcast(SENDER, [a("2001:db8:1::1"), a("2001:db8:2::1")], b"x", sport=1, dport=2))
    assert r.drops == {DropReason.NO_ROUTE: 1}
    assert [c.nexthop.ifname for c in r.copies] == ["ge-0/0/1"]
    assert Egress(links).resolve("ge-0/0/1") == "egress_no_link"


class _Cache:
    def __init__(self) -> None:
        self.cleared: list[object] = []

    def clear(self, generation: object = None) -> None:
        self.cleared.append(generation)


def test_derived_caches_are_emptied_together_once_per_generation() -> None:
    c1, c2 = _Cache(), _Cache()
    d = DerivedCaches(c1, c2)
    d.check(1)
    d.check(1)
    d.check(2)
    d.renew(2)            # something else they derive from changed (the link map)
    assert c1.cleared == c2.cleared == [1, 2, 2] and d.generation == 2
