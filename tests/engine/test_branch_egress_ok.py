"""Routes out of router interfaces with no engine link: no_route, not egress_no_link."""

from __future__ import annotations

import ipaddress

from engine.dataplane.worker import default_brancher_factory
from engine.forwarding.branch import Brancher
from engine.forwarding.fib import Fib
from engine.model import EngineLink, LinkMap, NextHop, Route
from engine.wire.codec import FLAG_DONT_X2U, build_xcast
from engine.wire.reasons import DropReason
from tests.engine.helpers import ENGINE_ADDR, SENDER, a, route


def _fib() -> Fib:
    return Fib([
        route("2001:db8:1::/48", "ge-0/0/1", "fe80::1"),
        route("2001:db8:e0::/64", "eng0"),                    # the router's engine-facing link
        Route(ipaddress.IPv6Network("2001:db8:5::/48"),       # ECMP: one member without a link
              (NextHop("eng1", a("fe80::9")), NextHop("ge-0/0/2", a("fe80::2")))),
    ])


def _ok(ifname: str) -> bool:
    return ifname.startswith("ge-")


def test_destination_routed_only_via_unlinked_interface_is_no_route() -> None:
    b = Brancher(_fib(), ENGINE_ADDR.get, egress_ok=_ok)
    for flags in (0, FLAG_DONT_X2U):
        r = b.branch(build_xcast(SENDER, [a("2001:db8:e0::5"), a("2001:db8:1::1"), a("2001:db8:e0::6")],
                                 b"x", sport=1, dport=2, flags=flags))
        assert r.drops == {DropReason.NO_ROUTE: 2}, (flags, r.drops)
        assert [c.nexthop.ifname for c in r.copies] == ["ge-0/0/1"]


def test_ecmp_members_without_link_are_skipped() -> None:
    b = Brancher(_fib(), ENGINE_ADDR.get, egress_ok=_ok)
    dests = [a(f"2001:db8:5::{i:x}") for i in range(1, 20)]
    r = b.branch(build_xcast(SENDER, dests, b"x", sport=1, dport=2, flags=FLAG_DONT_X2U))
    assert not r.drops
    assert {c.nexthop.ifname for c in r.copies} == {"ge-0/0/2"}
    assert sum(len(c.dest_indexes) for c in r.copies) == len(dests)


def test_without_egress_ok_every_route_is_used() -> None:
    r = Brancher(_fib(), ENGINE_ADDR.get).branch(
        build_xcast(SENDER, [a("2001:db8:e0::5")], b"x", sport=1, dport=2))
    assert not r.drops and [c.nexthop.ifname for c in r.copies] == ["eng0"]


def test_worker_brancher_uses_the_link_map() -> None:
    z = bytes(16)
    link = EngineLink("ge-0/0/1", "to-ge1", 5, None, ENGINE_ADDR["ge-0/0/1"], z, b"\2" * 6, b"\4" * 6)
    links = LinkMap([link])
    branch = default_brancher_factory(_fib(), links)
    r = branch(build_xcast(SENDER, [a("2001:db8:e0::5"), a("2001:db8:1::1")], b"x", sport=1, dport=2))
    assert r.drops == {DropReason.NO_ROUTE: 1}
    assert [c.nexthop.ifname for c in r.copies] == ["ge-0/0/1"]
