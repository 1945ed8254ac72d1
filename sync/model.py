"""Normalized snapshot of a router: its IPv6 routes and its interfaces.

Every source (SNMP, NETCONF flavours) produces a :class:`Snapshot`; diff, apply and the
store only ever see this model.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from engine.model import Route


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
