"""Route files for ``explain`` and ``demo``: the router's table written by hand.

Text form, one route (or ECMP member) per line, ``#`` starts a comment::

    # prefix            next-hop        interface
    2001:db8:1::/48     fe80::1         ge-0/0/1.0
    2001:db8:3::/64     connected       ge-0/0/3.0      # on-link: each destination its own next hop
    ::/0                2001:db8:ff::1  xe-1/0/0.0

Repeating a prefix adds an ECMP member.  ``connected``, ``-`` or ``direct`` mean on-link.
JSON form: a list (or ``{"routes": [...]}``) of ``{"prefix", "next_hop", "interface"}`` objects.
Errors name the line (or item) and the field.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from engine.model import NextHop, Route

_CONNECTED = {"connected", "-", "direct", "onlink", "on-link"}


class RouteFileError(ValueError):
    """A route file line/item is invalid; the message names where and which field."""


def _route_parts(where: str, prefix: str, nexthop: str, ifname: str) -> tuple[ipaddress.IPv6Network, NextHop]:
    try:
        net = ipaddress.IPv6Network(prefix, strict=True)
    except ValueError as exc:
        raise RouteFileError(f"{where}: prefix {prefix!r} is not an IPv6 prefix ({exc})") from None
    if not ifname:
        raise RouteFileError(f"{where}: interface is empty")
    if nexthop.lower() in _CONNECTED:
        return net, NextHop(ifname)
    try:
        gw = ipaddress.IPv6Address(nexthop)
    except ValueError:
        raise RouteFileError(f"{where}: next-hop {nexthop!r} is not an IPv6 address or 'connected'") from None
    return net, NextHop(ifname, gw.packed)


def _collect(items: list[tuple[ipaddress.IPv6Network, NextHop]]) -> list[Route]:
    by_prefix: dict[ipaddress.IPv6Network, list[NextHop]] = {}
    for net, nh in items:
        members = by_prefix.setdefault(net, [])
        if nh not in members:
            members.append(nh)
    return [Route(net, tuple(nhs), protocol="file") for net, nhs in by_prefix.items()]


def parse_text(text: str, source: str = "routes") -> list[Route]:
    """Parse the text form."""
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        fields = body.split()
        if len(fields) != 3:
            raise RouteFileError(
                f"{source}:{lineno}: expected 'prefix next-hop interface', got {len(fields)} field(s)"
            )
        items.append(_route_parts(f"{source}:{lineno}", *fields))
    return _collect(items)


def parse_json(text: str, source: str = "routes") -> list[Route]:
    """Parse the JSON form."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RouteFileError(f"{source}: not valid JSON ({exc})") from None
    if isinstance(doc, dict):
        doc = doc.get("routes")
    if not isinstance(doc, list):
        raise RouteFileError(f"{source}: expected a list of routes or {{'routes': [...]}}")
    items = []
    for k, item in enumerate(doc):
        where = f"{source}: route #{k}"
        if not isinstance(item, dict):
            raise RouteFileError(f"{where}: expected an object")
        for key in ("prefix", "interface"):
            if not isinstance(item.get(key), str):
                raise RouteFileError(f"{where}: field {key!r} missing or not a string")
        nh = item.get("next_hop", item.get("nexthop", "connected"))
        if nh is None:
            nh = "connected"
        if not isinstance(nh, str):
            raise RouteFileError(f"{where}: field 'next_hop' is not a string")
        items.append(_route_parts(where, item["prefix"], nh, item["interface"]))
    return _collect(items)


def load(path: str | Path) -> list[Route]:
    """Load a route file, JSON if it starts with ``[``/``{``, else text."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RouteFileError(f"cannot read route file {p}: {exc.strerror}") from None
    if text.lstrip()[:1] in ("[", "{"):
        return parse_json(text, str(p))
    return parse_text(text, str(p))
