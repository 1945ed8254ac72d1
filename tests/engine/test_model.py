from engine.model import NextHop, Route, Snapshot, ip6


def test_nexthops_with_connected_and_gateway_sort_and_digest() -> None:
    import ipaddress

    hops = (NextHop("eth0", ip6("fe80::1")), NextHop("eth0"), NextHop("eth1", ip6("fe80::2")))
    assert sorted(hops) == [NextHop("eth0"), NextHop("eth0", ip6("fe80::1")), NextHop("eth1", ip6("fe80::2"))]
    route = Route(ipaddress.IPv6Network("2001:db8::/32"), hops)
    assert len(Snapshot([route], []).digest()) == 64
