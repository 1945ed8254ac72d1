"""The ``[links]`` section: the engine links standing for the router's interfaces (owned by vlan/).

One model (:class:`LinksConfig`) and one set of rules, used by the daemon's configuration
(api/config.py gathers this section's problems with the others), ``xcast6-engine config check``
and ``xcast6-engine interfaces plan|apply|show``.  Every problem is reported at once, naming the
field (``links.map[1].vlan: VLAN 7 already used by links.map[0]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Literal

from engine.settings import (
    Field,
    Invalid,
    Spec,
    check_table,
    choice,
    ifname,
    integer,
    name_list,
    prefix6,
    string,
    unicast6,
)

Mode = Literal["vlan", "direct"]
MODES: tuple[str, ...] = ("vlan", "direct")
VLAN_MIN, VLAN_MAX = 1, 4094
IFNAMSIZ = 15  # kernel interface names are at most 15 bytes
PREFIX_MAX = IFNAMSIZ - 4  # the VLAN id (up to 4 digits) is appended to the name prefix


class PlanError(ValueError):
    """A configuration or allocation problem, naming the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class LinksConfigError(PlanError):
    """The ``[links]`` section has problems; ``problems`` lists every one (``field: message``)."""

    def __init__(self, problems: list[str]) -> None:
        first_field, _, first_message = problems[0].partition(": ")
        super().__init__(first_field, "; ".join([first_message, *problems[1:]]))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One operator mapping line: router interface name or glob -> link parameters (any may be None)."""

    router_if: str
    vlan_id: int | None = None
    subnet: IPv6Network | None = None
    engine_addr: IPv6Address | None = None
    router_addr: IPv6Address | None = None
    link: str | None = None  # direct mode: the existing engine interface for this router interface


@dataclass(frozen=True, slots=True)
class LinksConfig:
    """The ``[links]`` section of the engine configuration, validated."""

    mode: Mode = "vlan"
    trunk: str | None = None
    name_prefix: str = "xc-v"
    vlan_range: tuple[int, int] | None = None
    pool: IPv6Network | None = None
    subnet_prefixlen: int = 64
    engine_host: int = 1  # engine address = subnet base + engine_host
    router_host: int = 2  # router address = subnet base + router_host
    exclude: tuple[str, ...] = ()
    entries: tuple[MapEntry, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "links") -> LinksConfig:
        """Validate a parsed ``[links]`` table; raises :class:`LinksConfigError` naming every field."""
        config, problems = parse_links(raw, where)
        if config is None:
            raise LinksConfigError(problems)
        return config

    def summary(self) -> dict[str, Any]:
        """A JSON-able view (for logs and ``config check``)."""
        return {
            "mode": self.mode,
            "trunk": self.trunk,
            "name_prefix": self.name_prefix,
            "vlan_range": None if self.vlan_range is None else list(self.vlan_range),
            "pool": None if self.pool is None else str(self.pool),
            "subnet_prefixlen": self.subnet_prefixlen,
            "engine_host": self.engine_host,
            "router_host": self.router_host,
            "exclude": list(self.exclude),
            "map": [
                {
                    "router_if": e.router_if,
                    "vlan": e.vlan_id,
                    "subnet": None if e.subnet is None else str(e.subnet),
                    "engine_addr": None if e.engine_addr is None else str(e.engine_addr),
                    "router_addr": None if e.router_addr is None else str(e.router_addr),
                    "link": e.link,
                }
                for e in self.entries
            ],
        }


def _name_prefix(v: object) -> str:
    if not isinstance(v, str) or not re.fullmatch(rf"[^\s/:]{{1,{PREFIX_MAX}}}", v):
        raise Invalid(f"must be 1-{PREFIX_MAX} characters of an interface name (the VLAN id is appended)")
    return v


def _vlan_range(v: object) -> tuple[int, int]:
    if (
        not isinstance(v, list | tuple)
        or len(v) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
        raise Invalid("must be a list of two VLAN ids [first, last]")
    lo, hi = v
    if not VLAN_MIN <= lo <= hi <= VLAN_MAX:
        raise Invalid(f"must satisfy {VLAN_MIN} <= first <= last <= {VLAN_MAX}")
    return (lo, hi)


LINK_KEYS: Spec = {
    "mode": Field(choice(*MODES), "mode"),
    "trunk": Field(ifname, "trunk"),
    "name_prefix": Field(_name_prefix, "name_prefix"),
    "vlan_range": Field(_vlan_range, "vlan_range"),
    "pool": Field(prefix6, "pool"),
    "subnet_prefixlen": Field(integer(1, 127, "integer prefix length"), "subnet_prefixlen"),
    "engine_host": Field(integer(1, 2**64, "integer host number inside a subnet"), "engine_host"),
    "router_host": Field(integer(1, 2**64, "integer host number inside a subnet"), "router_host"),
    "exclude": Field(name_list, "exclude"),
}
MAP_KEYS: Spec = {
    "router_if": Field(string, "router_if"),
    "vlan": Field(integer(VLAN_MIN, VLAN_MAX, "integer VLAN id"), "vlan_id"),
    "subnet": Field(prefix6, "subnet"),
    "engine_addr": Field(unicast6, "engine_addr"),
    "router_addr": Field(unicast6, "router_addr"),
    "link": Field(ifname, "link"),
}


def parse_links(raw: Mapping[str, Any], where: str = "links") -> tuple[LinksConfig | None, list[str]]:
    """Validate a ``[links]`` table: (config, []) or (None, every problem found)."""
    problems: list[str] = []
    body = dict(raw)
    raw_map = body.pop("map", [])
    values = check_table(body, {**LINK_KEYS, "map": Field(string, "map")}, f"{where}.", problems)
    entries: list[tuple[int, MapEntry]] = []
    if not isinstance(raw_map, list | tuple) or not all(isinstance(e, Mapping) for e in raw_map):
        problems.append(f"{where}.map: must be an array of tables [[{where}.map]]")
    else:
        for i, entry in enumerate(raw_map):
            at = f"{where}.map[{i}]."
            got = check_table(entry, MAP_KEYS, at, problems)
            if "router_if" not in got:
                if "router_if" not in entry:
                    problems.append(f"{at}router_if: missing (the router interface name or glob)")
                continue
            entries.append((i, MapEntry(**got)))
    problems += _rules(values, entries, where, set(body))
    if problems:
        return None, problems
    return LinksConfig(**values, entries=tuple(e for _, e in entries)), []


def _rules(values: dict[str, Any], entries: list[tuple[int, MapEntry]], where: str, given: set[str]
           ) -> list[str]:
    """Rules across keys (each names the field at fault; a key already reported bad is not
    reported again as missing, and a bad mode skips the rules that depend on it)."""
    out: list[str] = []
    mode = values.get("mode", "vlan" if "mode" not in given else None)
    if mode == "vlan" and "trunk" not in given:
        out.append(f"{where}.trunk: missing: required in vlan mode (the 802.1Q trunk towards the router)")
    if mode == "vlan" and not entries and "vlan_range" not in values:
        out.append(f"{where}.map: missing (give a mapping: [[{where}.map]] entries, or a {where}.vlan_range "
                   "to allocate from)")
    if mode == "direct" and not entries:
        out.append(
            f"{where}.map: missing (mode 'direct' needs one [[{where}.map]] entry per router interface)"
        )
    plen = values.get("subnet_prefixlen", 64)
    pool = values.get("pool")
    if pool is not None and pool.prefixlen > plen:
        out.append(f"{where}.pool: {pool} is smaller than one /{plen} subnet")
    for key, default in (("engine_host", 1), ("router_host", 2)):
        host = values.get(key, default)
        if host >= 2 ** (128 - plen):
            out.append(f"{where}.{key}: {host} is not allowed: must be a host number inside a /{plen}")
    if values.get("engine_host", 1) == values.get("router_host", 2):
        out.append(f"{where}.router_host: must differ from {where}.engine_host")
    seen_name: dict[str, int] = {}
    seen_vlan: dict[int, int] = {}
    seen_link: dict[str, int] = {}
    for i, m in entries:
        at = f"{where}.map[{i}]"
        if m.router_if in seen_name:
            first = seen_name[m.router_if]
            out.append(f"{at}.router_if: {m.router_if!r} already mapped by {where}.map[{first}]")
        seen_name.setdefault(m.router_if, i)
        if mode == "direct":
            if m.link is None:
                out.append(f"{at}.link: missing: required in direct mode (the existing engine interface)")
            if m.vlan_id is not None:
                out.append(f"{at}.vlan: only meaningful in mode 'vlan'")
        elif m.link is not None:
            out.append(f"{at}.link: only meaningful in mode 'direct'")
        if m.link is not None and any(ch in m.router_if for ch in "*?["):
            out.append(f"{at}.router_if: {m.router_if!r}: a pattern cannot map to one fixed link")
        if m.engine_addr is not None and m.subnet is None:
            out.append(f"{at}.subnet: missing (required when engine_addr is given)")
        if m.subnet is not None:
            for name in ("engine_addr", "router_addr"):
                addr = getattr(m, name)
                if addr is not None and addr not in m.subnet:
                    out.append(f"{at}.{name}: {str(addr)!r} is not inside subnet {m.subnet}")
        if m.engine_addr is not None and m.engine_addr == m.router_addr:
            out.append(f"{at}.router_addr: {str(m.router_addr)!r} is the same as engine_addr")
        if m.vlan_id is not None:
            if m.vlan_id in seen_vlan:
                out.append(f"{at}.vlan: VLAN {m.vlan_id} already used by {where}.map[{seen_vlan[m.vlan_id]}]")
            seen_vlan.setdefault(m.vlan_id, i)
        if m.link is not None:
            if m.link in seen_link:
                out.append(f"{at}.link: {m.link} already used by {where}.map[{seen_link[m.link]}]")
            seen_link.setdefault(m.link, i)
    return out
