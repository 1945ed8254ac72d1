"""What a sender's Linux kernel does with the engine's Packet Too Big: two namespaces on a veth,
the sender with ``send --pmtu``'s socket open (raw, protocol 41, IPV6_RECVERR), the engine's
error written onto the wire as the worker builds it.  The kernel caches the MTU for the quoted
packet's destination only when the quote is a packet the sender sent (icmp_errors module doc):

* a router's Packet Too Big relayed by the engine, and the engine's own about a copy that came
  from an upstream engine, both quote the sender's packet (its outer source and destination 0)
  and land in the cache for destination 0, the address the sender's next datagram goes to;
* the quote the relay used to send (from the inner header on) is not applied at all: the kernel
  finds no socket for the UDP header behind ``ff0e::114`` and counts an Icmp6InErrors; the
  engine's own used to quote an upstream copy as received, which shrinks the wrong destination.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest

from engine.forwarding.branch import Brancher
from engine.forwarding.icmp_errors import plan_error, plan_relay
from engine.tools.xcast_send import open_pmtu_socket
from engine.wire.codec import build_xcast
from engine.wire.icmp6 import build_error, parse_icmp6
from engine.wire.layout import ICMP6_PACKET_TOO_BIG
from lab import netns
from tests.engine.helpers import ENGINE_ADDR, example_fib

pytestmark = [pytest.mark.root, pytest.mark.netns]

SND, ENG = "2001:db8:ff::1", "2001:db8:ff::2"          # the sender; the engine's address towards it
H1, H2 = "2001:db8:1::1", "2001:db8:2::1"              # destination 0 and 1 (routes in example_fib)
COPY_SRC = "2001:db8:e2::1"                             # the engine's address on H2's link
UPSTREAM = "2001:db8:77::1"                             # another engine, before this one


def b(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


@pytest.fixture
def hosts() -> Iterator[tuple[str, str]]:
    with netns.temporary("x6pmtu-s", "x6pmtu-e") as (s, e):
        netns.veth(s, "s0", e, "e0")
        netns.addr(s, "s0", f"{SND}/64")
        netns.addr(e, "e0", f"{ENG}/64")
        netns.ip(s, "-6", "route", "add", "default", "via", ENG)
        yield s, e


def copy_for_h2(outer_src: str) -> bytes:
    """A 1,500-byte XCAST6 packet from SND to {H1, H2} as it leaves a branch point for H2 only."""
    return build_xcast(b(SND), [b(H1), b(H2)], b"m" * 1356, sport=40000, dport=33434,
                       bitmap=0b10, outer_src=b(outer_src), hop_limit=60)


def deliver(hosts: tuple[str, str], error: bytes) -> tuple[int | None, int | None, int]:
    """Write ``error`` from the engine's namespace to the sender while its PMTU socket is open;
    the sender's cached MTU for H1 and H2 and how many ICMPv6 errors its kernel could not use."""
    s, e = hosts
    netns.run(["nstat", "-n"], ns=s)
    with netns.in_netns(s):
        snd = open_pmtu_socket()
    with netns.in_netns(e):
        tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        tx.sendto(error, (SND, 0))
        time.sleep(0.3)
        counters = netns.run(["nstat", "-az", "Icmp6InErrors"], ns=s).stdout.split()
        return route_mtu(s, H1), route_mtu(s, H2), int(counters[counters.index("Icmp6InErrors") + 1])
    finally:
        tx.close()
        snd.close()


def route_mtu(ns: str, dst: str) -> int | None:
    words = netns.run(["ip", "-6", "route", "get", dst], ns=ns).stdout.split()
    return int(words[words.index("mtu") + 1]) if "mtu" in words else None


def test_relayed_packet_too_big_reaches_the_senders_path_mtu_cache(hosts: tuple[str, str]) -> None:
    router_error = build_error(ICMP6_PACKET_TOO_BIG, 0, 1400, b("2001:db8:ab::2"), b(COPY_SRC),
                               copy_for_h2(COPY_SRC))
    msg = parse_icmp6(router_error)
    assert msg is not None
    plan = plan_relay(msg, {b(COPY_SRC), b(ENG)})
    assert plan is not None and plan.refused is None and plan.dst == b(SND)
    assert deliver(hosts, plan.build(b(ENG))) == (1400, None, 0)


def test_own_packet_too_big_for_an_upstream_copy_reaches_the_cache(hosts: tuple[str, str]) -> None:
    result = Brancher(example_fib(), ENGINE_ADDR.get).branch(copy_for_h2(UPSTREAM))
    plan = plan_error(result, too_big_mtu=1400)
    assert plan is not None and plan.refused is None and plan.dst == b(SND)
    assert deliver(hosts, plan.build(b(ENG))) == (1400, None, 0)


def test_the_inner_quote_the_relay_used_to_send_is_not_applied(hosts: tuple[str, str]) -> None:
    old = build_error(ICMP6_PACKET_TOO_BIG, 0, 1360, b(ENG), b(SND), copy_for_h2(COPY_SRC)[40:])
    assert deliver(hosts, old) == (None, None, 1)


def test_an_upstream_copy_quoted_as_received_would_shrink_the_wrong_destination(
        hosts: tuple[str, str]) -> None:
    """What the engine's own Packet Too Big quoted before for a copy from an upstream engine: the
    kernel takes it (the socket is unbound, next header 41) but caches the MTU for H2, the copy's
    destination, which the sender's next datagram is not sent to (it goes to H1)."""
    old = build_error(ICMP6_PACKET_TOO_BIG, 0, 1400, b(ENG), b(SND), copy_for_h2(UPSTREAM))
    assert deliver(hosts, old) == (None, 1400, 0)
