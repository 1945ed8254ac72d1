"""Property: any kernel table rendered by the test server (Junos reproduction and ietf-routing
data) parses back to exactly the forwarding routes it holds."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from lab.netconf_server import ietf, junos, kernel
from lab.netconf_server.lab import expected_from
from sync import netconf_ietf, netconf_junos

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
LINKS = [kernel.KernelLink(f"xnc-ge{n}", n + 2, True, True, (f"2001:db8:0:{n + 1}::1/64",)) for n in range(3)]

hops = st.lists(
    st.builds(kernel.KernelHop, dev=st.sampled_from([link.name for link in LINKS]),
              gateway=st.one_of(st.none(), st.integers(1, 0xFFFF).map(lambda i: f"2001:db8:0:1::{i:x}"),
                                st.integers(1, 0xFFFF).map(lambda i: f"fe80::{i:x}"))),
    min_size=1, max_size=4, unique=True,
)


@st.composite
def kernel_routes(draw: st.DrawFn) -> list[kernel.KernelRoute]:
    nets = draw(st.sets(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 128)), max_size=40))
    out = []
    for value, plen in nets:
        address = (0x2001_0DB8 << 96 | value << 32) & ((1 << 128) - 1)
        net = ipaddress.IPv6Network((address, plen), strict=False)
        kind = draw(st.sampled_from(["unicast", "unicast", "unicast", "blackhole", "unreachable"]))
        protocol = draw(st.sampled_from(["kernel", "boot", "static"]))
        out.append(kernel.KernelRoute(str(net), kind, protocol, draw(st.integers(0, 4096)),
                                      tuple(draw(hops)) if kind == "unicast" else ()))
    # One route per destination, as the active set of a RIB has.
    return list({r.dst: r for r in out}.values())


def wrap(body: str) -> str:
    return f'<rpc-reply xmlns="{NC}" message-id="7">{body}</rpc-reply>'


@settings(max_examples=60, deadline=None)
@given(kernel_routes())
def test_junos_roundtrip(routes: list[kernel.KernelRoute]) -> None:
    parsed = netconf_junos.parse_routes(wrap(junos.route_information(routes, LINKS)))
    assert {r.prefix: r for r in parsed.routes} == expected_from(routes, "junos")


@settings(max_examples=60, deadline=None)
@given(kernel_routes())
def test_ietf_roundtrip(routes: list[kernel.KernelRoute]) -> None:
    data = etree.tounicode(ietf.data(routes, LINKS))
    parsed, interfaces = netconf_ietf.parse_reply(wrap(data))
    assert {r.prefix: r for r in parsed.routes} == expected_from(routes, "ietf")
    assert [i.name for i in interfaces] == [link.name for link in LINKS]
