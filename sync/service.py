"""SyncService: keeps the engine's tables equal to the router's, and says how that is going.

Triggers (all end up as a :class:`SyncJob` run one at a time by a single worker task):

* ``startup``  — after the last good snapshot from the store is serving again;
* ``poll``     — every ``interval_s`` (a full fetch, the safety net);
* ``change``   — the source's cheap ``change_marker()`` (polled every ``change_poll_s``,
  ~1 s) differs from last time: a route change reaches the engine in about
  ``change_poll_s`` + fetch + apply, without walking the full table every second;
* ``manual``   — :meth:`SyncService.request_resync` (API/CLI), optionally ``force``.

Requests coalesce: while a job is queued, further requests return that job (a ``force``
request upgrades it).  Safety valve: a fetched table that is empty, or that would remove
more than ``max_removal_share`` of the serving table, is *held back* (reported with reason
and counts) until forced (:meth:`apply_held` or ``request_resync(force=True)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.model import Route
from sync.apply import Applier, ApplyError, ApplyResult, IfnameMap
from sync.diff import InterfaceDiff, SnapshotDiff, diff
from sync.kernel import MirrorResult
from sync.model import Interface, Snapshot
from sync.source import RouteSource, SourceError
from sync.sources import strip_secrets
from sync.store import HistoryEntry, StoreError, SyncStore

log = logging.getLogger("xcast6.sync")

# (new snapshot, diff from the previous one, apply result or None when restored from the store)
RoutesHook = Callable[[Snapshot, SnapshotDiff, ApplyResult | None], None]
InterfacesHook = Callable[[list[Interface], InterfaceDiff], None]


@dataclass(slots=True)
class SyncConfig:
    """Tunables of the sync loop (validated: a bad value names itself)."""

    interval_s: float = 300.0
    change_poll_s: float = 1.0
    max_removal_share: float = 0.5
    fetch_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"sync interval_s must be > 0, got {self.interval_s}")
        if not self.change_poll_s >= 0:
            raise ValueError(f"sync change_poll_s must be >= 0 (0 disables), got {self.change_poll_s}")
        if not 0.0 < self.max_removal_share <= 1.0:
            raise ValueError(f"sync max_removal_share must be in (0, 1], got {self.max_removal_share}")
        if not self.fetch_timeout_s > 0:
            raise ValueError(f"sync fetch_timeout_s must be > 0, got {self.fetch_timeout_s}")


@dataclass(slots=True)
class HeldDiff:
    """A fetched table the safety valve refused to apply."""

    reason: str
    counts: dict[str, int]
    held_at: float
    snapshot: Snapshot
    diff: SnapshotDiff

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "counts": self.counts, "held_at": self.held_at,
                "fetched_at": self.snapshot.fetched_at}


@dataclass(eq=False)
class SyncJob:
    """One sync run.  ``status``: queued, running, applied, unchanged, held, failed."""

    id: str
    trigger: str
    force: bool
    created_at: float = field(default_factory=time.time)
    status: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = field(default_factory=lambda: {"phase": "queued", "rows": 0})
    result: dict[str, Any] | None = None
    error: str | None = None
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self, timeout: float | None = None) -> SyncJob:
        """Wait for the job to finish (any outcome)."""
        await asyncio.wait_for(self._done.wait(), timeout)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "trigger": self.trigger, "force": self.force, "status": self.status,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "progress": dict(self.progress), "result": self.result, "error": self.error}


class SyncService:
    """Runs the sync loops for one source and owns what the engine serves."""

    def __init__(
        self,
        source: RouteSource,
        applier: Applier,
        store: SyncStore | None = None,
        config: SyncConfig | None = None,
    ) -> None:
        self.source = source
        self.applier = applier
        self.store = store
        self.config = config or SyncConfig()
        self.serving: Snapshot | None = None
        self._serving_index: dict[int, Route] | None = None   # prefix_key -> route of `serving`
        self.held: HeldDiff | None = None
        self.on_routes: list[RoutesHook] = []
        self.on_interfaces: list[InterfacesHook] = []
        self.last_attempt: float | None = None
        self.last_success: float | None = None
        self.last_duration_s: float | None = None
        self.last_error: str | None = None
        self.last_apply: dict[str, Any] | None = None
        self.change_detection = "not started"
        self.counters = {"applied": 0, "unchanged": 0, "held": 0, "failed": 0, "change_triggers": 0,
                         "marker_errors": 0}
        self._jobs: OrderedDict[str, SyncJob] = OrderedDict()
        self._ids = itertools.count(1)
        self._queued: SyncJob | None = None
        self._running: SyncJob | None = None
        self._wakeup = asyncio.Event()
        self._apply_lock = asyncio.Lock()   # one writer of Fib + kernel mirror at a time
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, initial_sync: bool = True) -> None:
        """Serve the stored snapshot at once, then start the worker, poll and change loops."""
        await self._restore()
        self._tasks = [asyncio.create_task(self._worker(), name="sync-worker"),
                       asyncio.create_task(self._poll_loop(), name="sync-poll")]
        if self.config.change_poll_s > 0:
            self._tasks.append(asyncio.create_task(self._change_loop(), name="sync-change"))
        else:
            self.change_detection = "disabled"
        if initial_sync:
            self.request_resync(trigger="startup")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _restore(self) -> None:
        if self.store is None:
            return
        try:
            snap = await asyncio.to_thread(self.store.load_snapshot)
        except StoreError as exc:
            self.last_error = f"stored snapshot unusable, starting empty: {exc}"
            log.error(self.last_error)
            return
        if snap is None:
            return
        try:
            res = await asyncio.to_thread(self.applier.apply, snap, None, True)
        except ApplyError as exc:
            # Forwarding matters more than the host-visible mirror: serve the Fib anyway.
            self.applier.fib.replace(snap.routes)
            self.last_error = f"restored {len(snap.routes)} routes, but {exc}"
            log.error(self.last_error)
        else:
            self.last_apply = res.to_dict()
        d = diff(None, snap)
        self.serving, self._serving_index = snap, d.new_index
        log.info("serving %d stored routes from %s", len(snap.routes), strip_secrets(snap.source))
        self._notify(snap, d, None)

    # -- requests -----------------------------------------------------------------------
    def request_resync(self, force: bool = False, trigger: str = "manual") -> SyncJob:
        """Queue a full fetch + apply; returns the job (an already queued one is reused)."""
        if self._queued is not None:
            self._queued.force = self._queued.force or force
            return self._queued
        job = SyncJob(f"sync-{next(self._ids)}", trigger, force)
        self._jobs[job.id] = job
        while len(self._jobs) > 100:
            self._jobs.popitem(last=False)
        self._queued = job
        self._wakeup.set()
        return job

    def job(self, job_id: str) -> SyncJob | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[SyncJob]:
        return list(self._jobs.values())

    async def apply_held(self) -> SyncJob:
        """Operator override: apply the held-back table as fetched (no new walk)."""
        held = self.held
        job = SyncJob(f"sync-{next(self._ids)}", "release-held", True)
        self._jobs[job.id] = job
        if held is None:
            self._finish(job, "failed", error="nothing is held back")
            return job
        await self._apply_job(job, held.snapshot, time.time())
        return job

    async def set_ifname_map(self, ifname_map: IfnameMap) -> MirrorResult | None:
        """The engine links changed (vlan reconcile): re-plan the kernel mirror for them.

        The Fib is untouched (it holds the router's view); raises ApplyError with the
        previous mirror restored when the kernel refuses the new plan.
        """
        async with self._apply_lock:
            if self.serving is None:
                self.applier.ifname_map = ifname_map
                return None
            try:
                res = await asyncio.to_thread(self.applier.remap, self.serving, ifname_map)
            except ApplyError as exc:
                self.last_error = str(exc)
                raise
            if res is not None:
                self.last_apply = {**(self.last_apply or {}), "kernel": res.to_dict()}
            return res

    # -- loops --------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            job, self._queued = self._queued, None
            if job is None:
                continue
            self._running = job
            try:
                await self._run(job)
            except Exception as exc:      # never let one bad run kill the loop
                log.exception("sync job %s crashed", job.id)
                self._finish(job, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self._running = None

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            self.request_resync(trigger="poll")

    async def _change_loop(self) -> None:
        last: str | None = None
        while True:
            try:
                marker = await asyncio.wait_for(self.source.change_marker(), self.config.fetch_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["marker_errors"] += 1
                self.change_detection = f"error: {exc}"
                await asyncio.sleep(max(self.config.change_poll_s, 1.0))
                continue
            if marker is None:
                self.change_detection = "unsupported by source (periodic polling only)"
                return
            self.change_detection = "active"
            if last is not None and marker != last:
                self.counters["change_triggers"] += 1
                self.request_resync(trigger="change")
            last = marker
            await asyncio.sleep(self.config.change_poll_s)

    # -- one run ------------------------------------------------------------------------
    async def _run(self, job: SyncJob) -> None:
        started = time.time()
        job.status, job.started_at = "running", started
        job.progress = {"phase": "fetch", "rows": 0}
        self.last_attempt = started

        def progress(rows: int, phase: str) -> None:
            job.progress = {"phase": phase, "rows": rows}

        try:
            snap = await asyncio.wait_for(self.source.fetch(progress), self.config.fetch_timeout_s)
        except TimeoutError:
            self._record_failure(job, started, f"fetch from {strip_secrets(self.source.url)} timed out after "
                                              f"{self.config.fetch_timeout_s:g} s; previous table kept")
            return
        except SourceError as exc:
            self._record_failure(job, started, f"{exc}; previous table kept")
            return
        await self._apply_job(job, snap, started)

    async def _apply_job(self, job: SyncJob, snap: Snapshot, started: float) -> None:
        async with self._apply_lock:
            await self._apply_job_locked(job, snap, started)

    async def _apply_job_locked(self, job: SyncJob, snap: Snapshot, started: float) -> None:
        job.status = "running"
        job.started_at = job.started_at or started
        job.progress = {"phase": "diff", "rows": len(snap.routes)}
        old = self.serving
        d = await asyncio.to_thread(diff, old, snap, self._serving_index if old is not None else None)
        counts = d.counts()
        reason = None if job.force else self._valve(d)
        if reason is not None:
            self.held = HeldDiff(reason, counts, time.time(), snap, d)
            self.counters["held"] += 1
            log.warning("sync held back: %s", reason)
            self._history(job, started, "held", reason, counts)
            self._finish(job, "held", result={"reason": reason, "counts": counts}, error=reason)
            return
        if d.empty and old is not None:
            self.held = None
            self.serving, self._serving_index = snap, d.new_index   # newer fetch, same content
            self._success(started)
            self.counters["unchanged"] += 1
            self._history(job, started, "unchanged", None, counts)
            self._finish(job, "unchanged", result={"counts": counts})
            return
        job.progress = {"phase": "apply", "rows": d.route_changes}
        try:
            res = await asyncio.to_thread(self.applier.apply, snap, d if old is not None else None,
                                          old is None)
        except ApplyError as exc:
            self._record_failure(job, started, str(exc), counts)
            return
        self.serving, self._serving_index = snap, d.new_index
        self.held = None
        self.last_apply = res.to_dict()
        self._success(started)
        self.counters["applied"] += 1
        if self.store is not None:
            job.progress = {"phase": "store", "rows": len(snap.routes)}
            try:
                await asyncio.to_thread(self.store.save_snapshot, snap)
            except Exception as exc:   # a store error (sqlite, disk full) must not undo a good apply
                self.last_error = f"applied, but saving the snapshot failed: {exc}"
                log.error(self.last_error)
        self._history(job, started, "applied", None, counts, res)
        self._finish(job, "applied", result={"counts": counts, "apply": res.to_dict()})
        self._notify(snap, d, res)

    def _valve(self, d: SnapshotDiff) -> str | None:
        """Reason to hold this diff back, or None to apply it."""
        if d.old_count == 0:
            return None
        if d.new_count == 0:
            return f"fetched table is empty but {d.old_count} routes are serving (router rebooting?)"
        if d.removed_share > self.config.max_removal_share:
            return (f"would remove {len(d.removed)} of {d.old_count} routes ({d.removed_share:.0%} > "
                    f"max_removal_share {self.config.max_removal_share:.0%})")
        return None

    def _notify(self, snap: Snapshot, d: SnapshotDiff, res: ApplyResult | None) -> None:
        for hook in self.on_routes:
            try:
                hook(snap, d, res)
            except Exception:
                log.exception("routes hook %r failed", hook)
        if not d.interfaces.empty:
            for ihook in self.on_interfaces:
                try:
                    ihook(list(snap.interfaces), d.interfaces)
                except Exception:
                    log.exception("interfaces hook %r failed", ihook)

    def _success(self, started: float) -> None:
        self.last_success = time.time()
        self.last_duration_s = self.last_success - started
        self.last_error = None

    def _record_failure(self, job: SyncJob, started: float, error: str,
                        counts: dict[str, int] | None = None) -> None:
        self.last_error = error
        self.last_duration_s = time.time() - started
        self.counters["failed"] += 1
        log.error("sync %s failed: %s", job.id, error)
        self._history(job, started, "failed", error, counts or {})
        self._finish(job, "failed", error=error)

    def _history(self, job: SyncJob, started: float, outcome: str, error: str | None, counts: dict[str, int],
                 res: ApplyResult | None = None) -> None:
        if self.store is None:
            return
        now = time.time()
        detail: dict[str, object] = {"job": job.id, "counts": counts}
        if res is not None:
            detail["apply"] = res.to_dict()
        entry = HistoryEntry(started, now, strip_secrets(self.source.url), job.trigger, outcome, error,
                             now - started, counts.get("added", 0), counts.get("removed", 0),
                             counts.get("changed", 0), counts.get("new_count", 0),
                             self.applier.fib.generation, detail)
        try:
            self.store.add_history(entry)
        except Exception as exc:
            log.error("could not record sync history: %s", exc)

    @staticmethod
    def _finish(job: SyncJob, status: str, result: dict[str, Any] | None = None,
                error: str | None = None) -> None:
        job.status = status
        job.finished_at = time.time()
        job.result = result
        job.error = error
        job.progress = {**job.progress, "phase": "done"}
        job._done.set()

    # -- state for the API --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything an operator asks about sync, JSON-ready (URL without secrets)."""
        s = self.serving
        return {
            "source": strip_secrets(self.source.url),
            "serving": None if s is None else {
                "route_count": len(s.routes), "interface_count": len(s.interfaces),
                "fetched_at": s.fetched_at, "source": strip_secrets(s.source),
            },
            "generation": self.applier.fib.generation,
            "route_count": len(self.applier.fib),
            "last_attempt": self.last_attempt,
            "last_success": self.last_success,
            "last_duration_s": self.last_duration_s,
            "last_error": self.last_error,
            "last_apply": self.last_apply,
            "held": None if self.held is None else self.held.to_dict(),
            "running_job": None if self._running is None else self._running.to_dict(),
            "queued_job": None if self._queued is None else self._queued.id,
            "change_detection": self.change_detection,
            "interval_s": self.config.interval_s,
            "change_poll_s": self.config.change_poll_s,
            "max_removal_share": self.config.max_removal_share,
            "counters": dict(self.counters),
        }
