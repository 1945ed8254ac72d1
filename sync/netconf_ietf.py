"""ietf-routing (RFC 8349) + ietf-interfaces (RFC 8343): request filter and reply parser (pure).

One ``<get>`` with a subtree filter returns the IPv6 RIB and the interface list.  Two trees are
supported, chosen by the ``tree`` option:

* ``routing-state`` (default): ``/routing-state/ribs/rib/routes/route`` plus
  ``/interfaces-state/interface`` -- the non-NMDA operational tree (deprecated in RFC 8349 but
  what IOS-XE 16.x/17.x and most open servers answer on ``<get>``);
* ``routing``: the NMDA tree ``/routing/ribs/rib/routes/route`` plus ``/interfaces/interface``.

Decisions:

* The RIB is the IPv6 one (``address-family`` identity ``ipv6``), or the one named by
  ``rib=NAME``; several IPv6 RIBs without a name given pick the default RIB (``default-rib``
  true or absent).
* Several routes for one destination: the one carrying ``<active/>``; if none does, the lowest
  ``route-preference`` (counted as ``no-active-flag``).
* ``special-next-hop`` blackhole/unreachable/prohibit/receive have no forwarding next hop:
  skipped and counted (``discard``, ``reject``, ``local``), like link-local and multicast
  destinations.  A next hop with an address but no ``outgoing-interface`` (a recursive
  route) is kept with an empty interface name and counted as ``no-interface``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from engine.model import NO_EXTRA, Interface, NextHop, Route
from sync.netconf_junos import PROGRESS_EVERY, RouteParse
from sync.netconf_xml import (
    child_text,
    children,
    fields,
    hop_order,
    leaf,
    localname,
    parse_address,
    parse_prefix,
    stream_records,
)
from sync.source import Progress

RT_NS = "urn:ietf:params:xml:ns:yang:ietf-routing"
V6UR_NS = "urn:ietf:params:xml:ns:yang:ietf-ipv6-unicast-routing"
IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
TREES = ("routing-state", "routing")
_SPECIAL = {"blackhole": "discard", "unreachable": "reject", "prohibit": "reject", "receive": "local"}


class IetfParseError(ValueError):
    """A route or interface entry cannot be understood; the message names entry and leaf."""


def get_filter(tree: str = "routing-state", rib: str | None = None) -> etree._Element:
    """Subtree filter (the ``<filter type="subtree">`` element) for the RIB routes and interfaces."""
    if tree not in TREES:
        raise ValueError(f"tree must be one of {', '.join(TREES)}, got {tree!r}")
    flt = etree.Element("filter", type="subtree")
    routing = etree.SubElement(flt, f"{{{RT_NS}}}{tree}", nsmap={None: RT_NS})
    rib_elem = etree.SubElement(etree.SubElement(routing, f"{{{RT_NS}}}ribs"), f"{{{RT_NS}}}rib")
    if rib is not None:
        etree.SubElement(rib_elem, f"{{{RT_NS}}}name").text = rib  # content match
    else:
        etree.SubElement(rib_elem, f"{{{RT_NS}}}name")
    etree.SubElement(rib_elem, f"{{{RT_NS}}}address-family")
    etree.SubElement(rib_elem, f"{{{RT_NS}}}default-rib")
    etree.SubElement(rib_elem, f"{{{RT_NS}}}routes")
    if_tree = "interfaces-state" if tree == "routing-state" else "interfaces"
    etree.SubElement(flt, f"{{{IF_NS}}}{if_tree}", nsmap={None: IF_NS})
    return flt


@dataclass(slots=True)
class _Candidate:
    route: Route | None  # None: no forwarding next hop (reason in skip)
    skip: str
    active: bool
    preference: int


def _identity_is(value: str, name: str) -> bool:
    return value.rpartition(":")[2] == name


def _rib_selected(rib: etree._Element, want: str | None) -> bool:
    if want is not None:
        return child_text(rib, "name") == want
    family = child_text(rib, "address-family")
    if not (_identity_is(family, "ipv6") or _identity_is(family, "ipv6-unicast")):
        return False
    return child_text(rib, "default-rib") in ("", "true")


def _address(text: str, what: str) -> bytes:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise IetfParseError(f"{what}: bad next-hop-address {text!r}: {exc}") from exc


def _hops(nh_elem: etree._Element, where: str) -> tuple[list[NextHop], str]:
    nh = fields(nh_elem)
    special = leaf(nh, "special-next-hop")
    if special:
        return [], _SPECIAL.get(special, f"special-{special}")
    nh_list = nh.get("next-hop-list")
    entries = [fields(e) for e in children(nh_list, "next-hop")] if nh_list is not None else [nh]
    hops: list[NextHop] = []
    for entry in entries:
        ifname = leaf(entry, "outgoing-interface")
        # RFC 8349 names the list entry's address next-hop-address; the 2016 draft "address".
        addr = leaf(entry, "next-hop-address") or leaf(entry, "address")
        if not ifname and not addr:
            continue
        hop = NextHop(ifname=ifname, gateway=_address(addr, where) if addr else None)
        if hop not in hops:
            hops.append(hop)
    return hops, "" if hops else "no-nexthop"


def parse_reply(
    raw: str | bytes | Iterable[bytes],
    rib: str | None = None,
    progress: Progress | None = None,
    tree: str = "routing-state",
) -> tuple[RouteParse, list[Interface]]:
    """Parse the ``<get>`` reply incrementally: IPv6 RIB routes and the interface list.

    ``tree`` only words the error when no RIB matches.
    """
    out = RouteParse()
    interfaces: list[Interface] = []
    best: dict[ipaddress.IPv6Network, _Candidate] = {}
    rows = 0
    ribs_seen: list[str] = []

    def handle_route(route_elem: etree._Element, rib_elem: etree._Element) -> None:
        nonlocal rows
        if id(rib_elem) not in _rib_ok:
            _rib_ok.clear()  # one RIB at a time; ids of freed elements may be reused
            _rib_ok[id(rib_elem)] = _rib_selected(rib_elem, rib)
        if not _rib_ok[id(rib_elem)]:
            return
        rows += 1
        where = f"route #{rows}"
        leaves = fields(route_elem)
        dest_text = leaf(leaves, "destination-prefix")
        if not dest_text:
            raise IetfParseError(f"{where}: missing destination-prefix")
        try:
            dest = parse_prefix(dest_text)
        except ValueError as exc:
            raise IetfParseError(f"{where}: bad destination-prefix {dest_text!r}: {exc}") from exc
        where = f"{where} ({dest})"
        pref_text = leaf(leaves, "route-preference")
        try:
            pref = int(pref_text) if pref_text else 0
        except ValueError as exc:
            raise IetfParseError(f"{where}: bad route-preference {pref_text!r}") from exc
        active = "active" in leaves
        nh = leaves.get("next-hop")
        hops, skip = _hops(nh, where) if nh is not None else ([], "no-nexthop")
        if not skip and (dest.is_link_local or dest.is_multicast):
            skip = "link-local" if dest.is_link_local else "multicast"
        built = None
        if not skip:
            protocol = leaf(leaves, "source-protocol").rpartition(":")[2] or "unknown"
            built = Route(prefix=dest, nexthops=tuple(sorted(hops, key=hop_order)), protocol=protocol,
                          extra={"preference": str(pref)} if pref_text else NO_EXTRA)
        cand = _Candidate(built, skip, active, pref)
        prev = best.get(dest)
        if prev is None:
            best[dest] = cand
        else:
            out.skipped["inactive"] += 1
            if (cand.active, -cand.preference) > (prev.active, -prev.preference):
                best[dest] = cand
        if progress is not None and rows % PROGRESS_EVERY == 0:
            progress(rows, "routes")

    def handle_interface(intf: etree._Element) -> None:
        parent = intf.getparent()
        if parent is None or etree.QName(parent).namespace != IF_NS:
            return  # e.g. the leaf-list routing-state/interfaces/interface
        name = child_text(intf, "name")
        if not name:
            raise IetfParseError("interface entry without <name>")
        index_text = child_text(intf, "if-index")
        try:
            index = int(index_text) if index_text else None
        except ValueError as exc:
            raise IetfParseError(f"interface {name}: bad if-index {index_text!r}") from exc
        interfaces.append(
            Interface(name=name, index=index, oper_up=child_text(intf, "oper-status") == "up",
                      descr=child_text(intf, "description"))
        )

    _rib_ok: dict[int, bool] = {}

    selected_ribs: list[str] = []

    def handle_rib(rib_elem: etree._Element) -> None:
        # Closing </rib>: its routes were handled (and freed) already; its leaves remain.
        name = child_text(rib_elem, "name")
        ribs_seen.append(name or "?")
        if _rib_selected(rib_elem, rib):
            selected_ribs.append(name)

    def handle(elem: etree._Element) -> None:
        name = localname(elem.tag)
        if name == "rib":
            handle_rib(elem)
            return
        routes = elem.getparent()
        if name == "route" and routes is not None and localname(routes.tag) == "routes":
            rib_elem = routes.getparent()
            if rib_elem is not None:
                handle_route(elem, rib_elem)
        elif name == "interface":
            handle_interface(elem)

    stream_records(raw, frozenset(("route", "interface", "rib")), handle, context="get ietf-routing")
    if not selected_ribs:
        want = f"RIB {rib!r}" if rib is not None else "default IPv6 RIB"
        seen = ", ".join(ribs_seen) or "none"
        hint = "" if ribs_seen else f"; is ietf-routing served under /{tree}? (tree=routing-state|routing)"
        raise IetfParseError(f"no {want} under /{tree} in reply (RIBs seen: {seen}){hint}")
    if len(selected_ribs) > 1:
        raise IetfParseError(f"several RIBs match ({', '.join(selected_ribs)}): name one with rib=NAME")
    for cand in best.values():
        if cand.route is None:
            out.skipped[cand.skip] += 1
            continue
        if not cand.active and rows:
            out.notes["no-active-flag"] += 1
        if any(not h.ifname for h in cand.route.nexthops):
            out.notes["no-interface"] += 1
        out.routes.append(cand.route)
    return out, interfaces


def marker_filter(tree: str = "routing-state", rib: str | None = None) -> etree._Element:
    """Slim subtree filter for the change marker: per route only destination, next hop, last-updated."""
    flt = get_filter(tree, rib)
    flt.remove(flt[1])  # no interfaces
    routes = flt.find(f".//{{{RT_NS}}}routes")
    assert routes is not None
    route = etree.SubElement(routes, f"{{{RT_NS}}}route")
    etree.SubElement(route, f"{{{V6UR_NS}}}destination-prefix")
    etree.SubElement(route, f"{{{RT_NS}}}next-hop")
    etree.SubElement(route, f"{{{RT_NS}}}active")
    etree.SubElement(route, f"{{{RT_NS}}}last-updated")
    return flt


def marker_digest(raw: str) -> str:
    """Digest of the slim reply's content (changes when any route's leaves change).

    The reply text is hashed as received -- no XML parse -- from just after the
    ``<rpc-reply ...>`` start tag (whose message-id changes on every call).  A reply that
    carries ``<rpc-error>`` or does not end in ``</rpc-reply>`` is parsed properly so the
    caller gets the specific error.
    """
    text = raw.strip()
    if "rpc-error" in text or not text.endswith("rpc-reply>"):
        stream_records(text, "route", lambda _elem: None, context="get ietf-routing (marker)")
    start = text.find("rpc-reply")
    body = text[text.find(">", start) + 1:] if start >= 0 else text
    return hashlib.sha256(body.encode()).hexdigest()[:32]
