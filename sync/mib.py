"""Numeric OIDs the SNMP source reads (Debian ships no MIB files, so no names are resolved).

Each constant is a tuple of arcs; a column OID plus a row index gives one instance.
"""

from __future__ import annotations

Oid = tuple[int, ...]

# IP-FORWARD-MIB (RFC 4292) inetCidrRouteTable: the index is
# (destType, destLen, dest..., pfxLen, policyLen, policy..., nextHopType, nextHopLen, nextHop...).
INET_CIDR_ROUTE_NUMBER: Oid = (1, 3, 6, 1, 2, 1, 4, 24, 6, 0)  # Gauge32, all families
INET_CIDR_ROUTE_DISCARDS: Oid = (1, 3, 6, 1, 2, 1, 4, 24, 8, 0)
INET_CIDR_ROUTE_ENTRY: Oid = (1, 3, 6, 1, 2, 1, 4, 24, 7, 1)
INET_CIDR_ROUTE_IFINDEX: Oid = (*INET_CIDR_ROUTE_ENTRY, 7)
INET_CIDR_ROUTE_TYPE: Oid = (*INET_CIDR_ROUTE_ENTRY, 8)
INET_CIDR_ROUTE_PROTO: Oid = (*INET_CIDR_ROUTE_ENTRY, 9)
INET_CIDR_ROUTE_METRIC1: Oid = (*INET_CIDR_ROUTE_ENTRY, 12)
# Only the IPv6 part of each column: destType = ipv6(2), destLen = 16.
INET_ADDR_IPV6 = 2
INET_ADDR_UNKNOWN = 0

# inetCidrRouteType values
ROUTE_TYPE_OTHER = 1
ROUTE_TYPE_REJECT = 2
ROUTE_TYPE_LOCAL = 3  # "next hop is the final destination": directly connected
ROUTE_TYPE_REMOTE = 4
ROUTE_TYPE_BLACKHOLE = 5

# IPV6-MIB (RFC 2465) ipv6RouteTable: index (dest 16 octets, pfxLen, routeIndex); the next hop
# is a column, not part of the index, so several columns must be walked.
IPV6_ROUTE_NUMBER: Oid = (1, 3, 6, 1, 2, 1, 55, 1, 9, 0)
IPV6_ROUTE_ENTRY: Oid = (1, 3, 6, 1, 2, 1, 55, 1, 11, 1)
IPV6_ROUTE_IFINDEX: Oid = (*IPV6_ROUTE_ENTRY, 4)
IPV6_ROUTE_NEXTHOP: Oid = (*IPV6_ROUTE_ENTRY, 5)
IPV6_ROUTE_TYPE: Oid = (*IPV6_ROUTE_ENTRY, 6)  # other(1) discard(2) local(3) remote(4)
IPV6_ROUTE_PROTOCOL: Oid = (*IPV6_ROUTE_ENTRY, 7)
IPV6_ROUTE_METRIC: Oid = (*IPV6_ROUTE_ENTRY, 11)
IPV6_ROUTE_TYPE_DISCARD = 2
IPV6_ROUTE_TYPE_LOCAL = 3

# IF-MIB
IF_DESCR: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1, 2)
IF_OPER_STATUS: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)  # up(1)
IF_NAME: Oid = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1)
IF_TABLE_LAST_CHANGE: Oid = (1, 3, 6, 1, 2, 1, 31, 1, 5, 0)

# IP-MIB (RFC 4293) ipAddressIfIndex, IPv6 part: index (2, 16, addr...) -> the router's own addresses.
IP_ADDRESS_IFINDEX_V6: Oid = (1, 3, 6, 1, 2, 1, 4, 34, 1, 3, 2, 16)

# SNMPv2-MIB
SYS_UPTIME: Oid = (1, 3, 6, 1, 2, 1, 1, 3, 0)

# NET-SNMP-AGENT-MIB nsCacheTimeout (2) / nsCacheStatus (3), indexed by the cached subtree OID (implied).
NS_CACHE_STATUS: Oid = (1, 3, 6, 1, 4, 1, 8072, 1, 5, 3, 1, 3)
NS_CACHE_TIMEOUT: Oid = (1, 3, 6, 1, 4, 1, 8072, 1, 5, 3, 1, 2)
NS_CACHE_EXPIRED = 3

# IANAipRouteProtocol (RFC 4292 / IANA), for Route.protocol.
ROUTE_PROTOCOLS: dict[int, str] = {
    1: "other",
    2: "local",
    3: "static",  # netmgmt
    4: "icmp",
    5: "egp",
    6: "ggp",
    7: "hello",
    8: "rip",
    9: "isis",
    10: "esis",
    11: "igrp",
    12: "bbnspf",
    13: "ospf",
    14: "bgp",
    15: "idpr",
    16: "eigrp",
    17: "dvmrp",
    18: "rpl",
    19: "dhcp",
    20: "ttdp",
}


def oid_text(oid: Oid) -> str:
    """Dotted form of an OID for messages."""
    return ".".join(str(arc) for arc in oid)


def parse_oid(text: str) -> Oid:
    """Parse a dotted OID ('1.3.6...' or '.1.3.6...'); raises ValueError naming the input."""
    try:
        arcs = tuple(int(part) for part in text.strip().lstrip(".").split("."))
    except ValueError as exc:
        raise ValueError(f"not a numeric OID: {text!r}") from exc
    if len(arcs) < 2 or any(a < 0 for a in arcs):
        raise ValueError(f"not a numeric OID: {text!r}")
    return arcs
