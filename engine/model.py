"""Route model shared by the forwarding table (engine/), sync/ and the APIs.

A next hop is what the *router* would use: its real next-hop address and its egress
interface.  The engine needs both: the address to group destinations (RFC 5058 branching
is per next hop) and the interface to pick the engine link (VLAN) that stands for it.
"""

from __future__ import annotations

import ipaddress
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
