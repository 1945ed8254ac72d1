"""The shared model, on the ground floor: every package (engine ← sync ← vlan ← api) names these.

* routes and next hops (the router's IPv6 table, as the forwarding table holds it);
* router interfaces and a snapshot of the router (routes + interfaces, what every source yields);
* the delta between two snapshots (what sync computes and the data plane applies);
* engine links and the link map (router interface -> the engine's link standing for it).

A next hop is what the *router* would use: its real next-hop address and its egress
interface.  The engine needs both: the address to group destinations (RFC 5058 branching
is per next hop) and the interface to pick the engine link (VLAN) that stands for it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# One shared, read-only empty mapping: a fresh dict per route cost ~16 MB at 250k routes.
NO_EXTRA: Mapping[str, str] = MappingProxyType({})


def _no_extra() -> Mapping[str, str]:
    return NO_EXTRA


@dataclass(frozen=True, slots=True)
class NextHop:
    """One forwarding next hop of the router.

    ``gateway`` is the router's next-hop address as 16 raw bytes, or ``None`` for a
    connected (on-link) route, where the destination itself is the next hop.
    ``ifname`` is the router's egress interface name (e.g. ``ge-0/0/1.0``).
    """

    ifname: str
    gateway: bytes | None = None

    def __post_init__(self) -> None:
        if self.gateway is not None and len(self.gateway) != 16:
            raise ValueError(f"next-hop gateway must be 16 bytes, got {len(self.gateway)}")

    @property
    def connected(self) -> bool:
        return self.gateway is None

    def sort_key(self) -> tuple[str, bytes]:
        """Total order usable with connected and gateway hops mixed (connected first)."""
        return (self.ifname, b"" if self.gateway is None else b"\x01" + self.gateway)

    def __lt__(self, other: NextHop) -> bool:
        return self.sort_key() < other.sort_key()

    def __le__(self, other: NextHop) -> bool:
        return self.sort_key() <= other.sort_key()

    def __gt__(self, other: NextHop) -> bool:
        return self.sort_key() > other.sort_key()

    def __ge__(self, other: NextHop) -> bool:
        return self.sort_key() >= other.sort_key()

    def gateway_text(self) -> str | None:
        return None if self.gateway is None else str(ipaddress.IPv6Address(self.gateway))

    def __str__(self) -> str:
        return f"{self.gateway_text() or 'connected'} dev {self.ifname}"


@dataclass(frozen=True, slots=True)
class Route:
    """A route as the router has it: prefix, next hops (several = ECMP), protocol, metric."""

    prefix: ipaddress.IPv6Network
    nexthops: tuple[NextHop, ...]
    protocol: str = "unknown"
    metric: int = 0
    extra: Mapping[str, str] = field(default_factory=_no_extra, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.nexthops:
            raise ValueError(f"route {self.prefix} has no next hop")

    @property
    def key(self) -> ipaddress.IPv6Network:
        return self.prefix

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Routes cross process boundaries (sync diffs to the packet workers, by pipe): the shared
        # read-only NO_EXTRA (a mappingproxy) cannot be pickled, so ``extra`` travels as a dict
        # and an empty one comes back as the shared NO_EXTRA.
        return _route, (self.prefix, self.nexthops, self.protocol, self.metric, dict(self.extra))


def _route(prefix: ipaddress.IPv6Network, nexthops: tuple[NextHop, ...], protocol: str, metric: int,
           extra: dict[str, str]) -> Route:
    """Unpickle a :class:`Route` (see ``Route.__reduce__``)."""
    return Route(prefix, nexthops, protocol, metric, extra or NO_EXTRA)


def ip6(text: str) -> bytes:
    """Parse an IPv6 address to 16 packed bytes (raises ValueError naming the input)."""
    try:
        return ipaddress.IPv6Address(text).packed
    except ipaddress.AddressValueError as exc:
        raise ValueError(f"not an IPv6 address: {text!r}") from exc


# -- the router: interfaces and snapshots (every source yields a Snapshot) --

@dataclass(frozen=True, slots=True)
class Interface:
    """A router interface as the router names it."""

    name: str
    index: int | None = None
    oper_up: bool = True
    descr: str = ""


@dataclass(slots=True)
class Snapshot:
    """All routes plus the interface list, where and when they came from."""

    routes: list[Route]
    interfaces: list[Interface]
    source: str = ""
    fetched_at: float = field(default_factory=time.time)
    duration_s: float = 0.0

    def __repr__(self) -> str:
        # Short on purpose: Python 3.11's asyncio.run reprs the main task's result when it
        # restores the SIGINT handler; a full repr of 10k routes cost ~0.5 s per fetch.
        return (f"Snapshot(source={self.source!r}, routes={len(self.routes)}, "
                f"interfaces={len(self.interfaces)}, fetched_at={self.fetched_at:.3f})")

    def digest(self) -> str:
        """Content digest (routes + interfaces, order-independent), for change detection."""
        h = hashlib.sha256()
        for r in sorted(self.routes, key=lambda r: (r.prefix.network_address.packed, r.prefix.prefixlen)):
            h.update(r.prefix.network_address.packed)
            h.update(bytes([r.prefix.prefixlen]))
            for nh in sorted(r.nexthops):
                h.update(nh.ifname.encode())
                h.update(nh.gateway or b"\0" * 16)
            h.update(f"|{r.protocol}|{r.metric};".encode())
        for i in sorted(self.interfaces, key=lambda i: i.name):
            h.update(f"{i.name}|{i.index}|{i.oper_up};".encode())
        return h.hexdigest()


# -- the delta between two snapshots (sync.diff computes it) --

@dataclass(frozen=True, slots=True)
class RouteChange:
    """One prefix whose next hops, protocol or metric changed."""

    old: Route
    new: Route


@dataclass(slots=True)
class InterfaceDiff:
    """Interface list changes, by interface name."""

    added: list[Interface] = field(default_factory=list)
    removed: list[Interface] = field(default_factory=list)
    oper_changed: list[tuple[Interface, Interface]] = field(default_factory=list)  # (old, new)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.oper_changed)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed),
                "oper_changed": len(self.oper_changed)}


@dataclass(slots=True)
class SnapshotDiff:
    """Result of :func:`diff`: route and interface changes plus table sizes before/after."""

    added: list[Route]
    removed: list[Route]
    changed: list[RouteChange]
    interfaces: InterfaceDiff
    old_count: int
    new_count: int
    new_index: dict[int, Route] = field(default_factory=dict, repr=False)  # prefix_key -> route

    @property
    def empty(self) -> bool:
        """True when nothing at all changed (routes and interfaces)."""
        return not (self.added or self.removed or self.changed) and self.interfaces.empty

    @property
    def route_changes(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)

    @property
    def removed_share(self) -> float:
        """Share of the old table this diff removes (0.0 for an empty old table)."""
        return len(self.removed) / self.old_count if self.old_count else 0.0

    def counts(self) -> dict[str, int]:
        """Flat counters for logs, history and the API."""
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "old_count": self.old_count,
            "new_count": self.new_count,
            "interfaces_added": len(self.interfaces.added),
            "interfaces_removed": len(self.interfaces.removed),
            "interfaces_oper_changed": len(self.interfaces.oper_changed),
        }


# -- engine links: router interface -> the engine's link standing for it (vlan/ builds it) --

@dataclass(frozen=True, slots=True)
class EngineLink:
    """One engine link standing for one router interface."""

    router_ifname: str          # the router's interface name as sync reports it (e.g. ge-0/0/1.0)
    engine_ifname: str          # the engine's kernel interface (e.g. xc-trunk.101, or a veth)
    engine_ifindex: int
    vlan_id: int | None         # None in direct mode
    engine_addr: bytes          # 16 bytes: outer source of copies sent on this link
    router_addr: bytes | None   # 16 bytes: the router's address on this VLAN
    engine_mac: bytes           # 6 bytes: frame source
    router_mac: bytes | None    # 6 bytes: frame destination (None until learned)
    mtu: int = 1500
    oper_up: bool = True


class LinkMap:
    """Immutable lookup by router interface name; swapped whole when vlan/ reconciles."""

    __slots__ = ("_by_router_if",)

    def __init__(self, links: list[EngineLink]) -> None:
        self._by_router_if = {link.router_ifname: link for link in links}

    def for_router_if(self, router_ifname: str) -> EngineLink | None:
        return self._by_router_if.get(router_ifname)

    def source_for(self, router_ifname: str) -> bytes | None:
        """Engine address to write as outer source for copies leaving via this router interface."""
        link = self._by_router_if.get(router_ifname)
        return None if link is None else link.engine_addr

    def links(self) -> list[EngineLink]:
        return list(self._by_router_if.values())
