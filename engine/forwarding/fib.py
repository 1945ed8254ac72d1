"""IPv6 forwarding table: longest-prefix match over the router's routes.

Contract used by branching, the worker, sync and the API:

* ``Fib.replace(routes)`` swaps in a whole new generation atomically (readers see the old
  table or the new one, never a mix); ``add``/``remove`` change single prefixes and
  ``update`` applies a batch of both as one generation.
* ``Fib.lookup(dst16) -> (route, nexthop) | None`` resolves one destination; with ECMP the
  member is picked deterministically per destination, so a destination sticks to one path.
* ``generation`` increases on every change (caches key on it).
* ``Fib.snapshot()`` returns the current generation as an immutable :class:`FibSnapshot`;
  resolving all destinations of one packet against one snapshot gives a consistent answer
  even while sync changes the table.

Layout of one generation: per prefix length, 1,024 *shards* (dicts ``masked int -> Route``).
A change copies only the one shard (and the 1,024-slot shard list) it touches, so an
incremental change at 250,000 routes costs microseconds instead of copying a 200,000-entry
``/48`` dict, while every generation stays immutable for the readers that still hold it.

Lookup walks lengths longest first, but not all of them: prefixes longer than /32 are
indexed by their /32 (*bucket*: the set of long lengths present under that /32), so a
destination probes only the long lengths that exist in its /32, then the (few) lengths
<= /32.  Long prefixes are sharded by the low 10 bits of their /32 (so one bucket's routes of
a length sit in one shard and a removal can tell whether the length is still present);
short ones by the last 10 bits of the prefix.

Next-hop groups: every distinct ``Route.nexthops`` tuple (and every ``NextHop``) is interned,
so the 250,000 routes of an Internet table share a few hundred group objects; a stored route
whose tuple is not the interned one is rebuilt around it.
"""

from __future__ import annotations

import ipaddress
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import Final

from engine.model import NextHop, Route

_FULL: Final = (1 << 128) - 1
SHARD_BITS: Final = 10
_SHARDS: Final = 1 << SHARD_BITS
_SHARD_MASK: Final = _SHARDS - 1
LONG: Final = 32          # lengths above this are indexed per /32 bucket
_TOP_SHIFT: Final = 128 - LONG
DEFAULT_CACHE_SIZE: Final = 65536

Result = tuple[Route, NextHop]
Shards = list[dict[int, Route]]
# One probe step of the short-prefix walk: (prefix mask, shift to the shard bits, the shards).
_Probe = tuple[int, int, Shards]

# Shared by every unused shard slot.  Never written: changes always copy a shard first.
_EMPTY_SHARD: dict[int, Route] = {}
_MISS: Final = object()


def _mask(length: int) -> int:
    return (_FULL >> (128 - length)) << (128 - length) if length else 0


_MASKS: Final = tuple(_mask(n) for n in range(129))


def pick_member(route: Route, dst16: bytes) -> NextHop:
    """Deterministic ECMP member choice for a destination (stable across generations)."""
    nexthops = route.nexthops
    if len(nexthops) == 1:
        return nexthops[0]
    return nexthops[zlib.crc32(dst16) % len(nexthops)]


def _key(prefix: ipaddress.IPv6Network) -> tuple[int, int, int]:
    """(prefix length, masked network as int, shard index) for one prefix."""
    if not isinstance(prefix, ipaddress.IPv6Network):
        raise TypeError(f"route prefix must be an IPv6Network, got {type(prefix).__name__}: {prefix!r}")
    length = prefix.prefixlen
    key = int(prefix.network_address)
    return length, key, (key >> (_TOP_SHIFT if length > LONG else 128 - length)) & _SHARD_MASK


# Bucket length tuples are interned: only a handful of distinct combinations exist.
_LEN_TUPLES: dict[tuple[int, ...], tuple[int, ...]] = {}


def _lens(lengths: Iterable[int]) -> tuple[int, ...]:
    t = tuple(sorted(set(lengths), reverse=True))
    return _LEN_TUPLES.setdefault(t, t)


class NextHopGroups:
    """Interning table: equal next hops and equal next-hop tuples become one shared object.

    Only writers (the holder of ``Fib``'s write lock) call :meth:`intern`.
    """

    __slots__ = ("_groups", "_nexthops")

    def __init__(self) -> None:
        self._groups: dict[tuple[NextHop, ...], tuple[NextHop, ...]] = {}
        self._nexthops: dict[NextHop, NextHop] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def intern(self, nexthops: tuple[NextHop, ...]) -> tuple[NextHop, ...]:
        """Return the shared tuple equal to ``nexthops`` (registering it when new)."""
        group = self._groups.get(nexthops)
        if group is None:
            nh = self._nexthops
            members = tuple(nh.setdefault(h, h) for h in nexthops)
            # Adopt the caller's tuple when its members already are the shared ones, so the
            # first route of a group is stored as given (no copy).
            same = all(a is b for a, b in zip(members, nexthops, strict=True))
            group = nexthops if same else members
            self._groups[group] = group
        return group

    def intern_route(self, route: Route) -> Route:
        """``route`` itself when its tuple already is the shared one, else an equal copy using it."""
        group = self.intern(route.nexthops)
        if group is route.nexthops:
            return route
        return Route(route.prefix, group, route.protocol, route.metric, route.extra)


class FibSnapshot:
    """One immutable generation of the table plus its own lookup cache.

    Readers may keep a snapshot as long as they like; writers never modify one, they build
    the next generation beside it (sharing the unchanged shards).
    """

    __slots__ = ("_long", "_short", "buckets", "cache", "cache_size", "counts", "generation", "shards")

    def __init__(
        self,
        shards: dict[int, Shards],
        counts: dict[int, int],
        buckets: list[dict[int, tuple[int, ...]]],
        generation: int,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.shards = shards
        self.counts = counts
        self.buckets = buckets  # 1,024 shards: /32 as int -> long lengths present, longest first
        self.generation = generation
        self.cache: dict[bytes, Result | None] = {}
        self.cache_size = cache_size
        lengths = sorted((n for n, c in counts.items() if c), reverse=True)
        self._long: dict[int, tuple[int, Shards]] = {n: (_MASKS[n], shards[n]) for n in lengths if n > LONG}
        self._short: tuple[_Probe, ...] = tuple(
            (_MASKS[n], 128 - n, shards[n]) for n in lengths if n <= LONG
        )

    def __len__(self) -> int:
        return sum(self.counts.values())

    @property
    def lengths(self) -> list[int]:
        """Prefix lengths present, longest first."""
        return sorted((n for n, c in self.counts.items() if c), reverse=True)

    def routes(self) -> Iterator[Route]:
        """Every route, shortest prefix length first (order within a length is unspecified)."""
        for n in sorted(self.shards):
            for shard in self.shards[n]:
                yield from shard.values()

    def get(self, prefix: ipaddress.IPv6Network) -> Route | None:
        """The route for exactly this prefix, if any."""
        length, key, idx = _key(prefix)
        shards = self.shards.get(length)
        return None if shards is None else shards[idx].get(key)

    def lookup_route(self, dst16: bytes) -> Route | None:
        """Longest-prefix match without the ECMP choice (no cache)."""
        a = int.from_bytes(dst16, "big")
        top = a >> _TOP_SHIFT
        sidx = top & _SHARD_MASK
        lens = self.buckets[sidx].get(top)
        if lens is not None:
            long = self._long
            for n in lens:
                mask, shards = long[n]
                r = shards[sidx].get(a & mask)
                if r is not None:
                    return r
        for mask, shift, shards in self._short:
            r = shards[(a >> shift) & _SHARD_MASK].get(a & mask)
            if r is not None:
                return r
        return None

    def lookup(self, dst16: bytes) -> Result | None:
        """Resolve a destination (16 raw bytes) to its route and chosen next hop (cached)."""
        res = self.cache.get(dst16, _MISS)
        if res is _MISS:
            return self._miss(dst16)
        return res  # type: ignore[return-value]

    def _miss(self, dst16: bytes) -> Result | None:
        if len(dst16) != 16:
            raise ValueError(f"destination must be 16 bytes, got {len(dst16)}")
        # Same walk as lookup_route, inlined: this is the per-new-destination cost after every
        # table change, and a Python call here is a fifth of it (tests check both agree).
        a = int.from_bytes(dst16, "big")
        top = a >> _TOP_SHIFT
        sidx = top & _SHARD_MASK
        r: Route | None = None
        lens = self.buckets[sidx].get(top)
        if lens is not None:
            long = self._long
            for n in lens:
                mask, shards = long[n]
                r = shards[sidx].get(a & mask)
                if r is not None:
                    break
        if r is None:
            for mask, shift, shards in self._short:
                r = shards[(a >> shift) & _SHARD_MASK].get(a & mask)
                if r is not None:
                    break
        res: Result | None = None
        if r is not None:
            hops = r.nexthops
            res = (r, hops[0] if len(hops) == 1 else hops[zlib.crc32(dst16) % len(hops)])
        cache = self.cache
        if len(cache) >= self.cache_size:
            # Crude but O(1) amortised and thread-safe under the GIL; a working set larger
            # than the cache degrades to uncached speed, never to wrong answers.
            cache.clear()
        cache[dst16 if type(dst16) is bytes else bytes(dst16)] = res
        return res

    def lookup_many(self, dsts: Iterable[bytes]) -> list[Result | None]:
        """Resolve several destinations against this one generation."""
        cache_get = self.cache.get
        out: list[Result | None] = []
        for d in dsts:
            res = cache_get(d, _MISS)
            out.append(self._miss(d) if res is _MISS else res)  # type: ignore[arg-type]
        return out


def _build(
    routes: Iterable[Route], groups: NextHopGroups, generation: int, cache_size: int
) -> FibSnapshot:
    shards: dict[int, Shards] = {}
    counts: dict[int, int] = {}
    # Per bucket shard: /32 -> bit set of the long lengths under it (an int is ~5x smaller
    # than a set, which matters for the build's peak memory with ~100k buckets).
    present: list[dict[int, int]] = [{} for _ in range(_SHARDS)]
    intern = groups.intern_route
    for route in routes:
        length, key, idx = _key(route.prefix)
        lst = shards.get(length)
        if lst is None:
            lst = shards[length] = [_EMPTY_SHARD] * _SHARDS
            counts[length] = 0
        shard = lst[idx]
        if shard is _EMPTY_SHARD:
            shard = lst[idx] = {}
        if key not in shard:
            counts[length] += 1
            if length > LONG:
                top = key >> _TOP_SHIFT
                p = present[idx]
                p[top] = p.get(top, 0) | 1 << length
        shard[key] = intern(route)  # a duplicate prefix: the last one wins
    as_lens: dict[int, tuple[int, ...]] = {}
    buckets: list[dict[int, tuple[int, ...]]] = []
    for p in present:
        b: dict[int, tuple[int, ...]] = {}
        for top, bits in p.items():
            lens = as_lens.get(bits)
            if lens is None:
                lens = as_lens[bits] = _lens(n for n in range(LONG + 1, 129) if bits >> n & 1)
            b[top] = lens
        buckets.append(b)
    return FibSnapshot(shards, counts, buckets, generation, cache_size)


def _has_top(shard: dict[int, Route], top: int) -> bool:
    """Whether ``shard`` still holds a prefix under the /32 ``top``.

    Every route of one long length under one /32 sits in one shard (a few hundred entries
    at Internet scale), so this scan replaces a per-(/32, length) counter that would cost
    more memory than it saves time.
    """
    for k in shard:  # noqa: SIM110 - a plain loop is ~2x faster than any(genexpr) here
        if k >> _TOP_SHIFT == top:
            return True
    return False


def _derive(
    base: FibSnapshot,
    adds: Iterable[Route],
    removes: Iterable[ipaddress.IPv6Network],
    groups: NextHopGroups,
) -> tuple[FibSnapshot, list[Route | None], list[bool]]:
    """Next generation = ``base`` with removes then adds applied, copying only touched shards."""
    shards = dict(base.shards)
    counts = dict(base.counts)
    buckets = list(base.buckets)
    fresh_lists: set[int] = set()
    fresh_shards: set[tuple[int, int]] = set()
    fresh_buckets: set[int] = set()

    def writable(length: int, idx: int) -> dict[int, Route]:
        if length not in fresh_lists:
            old = shards.get(length)
            shards[length] = [_EMPTY_SHARD] * _SHARDS if old is None else list(old)
            counts.setdefault(length, 0)
            fresh_lists.add(length)
        lst = shards[length]
        if (length, idx) not in fresh_shards:
            lst[idx] = dict(lst[idx])
            fresh_shards.add((length, idx))
        return lst[idx]

    def set_bucket(idx: int, top: int, lens: tuple[int, ...]) -> None:
        if idx not in fresh_buckets:
            buckets[idx] = dict(buckets[idx])
            fresh_buckets.add(idx)
        if lens:
            buckets[idx][top] = lens
        else:
            del buckets[idx][top]

    removed: list[bool] = []
    for prefix in removes:
        length, key, idx = _key(prefix)
        lst = shards.get(length)
        if lst is None or key not in lst[idx]:
            removed.append(False)
            continue
        shard = writable(length, idx)
        del shard[key]
        counts[length] -= 1
        removed.append(True)
        if length > LONG:
            top = key >> _TOP_SHIFT
            if not _has_top(shard, top):
                set_bucket(idx, top, _lens(n for n in buckets[idx][top] if n != length))
    previous: list[Route | None] = []
    for route in adds:
        length, key, idx = _key(route.prefix)
        shard = writable(length, idx)
        old = shard.get(key)
        if old is None:
            counts[length] += 1
            if length > LONG:
                top = key >> _TOP_SHIFT
                lens = buckets[idx].get(top, ())
                if length not in lens:
                    set_bucket(idx, top, _lens((*lens, length)))
        shard[key] = groups.intern_route(route)
        previous.append(old)
    for length in fresh_lists:
        if counts[length] == 0:
            del shards[length], counts[length]
    table = FibSnapshot(shards, counts, buckets, base.generation + 1, base.cache_size)
    return table, previous, removed


class Fib:
    """Longest-prefix-match table with next-hop groups and a per-generation result cache.

    Lookups are lock-free (one attribute read gets a consistent generation); writers are
    serialised by an internal lock and publish each new generation with one assignment.
    """

    def __init__(self, routes: Iterable[Route] = (), *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._lock = threading.Lock()
        self._groups = NextHopGroups()
        self._t = _build(routes, self._groups, 1, cache_size)
        # Increases by at least one on every change.  A plain attribute, not a property: every
        # packet compares it (worker, brancher), and a property call cost ~50 ns of that.
        # Published after the table it names, so a reader that sees it new gets the new table.
        self.generation: int = self._t.generation

    def _publish(self, table: FibSnapshot) -> None:
        self._t = table
        self.generation = table.generation

    # -- reading -----------------------------------------------------------------------

    def snapshot(self) -> FibSnapshot:
        """The current generation; immutable, safe to keep and to read from any thread."""
        return self._t

    def __len__(self) -> int:
        return len(self._t)

    def routes(self) -> Iterator[Route]:
        """Every route of the current generation, shortest prefix length first."""
        return self._t.routes()

    def get(self, prefix: ipaddress.IPv6Network) -> Route | None:
        """The route for exactly this prefix, if any."""
        return self._t.get(prefix)

    def lookup_route(self, dst16: bytes) -> Route | None:
        """Longest-prefix match without the ECMP choice (no cache)."""
        return self._t.lookup_route(dst16)

    def lookup(self, dst16: bytes) -> Result | None:
        """Resolve a destination (16 raw bytes) to its route and chosen next hop."""
        t = self._t
        res = t.cache.get(dst16, _MISS)
        if res is _MISS:
            return t._miss(dst16)
        return res  # type: ignore[return-value]

    def lookup_many(self, dsts: Iterable[bytes]) -> list[Result | None]:
        """Resolve several destinations against one generation."""
        return self._t.lookup_many(dsts)

    def groups(self) -> dict[tuple[NextHop, ...], int]:
        """Next-hop groups in use and how many routes share each (O(routes))."""
        use: dict[tuple[NextHop, ...], int] = {}
        for r in self._t.routes():
            use[r.nexthops] = use.get(r.nexthops, 0) + 1
        return use

    def stats(self) -> dict[str, object]:
        """Numbers for status/API: routes, per-length counts, groups interned, cache fill."""
        t = self._t
        return {
            "generation": t.generation,
            "routes": len(t),
            "prefix_lengths": {f"/{n}": c for n, c in sorted(t.counts.items())},
            "nexthop_groups_interned": len(self._groups),
            "cache_entries": len(t.cache),
            "cache_size": t.cache_size,
        }

    # -- writing -----------------------------------------------------------------------
    def replace(self, routes: Iterable[Route]) -> None:
        """Swap in a new generation built off to the side (one reference assignment).

        If ``routes`` raises part-way (e.g. a half-finished walk), the current table stays.
        A prefix given twice keeps its last route.
        """
        with self._lock:
            groups = NextHopGroups()
            table = _build(routes, groups, self._t.generation + 1, self._t.cache_size)
            self._groups = groups
            self._publish(table)

    def update(
        self, add: Iterable[Route] = (), remove: Iterable[ipaddress.IPv6Network] = ()
    ) -> tuple[list[Route | None], list[bool]]:
        """Apply removals then additions as ONE new generation (one cache invalidation).

        Returns (previous route or None per added route, found-flag per removed prefix).
        An error in the input (e.g. a non-IPv6 prefix) leaves the table unchanged.
        """
        with self._lock:
            table, previous, removed = _derive(self._t, add, remove, self._groups)
            self._publish(table)
        return previous, removed

    def add(self, route: Route) -> Route | None:
        """Insert or replace the route for ``route.prefix``; returns the route it replaced."""
        return self.update(add=(route,))[0][0]

    def remove(self, prefix: ipaddress.IPv6Network) -> bool:
        """Delete the route for exactly ``prefix``; False (and no new generation) if absent."""
        with self._lock:
            if self._t.get(prefix) is None:
                return False
            self._publish(_derive(self._t, (), (prefix,), self._groups)[0])
        return True
