"""IPv6 forwarding table: longest-prefix match over the router's routes.

Contract used by branching, the worker, sync and the API:

* ``Fib.replace(routes)`` swaps in a whole new generation atomically (readers see the old
  table or the new one, never a mix); ``add``/``remove`` change single prefixes.
* ``Fib.lookup(dst16) -> (route, nexthop) | None`` resolves one destination; with ECMP the
  member is picked deterministically per destination, so a destination sticks to one path.
* ``generation`` increases on every change (caches key on it).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Iterable, Iterator

from engine.model import NextHop, Route

_FULL = (1 << 128) - 1


def pick_member(route: Route, dst16: bytes) -> NextHop:
    """Deterministic ECMP member choice for a destination (stable across generations)."""
    if len(route.nexthops) == 1:
        return route.nexthops[0]
    return route.nexthops[zlib.crc32(dst16) % len(route.nexthops)]


class _Table:
    """One immutable-after-build generation: per prefix length, masked int -> Route."""

    __slots__ = ("by_len", "lengths", "masks")

    def __init__(self, by_len: dict[int, dict[int, Route]]) -> None:
        self.by_len = by_len
        self.lengths = sorted((n for n, d in by_len.items() if d), reverse=True)
        self.masks = {n: (_FULL >> (128 - n)) << (128 - n) if n else 0 for n in self.lengths}


def _index(routes: Iterable[Route]) -> dict[int, dict[int, Route]]:
    by_len: dict[int, dict[int, Route]] = {}
    for r in routes:
        by_len.setdefault(r.prefix.prefixlen, {})[int(r.prefix.network_address)] = r
    return by_len


class Fib:
    """Longest-prefix-match table with a per-destination result cache."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._t = _Table(_index(routes))
        self._cache: dict[bytes, tuple[Route, NextHop] | None] = {}
        self.generation = 1

    def __len__(self) -> int:
        return sum(len(d) for d in self._t.by_len.values())

    def routes(self) -> Iterator[Route]:
        for n in sorted(self._t.by_len):
            yield from self._t.by_len[n].values()

    def replace(self, routes: Iterable[Route]) -> None:
        """Swap in a new generation built off to the side (one reference assignment)."""
        table = _Table(_index(routes))
        self._t, self._cache = table, {}
        self.generation += 1

    def add(self, route: Route) -> None:
        by_len = {n: dict(d) for n, d in self._t.by_len.items()}
        by_len.setdefault(route.prefix.prefixlen, {})[int(route.prefix.network_address)] = route
        self._t, self._cache = _Table(by_len), {}
        self.generation += 1

    def remove(self, prefix: ipaddress.IPv6Network) -> bool:
        d = self._t.by_len.get(prefix.prefixlen, {})
        if int(prefix.network_address) not in d:
            return False
        by_len = {n: dict(v) for n, v in self._t.by_len.items()}
        del by_len[prefix.prefixlen][int(prefix.network_address)]
        self._t, self._cache = _Table(by_len), {}
        self.generation += 1
        return True

    def get(self, prefix: ipaddress.IPv6Network) -> Route | None:
        return self._t.by_len.get(prefix.prefixlen, {}).get(int(prefix.network_address))

    def lookup_route(self, dst16: bytes) -> Route | None:
        """Longest-prefix match without the ECMP choice."""
        t = self._t
        a = int.from_bytes(dst16, "big")
        for n in t.lengths:
            r = t.by_len[n].get(a & t.masks[n])
            if r is not None:
                return r
        return None

    def lookup(self, dst16: bytes) -> tuple[Route, NextHop] | None:
        """Resolve a destination (16 raw bytes) to its route and chosen next hop."""
        cache = self._cache
        try:
            return cache[dst16]
        except KeyError:
            pass
        r = self.lookup_route(dst16)
        res = None if r is None else (r, pick_member(r, dst16))
        if len(cache) > 65536:
            cache.clear()
        cache[dst16] = res
        return res
