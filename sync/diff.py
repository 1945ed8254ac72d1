"""Pure comparison of two router snapshots: which routes and interfaces changed.

Routes are keyed by prefix (one route per prefix, as in the router's active table).  Two
routes for the same prefix are "the same" when their next-hop *sets*, protocol and metric
match: sources do not promise a stable next-hop order for ECMP routes, so order is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from engine.model import Interface, InterfaceDiff, Route, RouteChange, Snapshot, SnapshotDiff
from sync.gcpause import gc_paused


def same_route(a: Route, b: Route) -> bool:
    """Routes are equal when protocol, metric and the *set* of next hops match."""
    if a.protocol != b.protocol or a.metric != b.metric:
        return False
    if a.nexthops == b.nexthops:
        return True
    return len(a.nexthops) == len(b.nexthops) and sorted(a.nexthops) == sorted(b.nexthops)


def prefix_key(prefix: ipaddress.IPv6Network) -> int:
    """An int standing for a prefix (address << 8 | length).

    ``IPv6Network.__hash__`` is Python code; an int key hashes in C (a 250k index builds
    ~30 % faster, and every lookup in the comparison loop is cheaper too).
    """
    return int(prefix.network_address) << 8 | prefix.prefixlen


def index_routes(routes: Iterable[Route]) -> dict[int, Route]:
    """prefix_key -> route.  A duplicate prefix keeps the last one (sources dedupe already)."""
    return {int(r.prefix.network_address) << 8 | r.prefix.prefixlen: r for r in routes}


def diff_routes(
    old: Iterable[Route] | dict[int, Route],
    new: Iterable[Route] | dict[int, Route],
) -> tuple[list[Route], list[Route], list[RouteChange], int, int]:
    """Compare two route collections by prefix: (added, removed, changed, old_count, new_count).

    Either side may be given pre-indexed (:func:`index_routes`), e.g. the serving table.
    """
    old_by = old if isinstance(old, dict) else index_routes(old)
    new_by = new if isinstance(new, dict) else index_routes(new)
    old_keys, new_keys = old_by.keys(), new_by.keys()
    added = [new_by[k] for k in new_keys - old_keys]
    removed = [old_by[k] for k in old_keys - new_keys]
    changed: list[RouteChange] = []
    old_get = old_by.get
    for k, r in new_by.items():
        o = old_get(k)
        if o is not None and o is not r and not same_route(o, r):
            changed.append(RouteChange(o, r))
    return added, removed, changed, len(old_by), len(new_by)


def diff_interfaces(old: Iterable[Interface], new: Iterable[Interface]) -> InterfaceDiff:
    """Compare interface lists by name: added, removed, oper status changed."""
    old_by = {i.name: i for i in old}
    new_by = {i.name: i for i in new}
    out = InterfaceDiff()
    for name, i in new_by.items():
        o = old_by.get(name)
        if o is None:
            out.added.append(i)
        elif o.oper_up != i.oper_up:
            out.oper_changed.append((o, i))
    out.removed = [i for name, i in old_by.items() if name not in new_by]
    return out


def diff(old: Snapshot | None, new: Snapshot, old_index: dict[int, Route] | None = None) -> SnapshotDiff:
    """Compare the serving snapshot (None when nothing serves yet) with a freshly fetched one.

    ``old_index`` (the serving table's :func:`index_routes`, kept by the caller) saves
    re-indexing the old side; the new side's index is returned in ``SnapshotDiff.new_index``.
    """
    with gc_paused():
        new_index = index_routes(new.routes)
        old_side = old_index if old_index is not None else index_routes(old.routes if old else ())
        added, removed, changed, n_old, n_new = diff_routes(old_side, new_index)
    ifd = diff_interfaces(old.interfaces if old else (), new.interfaces)
    return SnapshotDiff(added, removed, changed, ifd, n_old, n_new, new_index)
