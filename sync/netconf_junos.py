"""Junos XML API: build the RPCs and parse their replies into the normalized model (pure, no I/O).

Routes come from ``<get-route-information><table>inet6.0</table><active-path/></get-route-information>``
(CLI ``show route table inet6.0 active-path | display xml``), interfaces from
``<get-interface-information><terse/></get-interface-information>``.  Element names follow the
Junos XML API (``route-information/route-table/rt/rt-entry/nh``); namespaces carry the Junos
release (``http://xml.juniper.net/junos/23.4R1/junos-routing``), so elements are matched by
local name.

Decisions (documented for operators):

* Only the active ``<rt-entry>`` of each ``<rt>`` is used (``active-tag`` ``*`` or ``+``, or a
  ``<current-active/>`` child); destinations without one are counted as ``inactive``.
* Next hops: every ``<nh>`` carrying ``<selected-next-hop/>`` -- that is the set the router
  installs in its forwarding table (one, or several with a load-balance policy = ECMP).  If no
  ``<nh>`` is marked (some releases omit the mark when there is a single next hop) all ``<nh>``
  with an interface are used.
* ``nh-type`` Discard / Reject (e.g. aggregates, ``static ... discard``) and Local (the router's
  own addresses) have no forwarding next hop: skipped and counted (``discard``, ``reject``,
  ``local``), as are link-local and multicast destinations, which never appear in an XCAST
  destination list.
* Anything unparsable in a row (destination, prefix length, next-hop address) raises
  :class:`JunosParseError` naming the row and field: never a partial table.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from lxml import etree

from engine.model import NO_EXTRA, Interface, NextHop, Route
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

DEFAULT_TABLE = "inet6.0"
_SKIP_NH_TYPES = {"discard": "discard", "reject": "reject", "local": "local", "receive": "local"}
PROGRESS_EVERY = 1000


class JunosParseError(ValueError):
    """A row of a Junos reply cannot be understood; the message names the row and field."""


@dataclass(slots=True)
class RouteParse:
    """Routes of one reply, why the others were left out, and notes on kept ones."""

    routes: list[Route] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)


def route_rpc(table: str = DEFAULT_TABLE) -> etree._Element:
    """``<get-route-information>`` for the active routes of ``table``."""
    rpc = etree.Element("get-route-information")
    etree.SubElement(rpc, "table").text = table
    etree.SubElement(rpc, "active-path")
    return rpc


def interface_rpc() -> etree._Element:
    """``<get-interface-information><terse/>``: names and admin/oper status of every interface."""
    rpc = etree.Element("get-interface-information")
    etree.SubElement(rpc, "terse")
    return rpc


def summary_rpc() -> etree._Element:
    """``<get-route-summary-information>``: per-table and per-protocol counts (cheap change marker)."""
    return etree.Element("get-route-summary-information")


def _prefix(rt: dict[str, etree._Element], row: int) -> ipaddress.IPv6Network:
    dest = leaf(rt, "rt-destination")
    if not dest:
        raise JunosParseError(f"rt #{row}: missing <rt-destination>")
    if "/" not in dest:
        # junos:style="detail"/"extensive" splits the length into <rt-prefix-length>.
        plen = leaf(rt, "rt-prefix-length")
        if not plen:
            raise JunosParseError(f"rt #{row}: <rt-destination>{dest}</rt-destination> has no prefix length")
        dest = f"{dest}/{plen}"
    try:
        return parse_prefix(dest)
    except ValueError as exc:
        raise JunosParseError(f"rt #{row}: bad <rt-destination> {dest!r}: {exc}") from exc


def _named(tag: str, name: str) -> bool:
    # Hot path (every child of every <rt>): a suffix test instead of splitting the tag.
    return tag == name or tag.endswith("}" + name)


def _is_active(entry: dict[str, etree._Element]) -> bool:
    return leaf(entry, "active-tag") in ("*", "+") or "current-active" in entry


def _nexthop(nh: dict[str, etree._Element], row: int, dest: ipaddress.IPv6Network) -> NextHop | None:
    ifname = leaf(nh, "via") or leaf(nh, "nh-local-interface")
    if not ifname:
        return None
    to = leaf(nh, "to")
    if not to:
        return NextHop(ifname=ifname)
    try:
        return NextHop(ifname=ifname, gateway=parse_address(to))
    except ValueError as exc:
        raise JunosParseError(f"rt #{row} ({dest}): bad next-hop <to> {to!r}: {exc}") from exc


def _int(entry: dict[str, etree._Element], name: str, row: int) -> int | None:
    value = leaf(entry, name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise JunosParseError(f"rt #{row}: bad <{name}> {value!r}") from exc


def parse_routes(
    raw: str | bytes | Iterable[bytes], table: str = DEFAULT_TABLE, progress: Progress | None = None
) -> RouteParse:
    """Parse a ``<get-route-information>`` reply incrementally into active IPv6 routes of ``table``."""
    out = RouteParse()
    seen: set[ipaddress.IPv6Network] = set()
    rows = 0
    table_of: dict[int, str] = {}

    def handle(rt_elem: etree._Element) -> None:
        nonlocal rows
        rt_table = rt_elem.getparent()
        if rt_table is None or localname(rt_table.tag) != "route-table":
            return
        rows += 1
        key = id(rt_table)
        if key not in table_of:
            table_of.clear()
            table_of[key] = child_text(rt_table, "table-name")
        if table_of[key] != table:
            out.skipped["other-table"] += 1
            return
        rt = fields(rt_elem)
        dest = _prefix(rt, rows)
        active = next(((e, f) for e in rt_elem if _named(e.tag, "rt-entry")
                       for f in (fields(e),) if _is_active(f)), None)
        if active is None:
            out.skipped["inactive"] += 1
            return
        entry_elem, entry = active
        if dest.is_link_local or dest.is_multicast:
            out.skipped["link-local" if dest.is_link_local else "multicast"] += 1
            return
        nh_type = leaf(entry, "nh-type").lower()
        if nh_type in _SKIP_NH_TYPES:
            out.skipped[_SKIP_NH_TYPES[nh_type]] += 1
            return
        nhs = [fields(nh) for nh in entry_elem if _named(nh.tag, "nh")]
        selected = [nh for nh in nhs if "selected-next-hop" in nh] or nhs
        hops: list[NextHop] = []
        for nh in selected:
            hop = _nexthop(nh, rows, dest)
            if hop is not None and hop not in hops:
                hops.append(hop)
        if not hops:
            out.skipped[f"no-nexthop({nh_type})" if nh_type else "no-nexthop"] += 1
            return
        if dest in seen:
            out.skipped["duplicate"] += 1
            return
        seen.add(dest)
        pref = _int(entry, "preference", rows)
        out.routes.append(
            Route(
                prefix=dest,
                nexthops=tuple(sorted(hops, key=hop_order)),
                protocol=leaf(entry, "protocol-name").lower() or "unknown",
                metric=_int(entry, "metric", rows) or 0,
                extra={"preference": str(pref)} if pref is not None else NO_EXTRA,
            )
        )
        if progress is not None and len(out.routes) % PROGRESS_EVERY == 0:
            progress(len(out.routes), "routes")

    tables_seen: list[str] = []

    def handle_any(elem: etree._Element) -> None:
        if localname(elem.tag) == "route-table":
            # Closing </route-table>: its <rt>s are done; note the table even if it was empty.
            tables_seen.append(child_text(elem, "table-name"))
        else:
            handle(elem)

    stream_records(raw, frozenset(("rt", "route-table")), handle_any, context="get-route-information")
    if table not in tables_seen:
        names = ", ".join(tables_seen) or "none"
        raise JunosParseError(f"get-route-information: no route-table {table!r} in reply (tables: {names})")
    return out


def _up(elem: etree._Element) -> bool:
    return child_text(elem, "oper-status").lower() == "up"


def parse_interfaces(raw: str | bytes | Iterable[bytes]) -> list[Interface]:
    """Parse ``<get-interface-information><terse/>`` into logical units (what routes name as ``via``).

    A logical unit is up when both it and its physical interface are oper-up.  A physical
    interface without units is listed by its own name.
    """
    found: list[Interface] = []

    def handle(phys: etree._Element) -> None:
        name = child_text(phys, "name")
        if not name:
            raise JunosParseError("physical-interface without <name>")
        phys_up = _up(phys)
        units = list(children(phys, "logical-interface"))
        if not units:
            found.append(Interface(name=name, oper_up=phys_up, descr=child_text(phys, "description")))
        for unit in units:
            unit_name = child_text(unit, "name")
            if not unit_name:
                raise JunosParseError(f"logical-interface of {name} without <name>")
            found.append(
                Interface(
                    name=unit_name,
                    oper_up=phys_up and _up(unit),
                    descr=child_text(unit, "description"),
                )
            )

    stream_records(raw, "physical-interface", handle, context="get-interface-information")
    return found


def parse_summary(raw: str | bytes, table: str = DEFAULT_TABLE) -> str:
    """Counts line of ``table`` from ``<get-route-summary-information>`` (the change marker)."""
    parts: list[str] = []

    def handle(rt_table: etree._Element) -> None:
        if child_text(rt_table, "table-name") != table:
            return
        fields = ("destination-count", "total-route-count", "active-route-count",
                  "holddown-route-count", "hidden-route-count")
        parts.extend(f"{f}={child_text(rt_table, f)}" for f in fields)
        for proto in children(rt_table, "protocols"):
            counts = [child_text(proto, f) for f in ("protocol-route-count", "active-route-count")]
            parts.append(f"{child_text(proto, 'protocol-name')}:{'/'.join(counts)}")

    stream_records(raw, "route-table", handle, context="get-route-summary-information")
    if not parts:
        raise JunosParseError(f"get-route-summary-information: no route-table {table!r} in reply")
    return ";".join(parts)
