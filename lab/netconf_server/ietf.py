"""Render a namespace's kernel state as ietf-routing / ietf-interfaces operational data.

Tree: ``/routing-state`` (ietf-routing, the revision shipped in Debian's libyuma-base,
2016-11-04, whose ``routing-state`` subtree RFC 8349 keeps as the deprecated non-NMDA tree)
and ``/interfaces-state`` (ietf-interfaces 2014-05-08).  Validated against those YANG modules
with ``yanglint`` in tests/sync/test_netconf_yang.py.
"""

from __future__ import annotations

from lxml import etree

from lab.netconf_server.kernel import KernelLink, KernelRoute

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
RT_NS = "urn:ietf:params:xml:ns:yang:ietf-routing"
V6UR_NS = "urn:ietf:params:xml:ns:yang:ietf-ipv6-unicast-routing"
IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
IANAIFT_NS = "urn:ietf:params:xml:ns:yang:iana-if-type"
RIB_NAME = "ipv6-master"
LAST_UPDATED = "2026-11-21T00:00:00Z"
_SPECIAL = {"blackhole": "blackhole", "unreachable": "unreachable", "prohibit": "prohibit"}


def source_protocol(kernel_protocol: str) -> str:
    """Kernel ``proto`` -> ietf-routing identity (only ``direct`` and ``static`` exist in the base module)."""
    return "rt:direct" if kernel_protocol == "kernel" else "rt:static"


def preference(kernel_protocol: str) -> int:
    """Administrative distance the way Junos/IOS rank them: connected 0, static 1."""
    return 0 if kernel_protocol == "kernel" else 1


def _leaf(parent: etree._Element, ns: str, name: str, text: str | None = None) -> etree._Element:
    elem = etree.SubElement(parent, f"{{{ns}}}{name}")
    if text is not None:
        elem.text = text
    return elem


def routing_state(routes: list[KernelRoute], links: list[KernelLink]) -> etree._Element:
    """``<routing-state>`` with one IPv6 RIB holding every kernel main-table route."""
    root = etree.Element(f"{{{RT_NS}}}routing-state", nsmap={None: RT_NS, "rt": RT_NS, "v6ur": V6UR_NS})
    ifs = _leaf(root, RT_NS, "interfaces")
    for link in links:
        _leaf(ifs, RT_NS, "interface", link.name)
    cpp = _leaf(root, RT_NS, "control-plane-protocols")
    for ident, name in (("rt:direct", "direct"), ("rt:static", "static")):
        proto = _leaf(cpp, RT_NS, "control-plane-protocol")
        _leaf(proto, RT_NS, "type", ident)
        _leaf(proto, RT_NS, "name", name)
    rib = _leaf(_leaf(root, RT_NS, "ribs"), RT_NS, "rib")
    _leaf(rib, RT_NS, "name", RIB_NAME)
    _leaf(rib, RT_NS, "address-family", "v6ur:ipv6-unicast")
    _leaf(rib, RT_NS, "default-rib", "true")
    table = _leaf(rib, RT_NS, "routes")
    best_metric: dict[str, int] = {}
    for r in routes:
        best_metric[r.dst] = min(r.metric, best_metric.get(r.dst, r.metric))
    for r in routes:
        route = _leaf(table, RT_NS, "route")
        _leaf(route, RT_NS, "route-preference", str(preference(r.protocol)))
        nh = _leaf(route, RT_NS, "next-hop")
        if r.kind != "unicast":
            _leaf(nh, RT_NS, "special-next-hop", _SPECIAL.get(r.kind, "blackhole"))
        elif len(r.hops) == 1:
            _leaf(nh, RT_NS, "outgoing-interface", r.hops[0].dev)
            if r.hops[0].gateway:
                _leaf(nh, V6UR_NS, "next-hop-address", r.hops[0].gateway)
        else:
            nhl = _leaf(nh, RT_NS, "next-hop-list")
            for hop in r.hops:
                entry = _leaf(nhl, RT_NS, "next-hop")
                _leaf(entry, RT_NS, "outgoing-interface", hop.dev)
                if hop.gateway:
                    _leaf(entry, V6UR_NS, "address", hop.gateway)
        _leaf(route, RT_NS, "source-protocol", source_protocol(r.protocol))
        if r.metric == best_metric[r.dst]:
            _leaf(route, RT_NS, "active")
        _leaf(route, RT_NS, "last-updated", LAST_UPDATED)
        _leaf(route, V6UR_NS, "destination-prefix", r.dst)
    return root


def interfaces_state(links: list[KernelLink]) -> etree._Element:
    """``<interfaces-state>``: name, type, admin/oper status, if-index of every link."""
    root = etree.Element(f"{{{IF_NS}}}interfaces-state", nsmap={None: IF_NS, "ianaift": IANAIFT_NS})
    for link in links:
        intf = _leaf(root, IF_NS, "interface")
        _leaf(intf, IF_NS, "name", link.name)
        _leaf(intf, IF_NS, "type", "ianaift:softwareLoopback" if link.loopback else "ianaift:ethernetCsmacd")
        _leaf(intf, IF_NS, "admin-status", "up" if link.admin_up else "down")
        _leaf(intf, IF_NS, "oper-status", "up" if link.oper_up else "down")
        _leaf(intf, IF_NS, "if-index", str(link.index))
        # statistics is a non-presence container with a mandatory leaf: required (yanglint says so).
        _leaf(_leaf(intf, IF_NS, "statistics"), IF_NS, "discontinuity-time", LAST_UPDATED)
    return root


def nmda_trees(routes: list[KernelRoute], links: list[KernelLink]) -> list[etree._Element]:
    """RFC 8349/8343 NMDA trees: ``/routing`` (ribs with read-only routes) and ``/interfaces``.

    Same content as the non-NMDA trees; not checked by yanglint (Debian ships only the
    2016 ietf-routing revision, where routes live under routing-state alone).
    """
    state = routing_state(routes, links)
    routing = etree.Element(f"{{{RT_NS}}}routing", nsmap=state.nsmap)
    ribs = state.find(f"{{{RT_NS}}}ribs")
    assert ribs is not None
    routing.append(ribs)
    ifs = etree.Element(f"{{{IF_NS}}}interfaces", nsmap={None: IF_NS, "ianaift": IANAIFT_NS})
    for intf in interfaces_state(links):
        ifs.append(intf)
    return [routing, ifs]


def data(routes: list[KernelRoute], links: list[KernelLink], nmda: bool = False) -> etree._Element:
    """The ``<data>`` element of a full ``<get>`` reply (plus the NMDA trees if ``nmda``)."""
    root = etree.Element(f"{{{NC_NS}}}data", nsmap={None: NC_NS})
    root.append(routing_state(routes, links))
    root.append(interfaces_state(links))
    if nmda:
        root.extend(nmda_trees(routes, links))
    return root
