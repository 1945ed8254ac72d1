"""Turn walked SNMP columns into routes and interfaces (pure: no I/O, testable from recordings).

What is kept and what is filtered (and why):

* ``inetCidrRouteTable`` rows are decoded from the *index* alone (destination, prefix length,
  next hop); the policy part of the index is skipped, never used as a key: net-snmp puts a
  row counter there (``0.0.N``, it shifts when any route changes), Junos puts ``0.0``.
* Next hop absent (type unknown, length 0, Junos) or ``::`` (net-snmp), or row type
  ``local(3)`` (RFC 4292: "the next hop is the final destination") => connected route,
  ``NextHop.gateway = None``.
* Dropped, with a count in :class:`TableStats`: ``reject(2)``/``blackhole(5)`` rows (a
  discard is not a next hop; Junos also files its own /128s as reject with ifIndex 0),
  rows with ifIndex 0 (no egress interface to map to a VLAN), multicast ``ff00::/8``,
  link-local ``fe80::/10`` prefixes (per-link, never forwarded off-link), ``::1/128`` and
  ``::/128``, and /128 host routes to the router's own addresses (IP-MIB ipAddressTable;
  net-snmp mixes the kernel's local table into the route table).
* Several rows for one prefix: rows with the lowest metric win and become ECMP next hops
  (net-snmp gives one row per multipath next hop); higher-metric rows are standby routes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.model import Interface, NextHop, Route
from sync import mib
from sync.mib import Oid, oid_text
from sync.snmp_ber import Value
from sync.source import SourceError

_MULTICAST = ipaddress.IPv6Network("ff00::/8")
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_UNSPECIFIED = bytes(16)
_LOOPBACK = ipaddress.IPv6Address("::1").packed


@dataclass(slots=True)
class TableStats:
    """What the last conversion kept and dropped, by reason (for operators and tests)."""

    table: str = ""
    rows: int = 0
    routes: int = 0
    nexthops: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    placeholder_ifindexes: list[int] = field(default_factory=list)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class RouteRow(NamedTuple):
    """One decoded route row, independent of which MIB table it came from (cheap to create)."""

    dest: bytes
    prefixlen: int
    gateway: bytes | None  # None: connected / no next hop in the row
    ifindex: int
    route_type: int  # inetCidrRouteType numbering
    proto: int
    metric: int
    column: Oid  # the row's ifIndex instance is column + row_index (joined only for errors)
    row_index: Oid

    @property
    def oid(self) -> Oid:
        return (*self.column, *self.row_index)


def decode_cidr_index(index: Oid, column: Oid) -> tuple[bytes, int, bytes | None]:
    """Decode an IPv6 inetCidrRouteTable index (the part after ``column.2.16``).

    Returns (destination 16 bytes, prefix length, next hop 16 bytes or None).
    """

    def garbage(what: str) -> SourceError:
        return SourceError(f"garbage index in row {oid_text((*column, 2, 16, *index))}: {what}")

    if len(index) < 20:
        raise garbage("too short for an IPv6 route")
    try:
        dest = bytes(index[:16])
    except ValueError:
        raise garbage("destination arc out of 0..255") from None
    prefixlen = index[16]
    if prefixlen > 128:
        raise garbage(f"prefix length {prefixlen} > 128")
    policy_len = index[17]
    pos = 18 + policy_len  # skip the policy: a row position, never a key
    if pos + 2 > len(index):
        raise garbage(f"policy length {policy_len} runs past the end")
    nh_type, nh_len = index[pos], index[pos + 1]
    nh = index[pos + 2 :]
    if len(nh) != nh_len:
        raise garbage(f"next-hop length {nh_len} but {len(nh)} octets follow")
    if nh_len == 0:
        return dest, prefixlen, None
    try:
        raw = bytes(nh)
    except ValueError:
        raise garbage("next hop arc out of 0..255") from None
    if nh_type == mib.INET_ADDR_IPV6 and nh_len == 16:
        gateway = raw
    elif nh_type == 4 and nh_len == 20:  # ipv6z: address + 4-octet zone (the ifIndex names the link)
        gateway = raw[:16]
    elif nh_type == 1 and nh_len == 4:  # IPv4 next hop of an IPv6 route (6PE): IPv4-mapped
        gateway = b"\0" * 10 + b"\xff\xff" + raw
    else:
        raise garbage(f"next-hop type {nh_type} with length {nh_len}")
    return dest, prefixlen, (None if gateway == _UNSPECIFIED else gateway)


def _int_value(value: Value, oid: Oid, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise SourceError(f"garbage value in row {oid_text(oid)}: {what} should be an integer, got {value!r}")


def cidr_rows(
    ifindex_col: list[tuple[Oid, Value]],
    type_col: list[tuple[Oid, Value]] | None = None,
    proto_col: list[tuple[Oid, Value]] | None = None,
    metric_col: list[tuple[Oid, Value]] | None = None,
) -> list[RouteRow]:
    """Rows of the IPv6 part of inetCidrRouteTable; indexes are relative to ``column.2.16``."""
    column = (*mib.INET_CIDR_ROUTE_IFINDEX, 2, 16)
    types = {idx: _int_value(v, (*mib.INET_CIDR_ROUTE_TYPE, 2, 16, *idx), "inetCidrRouteType")
             for idx, v in type_col or ()}
    protos = {idx: _int_value(v, (*mib.INET_CIDR_ROUTE_PROTO, 2, 16, *idx), "inetCidrRouteProto")
              for idx, v in proto_col or ()}
    metrics = {idx: _int_value(v, (*mib.INET_CIDR_ROUTE_METRIC1, 2, 16, *idx), "inetCidrRouteMetric1")
               for idx, v in metric_col or ()}
    rows: list[RouteRow] = []
    append = rows.append
    local, remote = mib.ROUTE_TYPE_LOCAL, mib.ROUTE_TYPE_REMOTE
    for idx, value in ifindex_col:
        if type(value) is not int:
            _int_value(value, (*column, *idx), "inetCidrRouteIfIndex")  # raises, naming the row
        dest, prefixlen, gateway = decode_cidr_index(idx, mib.INET_CIDR_ROUTE_IFINDEX)
        implied = local if gateway is None else remote
        append(RouteRow(
            dest, prefixlen, gateway, value,  # type: ignore[arg-type]  # checked just above
            types.get(idx, implied) if types else implied,
            protos.get(idx, 0) if protos else 0,
            max(metrics.get(idx, 0), 0) if metrics else 0,
            column, idx,
        ))
    return rows


def ipv6_route_rows(
    ifindex_col: list[tuple[Oid, Value]],
    nexthop_col: list[tuple[Oid, Value]],
    type_col: list[tuple[Oid, Value]],
    proto_col: list[tuple[Oid, Value]] | None = None,
    metric_col: list[tuple[Oid, Value]] | None = None,
    stats: TableStats | None = None,
) -> list[RouteRow]:
    """Rows of IPV6-MIB ipv6RouteTable (index: dest 16 octets, prefix length, route index).

    Junos quirks handled: ipv6RouteNextHop is absent for remote routes and 8 zero octets for
    others; a zero/short next hop on a local row means connected, a remote row without a
    usable next hop is dropped and counted as ``no_nexthop`` (it cannot be forwarded).
    """
    nexthops = dict(nexthop_col)
    types = {idx: _int_value(v, (*mib.IPV6_ROUTE_TYPE, *idx), "ipv6RouteType") for idx, v in type_col}
    protos = {idx: _int_value(v, (*mib.IPV6_ROUTE_PROTOCOL, *idx), "ipv6RouteProtocol")
              for idx, v in proto_col or ()}
    metrics = {idx: _int_value(v, (*mib.IPV6_ROUTE_METRIC, *idx), "ipv6RouteMetric")
               for idx, v in metric_col or ()}
    rows: list[RouteRow] = []
    for idx, value in ifindex_col:
        oid = (*mib.IPV6_ROUTE_IFINDEX, *idx)
        ifindex = _int_value(value, oid, "ipv6RouteIfIndex")
        if len(idx) != 18 or idx[16] > 128:
            raise SourceError(f"garbage index in row {oid_text(oid)}: expected dest(16).pfxlen.index")
        try:
            dest = bytes(idx[:16])
        except ValueError:
            raise SourceError(f"garbage index in row {oid_text(oid)}: destination arc > 255") from None
        # ipv6RouteType: other(1) discard(2) local(3) remote(4) -> inetCidrRouteType numbering.
        v6type = types.get(idx, 1)
        route_type = {2: mib.ROUTE_TYPE_REJECT, 3: mib.ROUTE_TYPE_LOCAL, 4: mib.ROUTE_TYPE_REMOTE}.get(
            v6type, mib.ROUTE_TYPE_OTHER
        )
        raw = nexthops.get(idx)
        gateway: bytes | None = None
        if isinstance(raw, bytes) and len(raw) == 16 and raw != _UNSPECIFIED:
            gateway = raw
        elif isinstance(raw, bytes) and any(raw):
            raise SourceError(f"garbage value in row {oid_text((*mib.IPV6_ROUTE_NEXTHOP, *idx))}: "
                              f"next hop of {len(raw)} octets")
        if gateway is None and route_type == mib.ROUTE_TYPE_REMOTE:
            if stats is not None:
                stats.drop("no_nexthop")
            continue
        proto = protos.get(idx, 1)
        if idx[16] == 128 and route_type == mib.ROUTE_TYPE_LOCAL and proto == 2:
            # Junos lists its interface addresses here as local /128s of protocol local and has
            # no ipAddressTable to recognise them by (inetCidrRouteTable marks them reject).
            if stats is not None:
                stats.drop("own_address")
            continue
        metric = metrics.get(idx, 0)
        # ipv6RouteMetric is Unsigned32; Junos sends 4294967295 for "no metric".
        rows.append(RouteRow(dest, idx[16], gateway, ifindex, route_type, proto,
                             0 if metric >= 0xFFFFFFFF else max(metric, 0), mib.IPV6_ROUTE_IFINDEX, idx))
    return rows


def interfaces_from(
    names: list[tuple[Oid, Value]], descrs: list[tuple[Oid, Value]], oper: list[tuple[Oid, Value]]
) -> list[Interface]:
    """IF-MIB ifName (falling back to ifDescr) + ifOperStatus -> interfaces, by ifIndex."""

    def by_index(col: list[tuple[Oid, Value]]) -> dict[int, Value]:
        return {idx[0]: v for idx, v in col if len(idx) == 1}

    name_map = by_index(names)
    descr_map = by_index(descrs)
    oper_map = by_index(oper)
    out: list[Interface] = []
    for ifindex in sorted(set(name_map) | set(descr_map)):
        raw_name = name_map.get(ifindex)
        raw_descr = descr_map.get(ifindex)
        descr = raw_descr.decode("utf-8", "replace") if isinstance(raw_descr, bytes) else ""
        name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else ""
        out.append(Interface(name=name or descr or f"ifindex-{ifindex}", index=ifindex,
                             oper_up=oper_map.get(ifindex) == 1, descr=descr))
    return out


def own_addresses(ip_address_col: Iterable[tuple[Oid, Value]]) -> set[bytes]:
    """IPv6 addresses of the router from ipAddressIfIndex rows indexed under ``.2.16``."""
    out: set[bytes] = set()
    for idx, _ in ip_address_col:
        if len(idx) == 16 and all(0 <= a <= 255 for a in idx):
            out.add(bytes(idx))
    return out


def build_routes(
    rows: list[RouteRow],
    interfaces: list[Interface],
    own: set[bytes],
    *,
    unknown_ifindex: str = "error",
    stats: TableStats | None = None,
    host: str = "",
) -> list[Route]:
    """Filter host-local rows and merge ECMP rows into routes (see module docstring)."""
    stats = stats if stats is not None else TableStats()
    stats.rows += len(rows)
    names = {i.index: i.name for i in interfaces if i.index is not None}
    best: dict[tuple[bytes, int], tuple[int, int, list[NextHop]]] = {}  # key -> metric, proto, nhs
    hop_cache: dict[tuple[str, bytes | None], NextHop] = {}  # many routes share a next hop
    missing: dict[int, Oid] = {}
    for row in rows:
        if row.route_type in (mib.ROUTE_TYPE_REJECT, mib.ROUTE_TYPE_BLACKHOLE):
            stats.drop("discard")
            continue
        first = row.dest[0]
        if first == 0xFF:
            stats.drop("multicast")
            continue
        if first == 0xFE and row.dest[1] & 0xC0 == 0x80:
            stats.drop("link_local")
            continue
        if row.prefixlen == 128 and (row.dest in own or row.dest in (_LOOPBACK, _UNSPECIFIED)):
            stats.drop("own_address")
            continue
        if row.ifindex == 0:
            stats.drop("no_interface")
            continue
        name = names.get(row.ifindex)
        if name is None:
            if row.ifindex not in missing:
                missing[row.ifindex] = row.oid
            if unknown_ifindex == "error":
                continue
            name = f"ifindex-{row.ifindex}"
        gateway = None if row.route_type == mib.ROUTE_TYPE_LOCAL else row.gateway
        key = (row.dest, row.prefixlen)
        hop = hop_cache.get((name, gateway))
        if hop is None:
            hop = hop_cache[(name, gateway)] = NextHop(ifname=name, gateway=gateway)
        current = best.get(key)
        if current is None or row.metric < current[0]:
            best[key] = (row.metric, row.proto, [hop])
        elif row.metric == current[0] and hop not in current[2]:
            current[2].append(hop)
    if missing and unknown_ifindex == "error":
        shown = ", ".join(f"{i} (row {oid_text(o)})" for i, o in list(missing.items())[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise SourceError(
            f"{host}: route rows name ifIndex not in IF-MIB ifName/ifDescr: {shown}{more} "
            "(use unknown_ifindex=placeholder to accept them as 'ifindex-N')"
        )
    stats.placeholder_ifindexes = sorted(missing)
    routes: list[Route] = []
    protocol_names = {0: "unknown", **mib.ROUTE_PROTOCOLS}  # 0: proto column not walked
    for (dest, prefixlen), (metric, proto, hops) in sorted(best.items()):
        try:
            prefix = ipaddress.IPv6Network((dest, prefixlen))
        except ValueError:
            # Host bits set: agents do this (e.g. a /64 shown with its full address); mask them.
            prefix = ipaddress.IPv6Network((dest, prefixlen), strict=False)
        protocol = protocol_names.get(proto) or protocol_names.setdefault(proto, f"proto-{proto}")
        routes.append(Route(prefix=prefix, nexthops=tuple(sorted(hops)) if len(hops) > 1 else (hops[0],),
                            protocol=protocol, metric=metric))
        stats.nexthops += len(hops)
    stats.routes = len(routes)
    return routes
