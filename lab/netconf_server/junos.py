"""Reproduce Junos XML API replies from a namespace's kernel state.

This part is a REPRODUCTION (no Junos box runs here): element names, nesting, the versioned
``http://xml.juniper.net/junos/<release>/junos-*`` namespaces, ``junos:style`` attributes,
the ``<!-- keepalive -->`` comment, 4-space indentation and the newline-padded values of
``get-interface-information`` follow replies captured from real boxes (``show route ... |
display xml``, ``show interfaces terse | display xml``).  The NETCONF/SSH server carrying them
is real (the ``netconf`` package).

Kernel -> Junos mapping: ``xnc-geN`` -> ``ge-0/0/N`` (unit ``.0``), ``lo`` -> ``lo0``; proto
kernel -> Direct/0, anything else -> Static/5; blackhole -> Discard, unreachable/prohibit ->
Reject; each interface address -> a Local/0 /128 route; multipath -> every ``<nh>`` marked
``<selected-next-hop/>`` (a box with a load-balance per-flow export policy).  On top of the
kernel table the reply adds what a real table has and the kernel cannot hold: an inactive
BGP entry behind an active one, a destination whose only entry is inactive, and the
``ff02::2/128`` INET6 MultiRecv route.
"""

from __future__ import annotations

import ipaddress
from xml.sax.saxutils import escape

from lab.netconf_server.kernel import KernelLink, KernelRoute

RELEASE = "23.4R1"
JUNOS_NS = f"http://xml.juniper.net/junos/{RELEASE}/junos"
ROUTING_NS = f"http://xml.juniper.net/junos/{RELEASE}/junos-routing"
IF_NS = f"http://xml.juniper.net/junos/{RELEASE}/junos-interface"
INACTIVE_ONLY = "2001:db8:ffff:1::/64"  # destination whose only entry is inactive


def junos_name(kernel_ifname: str, unit: bool = True) -> str:
    """``xnc-ge3`` -> ``ge-0/0/3.0``; ``lo`` -> ``lo0.0``; others unchanged (+ ``.0``)."""
    if kernel_ifname.startswith("xnc-ge") and kernel_ifname[6:].isdigit():
        phys = f"ge-0/0/{kernel_ifname[6:]}"
    elif kernel_ifname == "lo":
        phys = "lo0"
    else:
        phys = kernel_ifname
    return f"{phys}.0" if unit else phys


def _entry(ind: str, *, active: bool, protocol: str, pref: int, metric: int | None,
           nh_type: str | None, nhs: list[str]) -> list[str]:
    lines = [f"{ind}<rt-entry>"]
    i2 = ind + "    "
    if active:
        lines += [f"{i2}<active-tag>*</active-tag>", f"{i2}<current-active/>", f"{i2}<last-active/>"]
    lines += [f"{i2}<protocol-name>{protocol}</protocol-name>", f"{i2}<preference>{pref}</preference>",
              f'{i2}<age junos:seconds="4060">01:07:40</age>']
    if metric is not None:
        lines.append(f"{i2}<metric>{metric}</metric>")
    if nh_type:
        lines.append(f"{i2}<nh-type>{nh_type}</nh-type>")
    lines += nhs
    lines.append(f"{ind}</rt-entry>")
    return lines


def _nh(ind: str, *, to: str | None, via: str | None = None, local: str | None = None,
        selected: bool = True) -> list[str]:
    i2 = ind + "    "
    lines = [f"{ind}<nh>"]
    if selected:
        lines.append(f"{i2}<selected-next-hop/>")
    if to:
        lines.append(f"{i2}<to>{escape(to)}</to>")
    if via:
        lines.append(f"{i2}<via>{escape(via)}</via>")
    if local:
        lines.append(f"{i2}<nh-local-interface>{escape(local)}</nh-local-interface>")
    lines.append(f"{ind}</nh>")
    return lines


def route_information(routes: list[KernelRoute], links: list[KernelLink], table: str = "inet6.0",
                      extras: bool = True, garbage_row: bool = False) -> str:
    """``<route-information>`` for ``show route table inet6.0`` (brief style), as text."""
    rts: list[tuple[ipaddress.IPv6Network, list[str]]] = []
    ind_rt, ind_e, ind_nh = " " * 12, " " * 16, " " * 20
    active_count = 0
    for r in routes:
        net = ipaddress.IPv6Network(r.dst)
        if net.is_link_local:
            continue  # Junos has no fe80::/64 Direct routes, only the Local /128s below
        protocol, pref = ("Direct", 0) if r.protocol == "kernel" else ("Static", 5)
        metric = None if r.protocol == "kernel" else r.metric
        if r.kind == "blackhole":
            entry = _entry(ind_e, active=True, protocol=protocol, pref=pref, metric=None,
                           nh_type="Discard", nhs=[])
        elif r.kind in ("unreachable", "prohibit"):
            entry = _entry(ind_e, active=True, protocol=protocol, pref=pref, metric=None,
                           nh_type="Reject", nhs=[])
        else:
            nhs: list[str] = []
            for hop in r.hops:
                nhs += _nh(ind_nh, to=hop.gateway, via=junos_name(hop.dev))
            entry = _entry(ind_e, active=True, protocol=protocol, pref=pref, metric=metric,
                           nh_type=None, nhs=nhs)
        if extras and r.protocol != "kernel" and r.kind == "unicast" and r.hops and r.hops[0].gateway:
            # A BGP path that lost to the static one: shown, not active.
            entry += _entry(ind_e, active=False, protocol="BGP", pref=170, metric=100, nh_type=None,
                            nhs=_nh(ind_nh, to=r.hops[0].gateway, via=junos_name(r.hops[0].dev),
                                    selected=False))
        rts.append((net, entry))
        active_count += 1
    for link in links:
        for addr in link.addresses:
            iface = ipaddress.IPv6Interface(addr)
            entry = _entry(ind_e, active=True, protocol="Local", pref=0, metric=None, nh_type="Local",
                           nhs=_nh(ind_nh, to=None, local=junos_name(link.name), selected=False))
            rts.append((ipaddress.IPv6Network(f"{iface.ip}/128"), entry))
            active_count += 1
    if extras:
        rts.append((ipaddress.IPv6Network("ff02::2/128"),
                    _entry(ind_e, active=True, protocol="INET6", pref=0, metric=None,
                           nh_type="MultiRecv", nhs=[])))
        active_count += 1
        rts.append((ipaddress.IPv6Network(INACTIVE_ONLY),
                    _entry(ind_e, active=False, protocol="BGP", pref=170, metric=0, nh_type=None,
                           nhs=_nh(ind_nh, to="2001:db8:ffff::1", via="ge-0/0/9.0", selected=False))))
    rts.sort(key=lambda item: (item[0].network_address.packed, item[0].prefixlen))
    total = sum(sum(1 for line in e if line.strip() == "<rt-entry>") for _, e in rts)
    out = [
        f'<route-information xmlns="{ROUTING_NS}" xmlns:junos="{JUNOS_NS}">',
        "        <!-- keepalive -->",
        "        <route-table>",
        f"            <table-name>{table}</table-name>",
        f"            <destination-count>{len(rts)}</destination-count>",
        f"            <total-route-count>{total}</total-route-count>",
        f"            <active-route-count>{active_count}</active-route-count>",
        "            <holddown-route-count>0</holddown-route-count>",
        "            <hidden-route-count>0</hidden-route-count>",
    ]
    for n, (net, entry) in enumerate(rts):
        dest = str(net) if not (garbage_row and n == len(rts) // 2) else "2001:db8:zz::/64"
        out.append(f'{ind_rt}<rt junos:style="brief">')
        out.append(f"{ind_rt}    <rt-destination>{dest}</rt-destination>")
        out += entry
        out.append(f"{ind_rt}</rt>")
    out += ["        </route-table>", "    </route-information>"]
    return "\n".join(out)


def route_summary(routes: list[KernelRoute], links: list[KernelLink], table: str = "inet6.0") -> str:
    """``<route-summary-information>``: the counts :func:`route_information` would show.

    Counted straight from the kernel list (a real box keeps these counters; rendering the
    whole table to count it would make this cheap RPC as slow as the full one).
    """
    per_proto: dict[str, int] = {"INET6": 1}  # ff02::2/128 MultiRecv
    inactive = 1  # INACTIVE_ONLY destination
    dests = 2
    for r in routes:
        if ipaddress.IPv6Network(r.dst).is_link_local:
            continue
        dests += 1
        name = "Direct" if r.protocol == "kernel" else "Static"
        per_proto[name] = per_proto.get(name, 0) + 1
        if r.protocol != "kernel" and r.kind == "unicast" and r.hops and r.hops[0].gateway:
            inactive += 1
    local = sum(len(link.addresses) for link in links)
    if local:
        per_proto["Local"] = local
        dests += local
    per_proto["BGP"] = inactive
    total = sum(per_proto.values())
    out = [
        f'<route-summary-information xmlns="{ROUTING_NS}">',
        "        <router-id>192.0.2.1</router-id>",
        "        <route-table>",
        f"            <table-name>{table}</table-name>",
        f"            <destination-count>{dests}</destination-count>",
        f"            <total-route-count>{total}</total-route-count>",
        f"            <active-route-count>{total - inactive}</active-route-count>",
        "            <holddown-route-count>0</holddown-route-count>",
        "            <hidden-route-count>0</hidden-route-count>",
    ]
    for name, count in sorted(per_proto.items()):
        active = count - inactive if name == "BGP" else count
        out += ["            <protocols>", f"                <protocol-name>{name}</protocol-name>",
                f"                <protocol-route-count>{count}</protocol-route-count>",
                f"                <active-route-count>{active}</active-route-count>",
                "            </protocols>"]
    out += ["        </route-table>", "    </route-summary-information>"]
    return "\n".join(out)


def _padded(ind: str, name: str, value: str) -> list[str]:
    # Real boxes pad these values with newlines: <name>\nge-0/0/0\n</name>.
    return [f"{ind}<{name}>", escape(value), f"</{name}>"]


def interface_information(links: list[KernelLink]) -> str:
    """``<interface-information junos:style="terse">`` for ``show interfaces terse``."""
    out = [f'<interface-information xmlns="{IF_NS}" xmlns:junos="{JUNOS_NS}" junos:style="terse">']
    for link in links:
        i1, i2, i3 = " " * 8, " " * 12, " " * 16
        out.append(f"{i1}<physical-interface>")
        out += _padded(i2, "name", junos_name(link.name, unit=False))
        out += _padded(i2, "admin-status", "up" if link.admin_up else "down")
        out += _padded(i2, "oper-status", "up" if link.oper_up else "down")
        out.append(f"{i2}<logical-interface>")
        out += _padded(i3, "name", junos_name(link.name))
        out += _padded(i3, "admin-status", "up" if link.admin_up else "down")
        out += _padded(i3, "oper-status", "up" if link.oper_up else "down")
        out.append(f"{i3}<filter-information>")
        out.append("</filter-information>")
        if link.addresses:
            out.append(f"{i3}<address-family>")
            out += _padded(i3 + "    ", "address-family-name", "inet6")
            for addr in link.addresses:
                out.append(f"{i3}    <interface-address>")
                out.append(f'{i3}        <ifa-local junos:emit="emit">')
                out.append(addr)
                out.append("</ifa-local>")
                out.append(f"{i3}    </interface-address>")
            out.append(f"{i3}</address-family>")
        out.append(f"{i2}</logical-interface>")
        out.append(f"{i1}</physical-interface>")
    out.append("    </interface-information>")
    return "\n".join(out)
