"""SNMP route source: mirror a router's IPv6 table from IP-FORWARD-MIB / IPV6-MIB + IF-MIB.

``SnmpSource.from_url("snmp://public@[2001:db8::1]")`` or
``SnmpSource.from_url("snmpv3://ops@router?auth_proto=sha256&priv_proto=aes128")`` (keys from
the query or XCAST6_SNMP_AUTH_KEY / XCAST6_SNMP_PRIV_KEY).

A fetch walks the IPv6 part (``.2.16``) of inetCidrRouteTable: every destination, prefix
length and next hop is in the row index, so the ifIndex column alone gives the table
(``columns=index``, the default: each extra column costs the agent a whole extra pass, see
bench/bench_snmp.py).  ``columns=type`` adds inetCidrRouteType (reject/blackhole rows that
carry an ifIndex), ``columns=full`` adds proto and metric1 too; only with metric can rows of
one prefix with different metrics (standby routes, which net-snmp lists) be told from ECMP.
If the agent has no IPv6 rows there, ipv6RouteTable is walked.
Interfaces come from IF-MIB; the router's own addresses from IP-MIB ipAddressTable (to drop
its /128 host routes).  Any failure raises :class:`SourceError`; nothing partial is returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from engine.model import Snapshot
from sync import mib
from sync.mib import Oid
from sync.snmp_ber import EXCEPTIONS, Value
from sync.snmp_table import (
    RouteRow,
    TableStats,
    build_routes,
    cidr_rows,
    interfaces_from,
    ipv6_route_rows,
    own_addresses,
)
from sync.snmp_url import SnmpConfig, parse_snmp_url
from sync.snmp_walk import Walker, make_walker
from sync.source import Credentials, Progress, SourceError

_V6 = (2, 16)


async def _no_rows() -> list[RouteRow]:
    return []


async def _gather(*coros: Coroutine[Any, Any, Any]) -> list[Any]:
    """asyncio.gather that cancels (and waits for) the other walks when one fails."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class SnmpSource:
    """A router read over SNMP (implements :class:`sync.source.RouteSource`)."""

    def __init__(
        self, config: SnmpConfig, walker_factory: Callable[[SnmpConfig], Walker] = make_walker
    ) -> None:
        self.config = config
        self.url = config.display_url()  # never carries a secret
        self._walker_factory = walker_factory
        self.last_stats = TableStats()

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None,
                 credentials: Credentials | None = None) -> SnmpSource:
        """Build from ``snmp://`` / ``snmpv3://``; raises SnmpUrlError (a ValueError) naming bad fields."""
        return cls(parse_snmp_url(url, env, credentials))

    def __repr__(self) -> str:
        return f"SnmpSource({self.url!r})"

    async def fetch(self, progress: Progress | None = None) -> Snapshot:
        """Walk routes and interfaces; a complete :class:`Snapshot` or :class:`SourceError`."""
        started = time.monotonic()
        walker = self._walker_factory(self.config)
        try:
            snapshot = await self._fetch(walker, progress)
        except SourceError:
            raise
        except (OSError, ValueError) as exc:  # anything unforeseen still names the agent
            raise SourceError(f"{self.url}: {type(exc).__name__}: {exc}", _kind(exc)) from None
        finally:
            await walker.close()
        snapshot.duration_s = time.monotonic() - started
        return snapshot

    async def _fetch(self, walker: Walker, progress: Progress | None) -> Snapshot:
        def report(phase: str) -> Callable[[int], None] | None:
            if progress is None:
                return None
            return lambda n: progress(n, phase)

        # Interfaces, own addresses and the route column in parallel: one agent, but the round
        # trips overlap.
        want_cidr = self.config.table in ("auto", "inetcidr")
        names, descrs, oper, own_col, rows = await _gather(
            walker.walk(mib.IF_NAME), walker.walk(mib.IF_DESCR), walker.walk(mib.IF_OPER_STATUS),
            walker.walk(mib.IP_ADDRESS_IFINDEX_V6),
            self._walk_cidr(walker, report("routes")) if want_cidr else _no_rows(),
        )
        interfaces = interfaces_from(names, descrs, oper)
        if progress is not None:
            progress(len(interfaces), "interfaces")
        own = own_addresses(own_col)
        stats = TableStats(table="inetCidrRouteTable" if want_cidr else "")
        if not rows and self.config.table in ("auto", "ipv6"):
            ifindex_col = await walker.walk(mib.IPV6_ROUTE_IFINDEX, report("routes"))
            if ifindex_col or self.config.table == "ipv6":
                stats.table = "ipv6RouteTable"
                nexthop, types, protos, metrics = await _gather(
                    walker.walk(mib.IPV6_ROUTE_NEXTHOP), walker.walk(mib.IPV6_ROUTE_TYPE),
                    walker.walk(mib.IPV6_ROUTE_PROTOCOL), walker.walk(mib.IPV6_ROUTE_METRIC),
                )
                rows = ipv6_route_rows(ifindex_col, nexthop, types, protos, metrics, stats)
        routes = build_routes(rows, interfaces, own, unknown_ifindex=self.config.unknown_ifindex,
                              stats=stats, host=self.url)
        self.last_stats = stats
        return Snapshot(routes=routes, interfaces=interfaces, source=self.url)

    async def _walk_cidr(self, walker: Walker, on_rows: Callable[[int], None] | None) -> list[RouteRow]:
        ifindex_oid = (*mib.INET_CIDR_ROUTE_IFINDEX, *_V6)
        if self.config.columns == "index":
            # Decode rows batch by batch while the agent works on the next reply.
            decoded: list[RouteRow] = []
            await walker.walk(ifindex_oid, on_rows, lambda batch: decoded.extend(cidr_rows(batch)))
            return decoded
        walks = [walker.walk(ifindex_oid, on_rows)]
        if self.config.columns in ("type", "full"):
            walks.append(walker.walk((*mib.INET_CIDR_ROUTE_TYPE, *_V6)))
        if self.config.columns == "full":
            walks += [walker.walk((*mib.INET_CIDR_ROUTE_PROTO, *_V6)),
                      walker.walk((*mib.INET_CIDR_ROUTE_METRIC1, *_V6))]
        results = await _gather(*walks)
        ifindex_col = results[0]
        type_col = results[1] if len(results) > 1 else None
        proto_col = results[2] if len(results) > 2 else None
        metric_col = results[3] if len(results) > 3 else None
        return cidr_rows(ifindex_col, type_col, proto_col, metric_col)

    async def change_marker(self) -> str | None:
        """A value that changes when the router's IPv6 table changes (see ``marker=`` in the URL).

        ``marker=counts`` (default, one GET + a walk of ifOperStatus): inetCidrRouteNumber and
        ipv6RouteNumber change when routes are added or removed, the ifOperStatus column on
        link events (the usual cause of route changes at the edge); both exist on Junos,
        IOS/IOS-XE/XR and net-snmp.  A route replaced in place (same count, new next hop) is
        only caught by ``marker=column`` or by the periodic full fetch.
        ``marker=column``: a digest of the IPv6 inetCidrRouteIfIndex column; its index holds
        every prefix and next hop, so any change shows, at the cost of one column walk.
        """
        walker = self._walker_factory(self.config)
        try:
            scalars: list[tuple[Oid, Value]] = await walker.get(
                [mib.INET_CIDR_ROUTE_NUMBER, mib.IPV6_ROUTE_NUMBER]
            )
            oper = await walker.walk(mib.IF_OPER_STATUS)
            column: list[tuple[Oid, Value]] = []
            if self.config.marker == "column":
                if self.config.table != "ipv6":
                    column = await walker.walk((*mib.INET_CIDR_ROUTE_IFINDEX, *_V6))
                if not column and self.config.table != "inetcidr":
                    column = await walker.walk(mib.IPV6_ROUTE_IFINDEX)  # IPV6-MIB-only agents
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.url}: {type(exc).__name__}: {exc}", _kind(exc)) from None
        finally:
            await walker.close()
        parts = [f"{'.'.join(map(str, oid[-3:]))}={'-' if value in EXCEPTIONS else value!r}"
                 for oid, value in scalars]
        parts.append("ifOper=" + hashlib.sha256(repr(oper).encode()).hexdigest()[:16])
        if self.config.marker == "column":
            parts.append("routes=" + hashlib.sha256(repr(column).encode()).hexdigest()[:16])
        return ";".join(parts)


def _kind(exc: Exception) -> str:
    """A socket error means the agent cannot be reached; anything else is a bad answer."""
    return SourceError.UNREACHABLE if isinstance(exc, OSError) else SourceError.FAILED
