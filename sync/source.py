"""What every route source (SNMP, NETCONF/Junos, NETCONF/ietf-routing) provides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from engine.model import Snapshot

# progress(rows_so_far, phase) -- phase is a short word such as "routes" or "interfaces".
Progress = Callable[[int, str], None]


class SourceError(Exception):
    """A fetch failed; the message names what failed (host, OID/RPC, field). Never partial data."""


class RouteSource(Protocol):
    """A router the engine mirrors."""

    url: str

    async def fetch(self, progress: Progress | None = None) -> Snapshot:
        """Read the whole IPv6 table and interface list, or raise SourceError."""
        ...

    async def change_marker(self) -> str | None:
        """A cheap value that changes when the router's table changes (None if unsupported)."""
        ...
