"""Apply a new snapshot to the engine: kernel mirror first, then the engine forwarding table.

Order and atomicity: the kernel mirror is written first; if the kernel refuses any request,
:class:`sync.kernel.KernelMirror` undoes what it already changed and we raise before the
engine :class:`engine.forwarding.fib.Fib` is touched, so the previous generation keeps serving in both
places.  Only when the kernel succeeded is the Fib updated — a whole-generation swap
(``Fib.replace``) or, for a small diff, one ``Fib.update`` — either way one new generation.
The Fib gets *every* route of the router (branching needs the router's view even for
interfaces the engine has no link for: the worker counts those copies as drops); the kernel
mirror gets only routes whose interface has an engine link (the rest are counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.forwarding.fib import Fib
from engine.model import LinkMap, Snapshot
from sync.diff import SnapshotDiff
from sync.gcpause import gc_paused
from sync.kernel import KernelApplyError, KernelMirror, MirrorResult

IfnameMap = Callable[[str], str | None]

# Fib.update derives a new generation copy-on-write (cost ~ changes); past this many changes,
# or a quarter of the table, building a fresh generation is as cheap and simpler.
DEFAULT_INCREMENTAL_MAX = 20_000


class ApplyError(Exception):
    """Applying failed; the previous generation is still serving (``rolled_back`` False = kernel unsure)."""

    def __init__(self, message: str, rolled_back: bool = True) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


@dataclass(slots=True)
class ApplyResult:
    """What one apply did."""

    fib_mode: str               # "replace", "incremental" or "none"
    generation: int
    fib_routes: int
    fib_s: float
    kernel: MirrorResult | None
    kernel_s: float
    duration_s: float

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "fib_mode": self.fib_mode,
            "generation": self.generation,
            "fib_routes": self.fib_routes,
            "fib_s": round(self.fib_s, 4),
            "kernel_s": round(self.kernel_s, 4),
            "duration_s": round(self.duration_s, 4),
        }
        if self.kernel is not None:
            out["kernel"] = self.kernel.to_dict()
        return out


def _no_links(_router_ifname: str) -> str | None:
    return None


def ifname_map_from(linkmap: LinkMap) -> IfnameMap:
    """Router interface name -> engine kernel interface name, from vlan's LinkMap."""

    def engine_ifname(router_ifname: str) -> str | None:
        link = linkmap.for_router_if(router_ifname)
        return None if link is None else link.engine_ifname

    return engine_ifname


class Applier:
    """Owns the write path into the engine Fib and the kernel mirror."""

    def __init__(
        self,
        fib: Fib,
        mirror: KernelMirror | None = None,
        ifname_map: IfnameMap = _no_links,
        incremental_max: int = DEFAULT_INCREMENTAL_MAX,
    ) -> None:
        self.fib = fib
        self.mirror = mirror
        self.ifname_map = ifname_map
        self.incremental_max = incremental_max
        self.last_kernel: MirrorResult | None = None

    def apply(self, new: Snapshot, d: SnapshotDiff | None = None, full: bool = False) -> ApplyResult:
        """Make the engine serve ``new``.  ``d`` (diff from what serves now) allows incremental work.

        ``full`` forces a whole-table kernel reconcile and Fib swap (first load, link map change).
        Raises :class:`ApplyError` with the previous state still serving.
        """
        with gc_paused():
            return self._apply(new, d, full)

    def _apply(self, new: Snapshot, d: SnapshotDiff | None, full: bool) -> ApplyResult:
        t0 = time.perf_counter()
        incremental = d is not None and not full
        kres: MirrorResult | None = None
        if self.mirror is not None:
            try:
                if incremental and d is not None:
                    upserts = d.added + [c.new for c in d.changed]
                    kres = self.mirror.apply_changes(upserts, [r.prefix for r in d.removed], self.ifname_map,
                                                     full_routes=new.routes)
                else:
                    kres = self.mirror.apply(new.routes, self.ifname_map)
            except KernelApplyError as exc:
                raise ApplyError(f"kernel mirror update failed, engine table unchanged: {exc}",
                                 exc.rolled_back) from exc
            except OSError as exc:
                raise ApplyError(f"kernel mirror unreachable, engine table unchanged: {exc}") from exc
            self.last_kernel = kres
        t1 = time.perf_counter()
        fib = self.fib
        try:
            if incremental and d is not None and d.route_changes == 0:
                mode = "none"
            elif (incremental and d is not None and d.route_changes <= self.incremental_max
                  and d.route_changes <= max(16, d.new_count // 4)):
                mode = "incremental"
                fib.update(add=[*d.added, *(c.new for c in d.changed)],
                           remove=[r.prefix for r in d.removed])
            else:
                mode = "replace"
                fib.replace(new.routes)
        except Exception as exc:
            # The Fib kept its generation (it swaps only when built); put the mirror back to match.
            restored = True
            if self.mirror is not None and kres is not None:
                try:
                    self.mirror.apply(list(fib.routes()), self.ifname_map)
                except (KernelApplyError, OSError):
                    restored = False
            msg = (f"engine table update failed ({type(exc).__name__}: {exc}); previous generation "
                   f"{fib.generation} still serving")
            if not restored:
                msg += ", kernel mirror could not be put back"
            raise ApplyError(msg, restored) from exc
        t2 = time.perf_counter()
        return ApplyResult(mode, fib.generation, len(fib), t2 - t1, kres, t1 - t0, t2 - t0)

    def verify_kernel(self, serving: Snapshot) -> MirrorResult | None:
        """Re-read the kernel table and repair drift (routes someone deleted or added with
        our protocol number); returns what had to be sent, None without a mirror."""
        if self.mirror is None:
            return None
        self.mirror.invalidate()
        return self.remap(serving, self.ifname_map)

    def remap(self, routes_snapshot: Snapshot, ifname_map: IfnameMap) -> MirrorResult | None:
        """The engine links changed (vlan reconcile): re-plan the whole kernel mirror."""
        self.ifname_map = ifname_map
        if self.mirror is None:
            return None
        try:
            with gc_paused():
                self.last_kernel = self.mirror.apply(routes_snapshot.routes, ifname_map)
        except KernelApplyError as exc:
            raise ApplyError(f"kernel mirror remap failed: {exc}", exc.rolled_back) from exc
        return self.last_kernel
