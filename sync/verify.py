"""Is the engine what the router says, and is the kernel mirror what the engine says?

One check (run by :meth:`sync.service.SyncService.verify`, under its apply lock):

* **router vs engine** -- sync's own diff (:func:`sync.diff.diff_routes`: next-hop *sets*,
  protocol, metric) between the Fib and a fresh fetch: what a resync would change.
* **engine vs kernel mirror** -- the mirror's own plan (:func:`sync.kernel.plan_mirror`) for
  the Fib, with the kernel's links and foreign routes as they are now, against what the
  kernel table holds: exactly what a mirror reconcile would send.  Routes the plan leaves out
  on purpose (no engine link, link down, device missing, a gateway the kernel refuses, a
  foreign route holding the prefix) are therefore not drift; they are counted in ``skipped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine.model import Route, RouteChange, Snapshot
from sync.diff import diff_routes
from sync.kernel import KernelMirror, plan_mirror, to_model


def _order(r: Route) -> tuple[bytes, int]:
    return (r.prefix.network_address.packed, r.prefix.prefixlen)


@dataclass(frozen=True, slots=True)
class RouteDrift:
    """Per prefix, sorted by address then length: ``added`` is only on the reference side (the
    side that should win), ``removed`` only on the checked side, ``changed`` differs (old = checked
    side, new = reference)."""

    added: list[Route] = field(default_factory=list)
    removed: list[Route] = field(default_factory=list)
    changed: list[RouteChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed)}


def route_drift(current: Iterable[Route], reference: Iterable[Route]) -> RouteDrift:
    """What would change if ``current`` became ``reference``, by sync's own route equality."""
    added, removed, changed, _, _ = diff_routes(current, reference)
    return RouteDrift(sorted(added, key=_order), sorted(removed, key=_order),
                      sorted(changed, key=lambda c: _order(c.new)))


@dataclass(frozen=True, slots=True)
class MirrorCheck:
    """The kernel mirror against the mirror's plan for the engine table."""

    table: int
    routes: int                  # our routes in the kernel table now
    drift: RouteDrift            # kernel routes (engine interface names): added = planned but missing
    skipped: dict[str, int]      # routes the plan leaves out on purpose, by reason


def check_mirror(routes: Iterable[Route], mirror: KernelMirror,
                 ifname_map: Callable[[str], str | None]) -> MirrorCheck:
    """Read the kernel table and links now and compare with the plan for ``routes``.

    Blocking netlink I/O on the mirror's socket: the caller holds the apply lock.  Read-only:
    the mirror's own cache of what it installed is left alone.
    """
    links = mirror.link_index()
    ours, foreign = mirror.dump()
    plan = plan_mirror(routes, ifname_map, links, foreign, mirror.table, mirror.protocol,
                       mirror.priority, mirror.onlink)
    names = {idx: name for name, (idx, _up) in links.items()}
    desired = plan.desired
    added = [to_model(kr, names) for key, kr in desired.items() if key not in ours]
    removed = [to_model(kr, names) for key, kr in ours.items() if key not in desired]
    changed = [RouteChange(to_model(ours[key], names), to_model(kr, names))
               for key, kr in desired.items() if key in ours and ours[key] != kr]
    drift = RouteDrift(sorted(added, key=_order), sorted(removed, key=_order),
                       sorted(changed, key=lambda c: _order(c.new)))
    return MirrorCheck(mirror.table, len(ours), drift, plan.skipped())


@dataclass(frozen=True, slots=True)
class Verification:
    """Router (fresh fetch) vs engine table vs kernel mirror, at one moment."""

    router: Snapshot
    engine_routes: int
    generation: int
    router_vs_engine: RouteDrift       # what a resync would change in the engine table
    kernel: MirrorCheck | None         # None: no kernel mirror configured
    # time.monotonic() when it was taken: a reused verification says how old it is
    checked_at: float = field(default_factory=time.monotonic)

    @property
    def in_sync(self) -> bool:
        return self.router_vs_engine.empty and (self.kernel is None or self.kernel.drift.empty)
