"""rtnetlink route codec (pure, no root): encode -> decode round trips and malformed input."""

from __future__ import annotations

import struct

import pytest

from engine.model import ip6
from sync import rtnl
from sync.apply import ifname_map_from
from sync.kernel import plan_mirror
from sync.rtnl import KernelNextHop, KernelRoute
from tests.sync.test_apply_kernel import table_routes


def payload(msg: bytes) -> memoryview:
    [(mtype, _, _, body)] = list(rtnl.iter_messages(msg))
    assert mtype == rtnl.RTM_NEWROUTE
    return body


@pytest.mark.parametrize("route", [
    KernelRoute(ip6("2001:db8::"), 32, 6464, 245, 1024, (KernelNextHop(3, ip6("fe80::1"), True),)),
    KernelRoute(bytes(16), 0, 100, 245, 7, (KernelNextHop(5, None, False),)),
    KernelRoute(ip6("2001:db8:1::"), 48, 6464, 245, 1024,
                (KernelNextHop(3, ip6("fe80::1"), True), KernelNextHop(4, ip6("2001:db8::9"), True))),
])
def test_replace_round_trip(route: KernelRoute) -> None:
    msg = rtnl.encode_replace(route, seq=77, ack=True)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, mtype, seq) == (len(msg), rtnl.RTM_NEWROUTE, 77)
    assert flags & (rtnl.NLM_F_REPLACE | rtnl.NLM_F_CREATE | rtnl.NLM_F_ACK | rtnl.NLM_F_REQUEST) == \
        rtnl.NLM_F_REPLACE | rtnl.NLM_F_CREATE | rtnl.NLM_F_ACK | rtnl.NLM_F_REQUEST
    assert rtnl.decode_route(payload(msg)) == route


def test_delete_names_table_priority_and_protocol() -> None:
    route = KernelRoute(ip6("2001:db8::"), 32, 6464, 245, 1024, (KernelNextHop(3, ip6("fe80::1")),))
    msg = rtnl.encode_delete(route, seq=5)
    [(mtype, flags, _, body)] = list(rtnl.iter_messages(msg))
    assert mtype == rtnl.RTM_DELROUTE and not flags & rtnl.NLM_F_ACK
    family, dst_len, _, _, table, proto = struct.unpack_from("=BBBBBB", body)
    assert (family, dst_len, table, proto) == (rtnl.AF_INET6, 32, 0, 245)   # table > 255 goes in RTA_TABLE
    decoded = rtnl.decode_route(body)
    assert decoded is not None and (decoded.table, decoded.priority, decoded.dst) == (6464, 1024, route.dst)


def test_error_messages_and_truncation() -> None:
    req = rtnl.encode_delete(KernelRoute(bytes(16), 0, 6464, 245, 1, ()), seq=9)
    err = struct.pack("=IHHII", 16 + 4 + 16, rtnl.NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", -19) + req[:16]
    [(mtype, _, _, body)] = list(rtnl.iter_messages(err))
    assert mtype == rtnl.NLMSG_ERROR and rtnl.error_code(body) == 19 and rtnl.error_request_seq(body) == 9
    with pytest.raises(ValueError, match="truncated netlink message"):
        list(rtnl.iter_messages(req[:-4]))


def test_plan_maps_interfaces_and_counts_skips() -> None:
    links = {"xsa-a": (3, True), "xsa-b": (4, False)}
    routes = table_routes(5)
    plan = plan_mirror(routes, {"ge-0/0/1.0": "xsa-a", "ge-0/0/2.0": "xsa-b"}.get, links,
                       foreign={(ip6("2001:db8::"), 64, 1024)})
    # ge-0/0/2.0's link is down: 3 routes skipped, the ECMP route keeps its xsa-a member;
    # 2001:db8::/64 (first generated route) is held by a foreign route
    assert plan.skipped() == {"no_engine_link": 0, "missing_device": 0, "link_down": 3, "bad_gateway": 0,
                              "foreign_conflict": 1}
    assert len(plan.desired) == 5
    ecmp = plan.desired[(ip6("2001:db9::"), 32, 1024)]
    assert ecmp.nexthops == (KernelNextHop(3, ip6("fe80::1"), True),)


def test_ifname_map_from_linkmap() -> None:
    from engine.model import EngineLink, LinkMap

    lm = LinkMap([EngineLink("ge-0/0/1.0", "xc-trunk.101", 7, 101, ip6("fe80::e"), ip6("fe80::1"),
                             b"\x02\0\0\0\0\x01", None)])
    m = ifname_map_from(lm)
    assert m("ge-0/0/1.0") == "xc-trunk.101" and m("ge-0/0/2.0") is None


def test_plan_leaves_out_gateways_the_kernel_refuses() -> None:
    import ipaddress

    from engine.model import NextHop, Route

    def route(prefix: str, *gws: str) -> Route:
        return Route(ipaddress.IPv6Network(prefix), tuple(NextHop("ge-0/0/1.0", ip6(g)) for g in gws))

    routes = [route("2001:db8:1::/48", "ff02::1"), route("2001:db8:2::/48", "::"),
              route("2001:db8:3::/48", "ff02::2", "fe80::1")]
    plan = plan_mirror(routes, {"ge-0/0/1.0": "xsa-a"}.get, {"xsa-a": (3, True)}, foreign=set())
    assert plan.skipped()["bad_gateway"] == 2
    assert any("multicast or unspecified gateway" in e for e in plan.skipped_examples)
    assert [r.nexthops for r in plan.desired.values()] == [(KernelNextHop(3, ip6("fe80::1"), True),)]
