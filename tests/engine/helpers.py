"""Shared builders for the engine-core tests: a small route table and address helpers."""

from __future__ import annotations

import ipaddress

from engine.forwarding.fib import Fib
from engine.model import NextHop, Route, ip6

SENDER = ip6("2001:db8:ff::1")
ENGINE_ADDR = {f"ge-0/0/{k}": ip6(f"2001:db8:e{k}::1") for k in range(1, 9)}


def route(prefix: str, ifname: str, gateway: str | None = None) -> Route:
    return Route(ipaddress.IPv6Network(prefix), (NextHop(ifname, None if gateway is None else ip6(gateway)),))


def example_fib() -> Fib:
    """Three gateway next hops, one connected subnet, a default-free table."""
    return Fib(
        [
            route("2001:db8:1::/48", "ge-0/0/1", "fe80::1"),
            route("2001:db8:2::/48", "ge-0/0/2", "fe80::2"),
            route("2001:db8:20::/44", "ge-0/0/2", "fe80::2"),   # same next hop as :2::/48
            route("2001:db8:3::/64", "ge-0/0/3"),               # connected
            route("2001:db8:4::/48", "ge-0/0/4", "fe80::4"),
        ]
    )


def a(text: str) -> bytes:
    return ip6(text)
