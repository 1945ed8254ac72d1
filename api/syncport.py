"""The daemon's route sync behind :class:`api.state.SyncPort`.

``EngineSync`` runs fetch -> diff -> safety valve -> atomic ``Fib.replace`` -> persist the
last good snapshot, on a timer, on a change of the source's change marker, and on demand
(resync jobs).  A failed fetch changes nothing: the previous generation keeps serving.
It deliberately keeps to the shared contracts (RouteSource, Snapshot, Fib) so that
sync/service.py can take its place behind the same port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from engine.fib import Fib
from engine.model import NextHop, Route
from sync.model import Interface, Snapshot
from sync.source import Progress, RouteSource, SourceError

from api.config import redact_url
from api.kernelsource import read_kernel_table
from api.state import RouteDiff, SyncOutcome, SyncStatus, diff_routes

log = logging.getLogger("xcast6.sync")


def open_route_source(url: str) -> RouteSource:
    """A RouteSource for a configured URL (kernel:// here; snmp/netconf via sync.sources)."""
    if url.startswith("kernel://"):
        from api.kernelsource import KernelSource

        return KernelSource(url)
    try:
        from sync.sources import open_source  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise SourceError(f"source {redact_url(url)}: this build has no driver for that scheme "
                          "(sync.sources is not installed)") from None
    return open_source(url)  # type: ignore[no-any-return,unused-ignore]


# -- last-good snapshot on disk (JSON, atomic rename) ---------------------------------------------

def _route_to_json(r: Route) -> dict[str, object]:
    return {"prefix": str(r.prefix), "protocol": r.protocol, "metric": r.metric,
            "nexthops": [{"ifname": h.ifname, "gateway": h.gateway_text()} for h in r.nexthops]}


def _route_from_json(d: dict[str, object]) -> Route:
    import ipaddress

    hops = tuple(NextHop(ifname=str(h["ifname"]),
                         gateway=None if h["gateway"] is None else ipaddress.IPv6Address(h["gateway"]).packed)
                 for h in d["nexthops"])  # type: ignore[attr-defined]
    return Route(prefix=ipaddress.IPv6Network(str(d["prefix"])), nexthops=hops, protocol=str(d["protocol"]),
                 metric=int(d["metric"]))  # type: ignore[call-overload]


def save_snapshot(path: Path, snap: Snapshot) -> None:
    doc = {"source": redact_url(snap.source), "fetched_at": snap.fetched_at, "duration_s": snap.duration_s,
           "routes": [_route_to_json(r) for r in snap.routes],
           "interfaces": [{"name": i.name, "index": i.index, "oper_up": i.oper_up, "descr": i.descr}
                          for i in snap.interfaces]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def load_snapshot(path: Path) -> Snapshot | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("stored snapshot %s unreadable (%s); starting empty", path, exc)
        return None
    try:
        return Snapshot(routes=[_route_from_json(r) for r in doc["routes"]],
                        interfaces=[Interface(**i) for i in doc["interfaces"]],
                        source=doc["source"], fetched_at=doc["fetched_at"], duration_s=doc["duration_s"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("stored snapshot %s malformed (%s); starting empty", path, exc)
        return None


class EngineSync:
    """Route sync for one source into one Fib (see module docstring)."""

    def __init__(self, source: RouteSource, fib: Fib, *, state_dir: Path, safety_valve: float = 0.5,
                 interval: float = 300.0, change_detect: float = 1.0, timeout: float = 30.0,
                 kernel_table: int = 0, kernel_proto: int = 186) -> None:
        self.source = source
        self.fib = fib
        self.state_dir = state_dir
        self.safety_valve = safety_valve
        self.interval = interval
        self.change_detect = change_detect
        self.timeout = timeout
        self.kernel_table = kernel_table
        self.kernel_proto = kernel_proto
        self._status = SyncStatus(source=redact_url(source.url), interval_s=interval)
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._marker: str | None = None
        self.history: list[dict[str, object]] = []

    # -- SyncPort ---------------------------------------------------------------------------
    def status(self) -> SyncStatus:
        self._status.generation = self.fib.generation
        self._status.route_count = len(self.fib)
        return self._status

    def table_loaded(self) -> bool:
        return self._snapshot is not None

    def router_interfaces(self) -> list[Interface]:
        return [] if self._snapshot is None else list(self._snapshot.interfaces)

    async def fetch_fresh(self, progress: Progress | None = None) -> Snapshot:
        try:
            return await asyncio.wait_for(self.source.fetch(progress), self.timeout)
        except TimeoutError:
            raise SourceError(f"{redact_url(self.source.url)}: no complete answer within "
                              f"{self.timeout:g} s (sync.timeout)") from None

    async def kernel_routes(self) -> list[Route] | None:
        if not self.kernel_table:
            return None
        routes, _ = await read_kernel_table(None, self.kernel_table, self.kernel_proto)
        return routes

    async def resync(self, force: bool, progress: Progress | None = None) -> SyncOutcome:
        async with self._lock:
            return await self._sync_once(force, progress, trigger="manual")

    # -- the loop ---------------------------------------------------------------------------
    def load_stored(self) -> bool:
        """Serve the last good snapshot at once (before the first fetch)."""
        snap = load_snapshot(self._store_path())
        if snap is None:
            return False
        self.fib.replace(snap.routes)
        self._snapshot = snap
        self._status.loaded_from_store = True
        self._status.state = "idle"
        log.info("loaded last good snapshot: %d routes from %s", len(snap.routes), self._store_path())
        return True

    def reconfigure(self, source: RouteSource, *, interval: float, change_detect: float, safety_valve: float,
                    timeout: float) -> None:
        """SIGHUP: new source settings; the table keeps serving, the next sync uses them."""
        self.source = source
        self.interval, self.change_detect, self.safety_valve, self.timeout = (interval, change_detect,
                                                                              safety_valve, timeout)
        self._status.source, self._status.interval_s = redact_url(source.url), interval
        self._marker = None
        self._wake.set()

    async def run(self) -> None:
        """Poll forever: full sync every ``interval``, sooner when the change marker moves."""
        next_full = 0.0
        while True:
            now = time.monotonic()
            if now >= next_full:
                async with self._lock:
                    try:
                        await self._sync_once(False, None, trigger="timer")
                    except Exception:
                        log.exception("sync failed unexpectedly")
                next_full = time.monotonic() + self.interval
            elif self.change_detect > 0 and await self._marker_moved():
                log.info("change marker moved; syncing now")
                next_full = 0.0
                continue
            wait = next_full - time.monotonic()
            if self.change_detect > 0:
                wait = min(wait, self.change_detect)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))
                next_full = 0.0          # woken by reconfigure: sync now with the new settings
            except TimeoutError:
                pass

    async def _marker_moved(self) -> bool:
        try:
            marker = await asyncio.wait_for(self.source.change_marker(), self.timeout)
        except Exception as exc:
            log.debug("change marker poll failed: %s", exc)
            return False
        if marker is None:
            return False
        moved = self._marker is not None and marker != self._marker
        self._marker = marker
        return moved

    def _store_path(self) -> Path:
        return self.state_dir / "last-good-snapshot.json"

    def _record(self, entry: dict[str, object]) -> None:
        self.history.append(entry)
        del self.history[:-100]

    async def _sync_once(self, force: bool, progress: Progress | None, trigger: str) -> SyncOutcome:
        st = self._status
        st.last_attempt = time.time()
        st.state = "fetching"
        t0 = time.monotonic()
        try:
            marker = await asyncio.wait_for(self.source.change_marker(), self.timeout)
        except Exception:
            marker = None
        try:
            snap = await self.fetch_fresh(progress)
        except Exception as exc:
            st.state, st.last_error = "error", f"{exc}" or type(exc).__name__
            st.last_duration_s = time.monotonic() - t0
            self._record({"time": st.last_attempt, "trigger": trigger, "outcome": "error", "error": st.last_error})
            log.warning("sync from %s failed: %s (keeping generation %d)", st.source, st.last_error,
                        self.fib.generation)
            raise
        if marker is not None:
            self._marker = marker
        current = list(self.fib.routes())
        diff = diff_routes(current, snap.routes)
        if not force and self._valve_holds(len(current), diff, len(snap.routes)):
            st.state, st.held_back = "held", diff
            st.last_duration_s = time.monotonic() - t0
            st.last_error = (f"safety valve: sync would remove {len(diff.removed)} of {len(current)} routes "
                             f"(more than {self.safety_valve:.0%}); held back until forced")
            self._record({"time": st.last_attempt, "trigger": trigger, "outcome": "held", **diff.counts()})
            log.warning("%s", st.last_error)
            return SyncOutcome(diff, applied=False, held_back=True, generation=self.fib.generation,
                               route_count=len(current), message=st.last_error)
        st.state = "applying"
        if not diff.empty or self._snapshot is None:
            self.fib.replace(snap.routes)
        self._snapshot = snap
        try:
            save_snapshot(self._store_path(), snap)
        except OSError as exc:
            log.warning("could not store the snapshot in %s: %s", self.state_dir, exc)
        st.state, st.last_error, st.held_back = "idle", None, None
        st.last_success = time.time()
        st.last_duration_s = time.monotonic() - t0
        self._record({"time": st.last_attempt, "trigger": trigger, "outcome": "applied", "forced": force,
                      **diff.counts()})
        log.info("sync applied (%s): +%d -%d ~%d, %d routes, generation %d", trigger, len(diff.added),
                 len(diff.removed), len(diff.changed), len(snap.routes), self.fib.generation)
        return SyncOutcome(diff, applied=True, held_back=False, generation=self.fib.generation,
                           route_count=len(snap.routes))

    def _valve_holds(self, current: int, diff: RouteDiff, new_count: int) -> bool:
        if current == 0:
            return False
        return new_count == 0 or len(diff.removed) / current > self.safety_valve
