"""Junos and ietf-routing reply parsers on hand-written replies shaped like real boxes' output."""

from __future__ import annotations

import ipaddress

import pytest

from engine.model import NextHop, ip6
from sync import netconf_ietf, netconf_junos
from sync.netconf_xml import NetconfReplyError

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
JR = "http://xml.juniper.net/junos/21.4R3/junos-routing"
JUNOS = "http://xml.juniper.net/junos/21.4R3/junos"


def reply(body: str) -> str:
    return (f'<rpc-reply xmlns="{NC}" xmlns:junos="{JUNOS}" message-id="101">\n{body}\n'
            "    <cli>\n        <banner></banner>\n    </cli>\n</rpc-reply>")


def rt(dest: str, *entries: str, style: str = "brief") -> str:
    return f'<rt junos:style="{style}"><rt-destination>{dest}</rt-destination>{"".join(entries)}</rt>'


def entry(proto: str = "Static", pref: int = 5, active: bool = True, nh: str = "", nh_type: str = "",
          metric: str = "") -> str:
    tag = "<active-tag>*</active-tag><current-active/><last-active/>" if active else ""
    return (f"<rt-entry>{tag}<protocol-name>{proto}</protocol-name><preference>{pref}</preference>"
            f'<age junos:seconds="60">00:01:00</age>{metric}'
            f"{f'<nh-type>{nh_type}</nh-type>' if nh_type else ''}{nh}</rt-entry>")


def nh(to: str | None, via: str, selected: bool = True) -> str:
    return (f"<nh>{'<selected-next-hop/>' if selected else ''}{f'<to>{to}</to>' if to else ''}"
            f"<via>{via}</via></nh>")


def table(*rts: str, name: str = "inet6.0") -> str:
    return (f'<route-information xmlns="{JR}">\n<!-- keepalive -->\n'
            f"<route-table><table-name>{name}</table-name>"
            f"<destination-count>{len(rts)}</destination-count>{''.join(rts)}</route-table></route-information>")


def test_junos_active_selected_ecmp_and_skips() -> None:
    raw = reply(table(
        rt("2001:db8:1::/64", entry("Direct", 0, nh=nh(None, "ge-0/0/0.0"))),
        rt("2001:db8:1::1/128", entry("Local", 0, nh_type="Local",
                                      nh="<nh><nh-local-interface>ge-0/0/0.0</nh-local-interface></nh>")),
        rt("2001:db8:a::/48",
           entry("Static", 5, nh=nh("2001:db8:1::2", "ge-0/0/0.0") + nh("2001:db8:2::2", "ge-0/0/1.0"),
                 metric="<metric>20</metric>"),
           entry("BGP", 170, active=False, nh=nh("2001:db8:9::1", "ge-0/0/9.0", selected=False))),
        # Only one of two next hops selected (no load-balance policy): only that one forwards.
        rt("2001:db8:b::/48", entry("OSPF3", 10, nh=nh("fe80::1", "ge-0/0/0.0")
                                     + nh("fe80::2", "ge-0/0/1.0", selected=False))),
        rt("2001:db8:dead::/48", entry("Static", 5, nh_type="Discard")),
        rt("2001:db8:dea1::/48", entry("Static", 5, nh_type="Reject")),
        rt("2001:db8:c::/48", entry("BGP", 170, active=False, nh=nh("2001:db8:9::1", "ge-0/0/9.0"))),
        rt("fe80::/64", entry("Direct", 0, nh=nh(None, "ge-0/0/0.0"))),
        rt("ff02::2/128", entry("INET6", 0, nh_type="MultiRecv")),
    ))
    got = netconf_junos.parse_routes(raw)
    routes = {str(r.prefix): r for r in got.routes}
    assert set(routes) == {"2001:db8:1::/64", "2001:db8:a::/48", "2001:db8:b::/48"}
    assert routes["2001:db8:1::/64"].nexthops == (NextHop("ge-0/0/0.0"),)
    assert routes["2001:db8:1::/64"].protocol == "direct"
    a = routes["2001:db8:a::/48"]
    assert a.nexthops == (NextHop("ge-0/0/0.0", ip6("2001:db8:1::2")),
                          NextHop("ge-0/0/1.0", ip6("2001:db8:2::2")))
    assert (a.protocol, a.metric, a.extra["preference"]) == ("static", 20, "5")
    assert routes["2001:db8:b::/48"].nexthops == (NextHop("ge-0/0/0.0", ip6("fe80::1")),)
    assert dict(got.skipped) == {"local": 1, "discard": 1, "reject": 1, "inactive": 1, "link-local": 1,
                                 "multicast": 1}


def test_junos_detail_style_prefix_length_and_other_tables() -> None:
    raw = reply(table(
        '<rt junos:style="detail"><rt-destination>2001:db8:5::</rt-destination>'
        f"<rt-prefix-length>48</rt-prefix-length>{entry(nh=nh('2001:db8::2', 'xe-1/0/0.100'))}</rt>",
    ) + table(rt("2001:db8:6::/48", entry(nh=nh("2001:db8::2", "xe-1/0/0.100"))), name="inet6.3"))
    got = netconf_junos.parse_routes(raw)
    assert [str(r.prefix) for r in got.routes] == ["2001:db8:5::/48"]
    assert got.skipped["other-table"] == 1


@pytest.mark.parametrize(
    ("bad_rt", "needle"),
    [
        (rt("2001:db8:zz::/64", entry(nh=nh(None, "ge-0/0/0.0"))),
         "rt #2: bad <rt-destination> '2001:db8:zz::/64'"),
        (rt("2001:db8:7::/129", entry(nh=nh(None, "ge-0/0/0.0"))), "rt #2: bad <rt-destination>"),
        (rt("10.0.0.0/8", entry(nh=nh(None, "ge-0/0/0.0"))), "rt #2: bad <rt-destination> '10.0.0.0/8'"),
        (rt("2001:db8:7::/64", entry(nh=nh("10.0.0.1", "ge-0/0/0.0"))), "bad next-hop <to> '10.0.0.1'"),
        (rt("2001:db8:7::/64", entry(metric="<metric>x</metric>", nh=nh(None, "ge-0/0/0.0"))),
         "bad <metric> 'x'"),
        ("<rt><rt-entry/></rt>", "rt #2: missing <rt-destination>"),
        ('<rt junos:style="detail"><rt-destination>2001:db8:7::</rt-destination></rt>',
         "has no prefix length"),
    ],
)
def test_junos_garbage_row_fails_whole_reply(bad_rt: str, needle: str) -> None:
    raw = reply(table(rt("2001:db8:1::/64", entry(nh=nh(None, "ge-0/0/0.0"))), bad_rt))
    with pytest.raises(netconf_junos.JunosParseError) as err:
        netconf_junos.parse_routes(raw)
    assert needle in str(err.value)


def test_rpc_error_cut_short_and_not_xml() -> None:
    err = reply(f'<rpc-error xmlns="{NC}"><error-type>protocol</error-type><error-tag>operation-failed'
                "</error-tag><error-severity>error</error-severity><error-message>\nsyntax error\n"
                "</error-message><error-path>[edit]</error-path></rpc-error>")
    with pytest.raises(NetconfReplyError, match="rpc-error: error-tag=operation-failed severity=error "
                       r"path=\[edit\] message='syntax error'"):
        netconf_junos.parse_routes(err)
    warning = reply(f'<rpc-error xmlns="{NC}"><error-severity>warning</error-severity></rpc-error>'
                    + table(rt("2001:db8:1::/64", entry(nh=nh(None, "ge-0/0/0.0")))))
    assert len(netconf_junos.parse_routes(warning).routes) == 1
    full = reply(table(*(rt(f"2001:db8:{i:x}::/48", entry(nh=nh(None, "ge-0/0/0.0"))) for i in range(50))))
    with pytest.raises(NetconfReplyError, match="reply cut short"):
        netconf_junos.parse_routes(full[: len(full) // 2])
    with pytest.raises(NetconfReplyError, match="not well-formed"):
        netconf_junos.parse_routes("<rpc-reply><route-information><rt>&&&</route-information>")
    with pytest.raises(NetconfReplyError, match="expected <rpc-reply>"):
        netconf_junos.parse_routes(f'<hello xmlns="{NC}"/>')


def test_junos_interfaces_terse_with_padded_values() -> None:
    body = ('<interface-information xmlns="http://xml.juniper.net/junos/21.4R3/junos-interface" '
            'junos:style="terse">'
            "<physical-interface>\n<name>\nge-0/0/0\n</name>\n<admin-status>\nup\n</admin-status>\n"
            "<oper-status>\nup\n</oper-status>\n"
            "<logical-interface>\n<name>\nge-0/0/0.0\n</name>\n<admin-status>\nup\n</admin-status>\n"
            "<oper-status>\nup\n</oper-status>\n</logical-interface>"
            "<logical-interface>\n<name>\nge-0/0/0.100\n</name>\n<admin-status>\ndown\n</admin-status>\n"
            "<oper-status>\ndown\n</oper-status>\n</logical-interface></physical-interface>"
            "<physical-interface>\n<name>\nge-0/0/1\n</name>\n<admin-status>\nup\n</admin-status>\n"
            "<oper-status>\ndown\n</oper-status>\n"
            "<logical-interface>\n<name>\nge-0/0/1.0\n</name>\n<oper-status>\nup\n</oper-status>\n"
            "</logical-interface></physical-interface>"
            "<physical-interface>\n<name>\ngr-0/0/0\n</name>\n<oper-status>\nup\n</oper-status>\n"
            "</physical-interface></interface-information>")
    got = netconf_junos.parse_interfaces(reply(body))
    assert [(i.name, i.oper_up) for i in got] == [
        ("ge-0/0/0.0", True), ("ge-0/0/0.100", False), ("ge-0/0/1.0", False), ("gr-0/0/0", True)]


def test_junos_summary_marker_line() -> None:
    body = (f'<route-summary-information xmlns="{JR}"><route-table><table-name>inet.0</table-name>'
            "<destination-count>9</destination-count></route-table><route-table>"
            "<table-name>inet6.0</table-name><destination-count>12</destination-count>"
            "<total-route-count>14</total-route-count><active-route-count>12</active-route-count>"
            "<holddown-route-count>0</holddown-route-count><hidden-route-count>0</hidden-route-count>"
            "<protocols><protocol-name>Direct</protocol-name><protocol-route-count>4</protocol-route-count>"
            "<active-route-count>4</active-route-count></protocols></route-table></route-summary-information>")
    line = netconf_junos.parse_summary(reply(body))
    assert line.startswith("destination-count=12;total-route-count=14;active-route-count=12")
    assert line.endswith("Direct:4/4")
    with pytest.raises(netconf_junos.JunosParseError, match=r"no route-table 'inet6\.7'"):
        netconf_junos.parse_summary(reply(body), "inet6.7")


RT = netconf_ietf.RT_NS
V6 = netconf_ietf.V6UR_NS


def ietf_reply(routes: str, rib: str = "ipv6-master", family: str = "v6ur:ipv6-unicast",
               tree: str = "routing-state",
               extra_rib: str = "") -> str:
    return (f'<rpc-reply xmlns="{NC}" message-id="1"><data>'
            f'<{tree} xmlns="{RT}" xmlns:v6ur="{V6}" xmlns:rt="{RT}"><ribs>{extra_rib}'
            f"<rib><name>{rib}</name><address-family>{family}</address-family><routes>{routes}</routes></rib>"
            f"</ribs></{tree}>"
            f'<interfaces-state xmlns="{netconf_ietf.IF_NS}">'
            "<interface><name>eth0</name><if-index>2</if-index>"
            "<oper-status>up</oper-status></interface><interface><name>eth1</name><if-index>3</if-index>"
            "<oper-status>lower-layer-down</oper-status></interface></interfaces-state></data></rpc-reply>")


def route(dest: str, nh: str, proto: str = "rt:static", pref: int = 1, active: bool = True) -> str:
    return (f"<route><route-preference>{pref}</route-preference><next-hop>{nh}</next-hop>"
            f"<source-protocol>{proto}</source-protocol>{'<active/>' if active else ''}"
            f"<v6ur:destination-prefix>{dest}</v6ur:destination-prefix></route>")


def test_ietf_routes_nexthop_kinds_active_choice_and_interfaces() -> None:
    routes = (
        route("2001:db8:1::/64", "<outgoing-interface>eth0</outgoing-interface>", "rt:direct", 0)
        + route("2001:db8:a::/48", "<outgoing-interface>eth0</outgoing-interface>"
                "<v6ur:next-hop-address>2001:db8:1::2</v6ur:next-hop-address>")
        + route("2001:db8:b::/48", "<next-hop-list><next-hop><index>1</index><outgoing-interface>eth0"
                "</outgoing-interface><v6ur:address>2001:db8:1::2</v6ur:address></next-hop><next-hop>"
                "<index>2</index><outgoing-interface>eth1</outgoing-interface><v6ur:next-hop-address>"
                "2001:db8:2::2</v6ur:next-hop-address></next-hop></next-hop-list>", "ospf:ospfv3", 110)
        + route("2001:db8:c::/48", "<outgoing-interface>eth1</outgoing-interface>", pref=200, active=False)
        + route("2001:db8:c::/48", "<outgoing-interface>eth0</outgoing-interface>", pref=20)
        + route("2001:db8:dead::/48", "<special-next-hop>blackhole</special-next-hop>")
        + route("2001:db8:dea1::/48", "<special-next-hop>unreachable</special-next-hop>")
        + route("2001:db8:d::/48", "<v6ur:next-hop-address>2001:db8:9::1</v6ur:next-hop-address>", "bgp:bgp")
    )
    parsed, interfaces = netconf_ietf.parse_reply(ietf_reply(routes))
    got = {str(r.prefix): r for r in parsed.routes}
    assert set(got) == {"2001:db8:1::/64", "2001:db8:a::/48", "2001:db8:b::/48", "2001:db8:c::/48",
                        "2001:db8:d::/48"}
    assert got["2001:db8:1::/64"].protocol == "direct"
    assert got["2001:db8:b::/48"].nexthops == (NextHop("eth0", ip6("2001:db8:1::2")),
                                               NextHop("eth1", ip6("2001:db8:2::2")))
    assert got["2001:db8:b::/48"].protocol == "ospfv3"
    assert got["2001:db8:c::/48"].nexthops == (NextHop("eth0"),)  # the <active/> one
    assert got["2001:db8:d::/48"].nexthops == (NextHop("", ip6("2001:db8:9::1")),)
    assert dict(parsed.skipped) == {"inactive": 1, "discard": 1, "reject": 1}
    assert parsed.notes["no-interface"] == 1
    assert [(i.name, i.index, i.oper_up) for i in interfaces] == [("eth0", 2, True), ("eth1", 3, False)]


def test_ietf_rib_selection_and_nmda_tree() -> None:
    v4 = ("<rib><name>ipv4-master</name><address-family>v4ur:ipv4-unicast</address-family><routes>"
          "<route><destination-prefix>10.0.0.0/8</destination-prefix></route></routes></rib>")
    one = route("2001:db8:1::/64", "<outgoing-interface>eth0</outgoing-interface>")
    parsed, _ = netconf_ietf.parse_reply(ietf_reply(one, extra_rib=v4, tree="routing"))
    assert [str(r.prefix) for r in parsed.routes] == ["2001:db8:1::/64"]
    parsed, _ = netconf_ietf.parse_reply(ietf_reply(one, rib="vrf-red"), rib="vrf-red")
    assert len(parsed.routes) == 1
    with pytest.raises(netconf_ietf.IetfParseError,
                       match=r"no RIB 'other' under /routing-state in reply \(RIBs seen: vrf-red\)"):
        netconf_ietf.parse_reply(ietf_reply(one, rib="vrf-red"), rib="other")
    with pytest.raises(netconf_ietf.IetfParseError,
                       match=r"no default IPv6 RIB under /routing-state in reply "
                       r"\(RIBs seen: ipv4-master, x\)"):
        netconf_ietf.parse_reply(ietf_reply(one, rib="x", family="rt:ipv4", extra_rib=v4))


def test_junos_missing_table_is_an_error_but_empty_table_is_not() -> None:
    with pytest.raises(netconf_junos.JunosParseError,
                       match=r"no route-table 'inet6.0' in reply \(tables: inet.0\)"):
        netconf_junos.parse_routes(reply(table(rt("2001:db8::/64", entry(nh=nh(None, "ge-0/0/0.0"))),
                                               name="inet.0")))
    with pytest.raises(netconf_junos.JunosParseError, match=r"\(tables: none\)"):
        netconf_junos.parse_routes(reply(f'<route-information xmlns="{JR}"/>'))
    assert netconf_junos.parse_routes(reply(table())).routes == []


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (route("2001:db8:zz::/48", ""), "route #2: bad destination-prefix '2001:db8:zz::/48'"),
        (route("2001:db8:7::/48", "<v6ur:next-hop-address>1.2.3.4</v6ur:next-hop-address>"),
         "route #2 (2001:db8:7::/48): bad next-hop-address '1.2.3.4'"),
        (route("2001:db8:7::/48", "", pref=-1).replace("-1", "high"), "bad route-preference 'high'"),
        ("<route><next-hop/></route>", "route #2: missing destination-prefix"),
    ],
)
def test_ietf_garbage_row_fails_whole_reply(bad: str, needle: str) -> None:
    ok = route("2001:db8:1::/64", "<outgoing-interface>eth0</outgoing-interface>")
    with pytest.raises(netconf_ietf.IetfParseError) as err:
        netconf_ietf.parse_reply(ietf_reply(ok + bad))
    assert needle in str(err.value)


def test_ietf_filter_shape() -> None:
    from lxml import etree

    text = etree.tostring(netconf_ietf.get_filter("routing", "ipv6-master")).decode()
    assert f'<routing xmlns="{RT}"><ribs><rib><name>ipv6-master</name>' in text
    assert f'<interfaces xmlns="{netconf_ietf.IF_NS}"/>' in text
    with pytest.raises(ValueError, match="tree must be one of"):
        netconf_ietf.get_filter("bogus")


def test_progress_reported_every_thousand_routes() -> None:
    rts = [rt(str(ipaddress.IPv6Network((0x20010DB8 << 96 | i << 64, 64))), entry(nh=nh(None, "ge-0/0/0.0")))
           for i in range(2500)]
    seen: list[tuple[int, str]] = []
    got = netconf_junos.parse_routes(reply(table(*rts)), progress=lambda n, phase: seen.append((n, phase)))
    assert len(got.routes) == 2500
    assert seen == [(1000, "routes"), (2000, "routes")]


def test_reproduced_junos_summary_counts_match_the_route_reply() -> None:
    from lab.netconf_server import junos, kernel

    links = [kernel.KernelLink("xnc-ge0", 2, True, True, ("2001:db8::1/64", "fe80::1/64"))]
    routes = [
        kernel.KernelRoute("2001:db8::/64", "unicast", "kernel", 256, (kernel.KernelHop("xnc-ge0"),)),
        kernel.KernelRoute("fe80::/64", "unicast", "kernel", 256, (kernel.KernelHop("xnc-ge0"),)),
        kernel.KernelRoute("2001:db8:1::/48", "unicast", "boot", 1024,
                           (kernel.KernelHop("xnc-ge0", "2001:db8::2"),)),
        kernel.KernelRoute("2001:db8:2::/48", "blackhole", "boot", 1024, ()),
    ]
    text = junos.route_information(routes, links)
    summary = junos.route_summary(routes, links)
    for field, value in (("destination-count", text.count("<rt ")),
                         ("total-route-count", text.count("<rt-entry>")),
                         ("active-route-count", text.count("<active-tag>*</active-tag>"))):
        assert f"<{field}>{value}</{field}>" in summary


def test_non_ascii_across_feed_slices() -> None:
    from sync import netconf_xml

    descr = "Uplink → Zürich 東京"
    pad = "x" * (netconf_xml.FEED_SLICE - 7)  # push the multibyte text across a slice boundary
    body = (f'<interface-information xmlns="urn:j"><physical-interface><name>ge-0/0/0</name>'
            f"<oper-status>up</oper-status><description>{pad}</description><logical-interface>"
            f"<name>ge-0/0/0.0</name><oper-status>up</oper-status><description>{descr}</description>"
            "</logical-interface></physical-interface></interface-information>")
    got = netconf_junos.parse_interfaces(reply(body))
    assert got[0].descr == descr
