"""SyncService: keeps the engine's tables equal to the router's, and says how that is going.

Triggers (all end up as a :class:`SyncJob` run one at a time by a single worker task):

* ``startup``  — after the last good snapshot from the store is serving again;
* ``poll``     — every ``interval`` (a full fetch, the safety net);
* ``change``   — the source's cheap ``change_marker()`` (polled every ``change_detect``,
  ~1 s) differs from last time: a route change reaches the engine in about
  ``change_detect`` + fetch + apply, without walking the full table every second;
* ``manual``   — :meth:`SyncService.request_resync` (API/CLI), optionally ``force``.

Requests coalesce: while a job is queued, further requests return that job (a ``force``
request upgrades it).  Safety valve: a fetched table that is empty, or that would remove
more than ``safety_valve`` of the serving table, adds a default route, or adds/changes more
than ``safety_valve_additions`` of it, is *held back* (reported with reason
and counts) until forced (:meth:`apply_held` or ``request_resync(force=True)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.forwarding.fib import Fib
from engine.model import Interface, Route, Snapshot
from sync.apply import Applier, ApplyError, ApplyResult, IfnameMap
from sync.config import SyncConfig
from sync.diff import InterfaceDiff, SnapshotDiff, diff
from sync.gcpause import gc_paused
from sync.kernel import DEFAULT_PROTOCOL, DEFAULT_TABLE, KernelMirror, MirrorResult, to_model
from sync.registry import open_source, strip_secrets
from sync.source import Progress, RouteSource, SourceError
from sync.store import HistoryEntry, StoreDamaged, StoreError, SyncStore, open_store
from sync.verify import Verification, check_mirror, route_drift

log = logging.getLogger("xcast6.sync")

#: Why a sync run failed (the ``reason`` label of xcast6_sync_failures_total): no answer in
#: sync.timeout, router unreachable, credentials refused, a reply that is not a usable table,
#: the kernel refusing the mirror, anything else.
FAILURE_REASONS = ("timeout", "unreachable", "auth", "bad_reply", "kernel_refused", "internal")



class SyncSubscriber(Protocol):
    """The one party told what sync applied (the runtime pipeline, api/pipeline.py; tests).

    Called on the event loop, right after the apply: keep it short, hand blocking work on.
    """

    def table_applied(self, snap: Snapshot, d: SnapshotDiff, res: ApplyResult | None) -> None:
        """The engine serves ``snap`` now (``d`` from the previous table; ``res`` None when it
        was restored from the store)."""
        ...

    def interfaces_changed(self, interfaces: list[Interface], d: InterfaceDiff) -> None:
        """The router's interface list changed (added, removed, oper status)."""
        ...


@dataclass(slots=True)
class HeldDiff:
    """A fetched table the safety valve refused to apply."""

    reason: str
    counts: dict[str, int]
    held_at: float
    snapshot: Snapshot
    diff: SnapshotDiff

    def to_dict(self, examples: int = 10) -> dict[str, Any]:
        """Reason, counts and a few of the prefixes it would remove/add (for the operator)."""
        return {"reason": self.reason, "counts": self.counts, "held_at": self.held_at,
                "fetched_at": self.snapshot.fetched_at,
                "removed_examples": [str(r.prefix) for r in self.diff.removed[:examples]],
                "added_examples": [str(r.prefix) for r in self.diff.added[:examples]]}


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
    timings: dict[str, float] = field(default_factory=dict)   # fetch_s, diff_s, apply_s, store_s
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
                "progress": dict(self.progress), "result": self.result, "error": self.error,
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}


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
        self.subscriber: SyncSubscriber | None = None
        self.last_attempt: float | None = None
        self.last_success: float | None = None
        self.last_duration_s: float | None = None
        self.last_error: str | None = None
        self.last_apply: dict[str, Any] | None = None
        self.change_detection = "not started"
        self.last_marker_s: float | None = None      # how long the last change_marker() poll took
        self.counters = {"applied": 0, "unchanged": 0, "held": 0, "failed": 0, "change_triggers": 0,
                         "marker_errors": 0, "link_changes": 0,
                         "kernel_drift_repaired": 0}
        # Prometheus counters (api/metrics.py): runs started by (source, trigger) and failed runs by
        # (source, reason), reason one of FAILURE_REASONS; the source is the redacted URL.
        self.attempts: dict[tuple[str, str], int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self._jobs: OrderedDict[str, SyncJob] = OrderedDict()
        self._ids = itertools.count(1)
        self._queued: SyncJob | None = None
        self._running: SyncJob | None = None
        self._wakeup = asyncio.Event()
        self._apply_lock = asyncio.Lock()   # one writer of Fib + kernel mirror at a time
        self._links_told = asyncio.Event()  # links_updated() wakes the link watch
        self._new_ifname_map: IfnameMap | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._restore_task: asyncio.Task[None] | None = None
        self._save_task: asyncio.Task[None] | None = None
        self._store_dirty = False
        self._last_save = float("-inf")
        self._verifying: asyncio.Task[Verification] | None = None   # the verification running
        self._verified: Verification | None = None                   # the last one that succeeded
        self.restored_routes = 0        # routes served from the store at startup
        self.loaded_from_store = False  # the table serving since start came from the store

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, initial_sync: bool = True) -> None:
        """Serve the stored snapshot at once, then start the worker, poll and change loops."""
        await self._restore()
        self._tasks = [asyncio.create_task(self._worker(), name="sync-worker"),
                       asyncio.create_task(self._poll_loop(), name="sync-poll")]
        # Always running: a reload (SIGHUP) may switch change detection on or off.
        self._tasks.append(asyncio.create_task(self._change_loop(), name="sync-change"))
        self._tasks.append(asyncio.create_task(self._link_watch_loop(), name="sync-links"))
        if initial_sync:
            self.request_resync(trigger="startup")

    async def stop(self) -> None:
        """Stop the loops; a deferred snapshot save is done now."""
        if self._restore_task is not None and not self._restore_task.done():
            await self._restore_task
        tasks = [*self._tasks, *([self._save_task] if self._save_task is not None else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            # Python 3.11's wait_for returns its result when a cancel lands just as the awaited
            # fetch or marker completes (the cancel is lost): cancel again until the task ends.
            while not t.done():
                await asyncio.wait({t}, timeout=0.5)
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks, self._save_task = [], None
        if self._verifying is not None:
            self._verifying.cancel()
        if self._store_dirty:
            async with self._apply_lock:
                await self._save_now(None)

    async def _restore(self) -> None:
        """Serve the stored snapshot: the Fib at once, the kernel mirror reconciled in the background."""
        if self.store is None:
            return
        try:
            snap = await asyncio.to_thread(self.store.load_snapshot)
        except StoreError as exc:
            self.last_error = f"stored snapshot unusable, starting empty: {exc}"
            if isinstance(exc, StoreDamaged):
                try:
                    aside = await asyncio.to_thread(self.store.quarantine)
                    self.last_error += f" (kept aside as {aside}, fresh store)"
                except (OSError, StoreError) as qexc:
                    self.last_error += f" (could not be put aside: {qexc})"
            log.error(self.last_error)
            return
        if snap is None:
            return
        def serve() -> None:
            with gc_paused():
                self.applier.fib.replace(snap.routes)

        await asyncio.to_thread(serve)
        d = await asyncio.to_thread(diff, None, snap)      # indexes the serving table (~0.5 s at 250k)
        self.serving, self._serving_index = snap, d.new_index
        self.restored_routes = len(snap.routes)
        self.loaded_from_store = True
        log.info("serving %d stored routes from %s", len(snap.routes), strip_secrets(snap.source))
        self._notify(snap, d, None)
        if self.applier.mirror is not None:
            self._restore_task = asyncio.create_task(self._restore_kernel(snap), name="sync-restore-kernel")

    async def _restore_kernel(self, snap: Snapshot) -> None:
        # Holds the apply lock, so the startup sync applies on top of a reconciled mirror.
        async with self._apply_lock:
            try:
                res = await asyncio.to_thread(self.applier.remap, snap, self.applier.ifname_map)
            except ApplyError as exc:
                self.last_error = f"restored {len(snap.routes)} routes, but {exc}"
                log.error(self.last_error)
                return
            if res is not None:
                self.last_apply = {"fib_mode": "restore", "generation": self.applier.fib.generation,
                                   "fib_routes": len(self.applier.fib), "kernel": res.to_dict()}

    async def kernel_restored(self) -> None:
        """Wait until the kernel mirror reconcile after a restore has finished (no-op otherwise)."""
        if self._restore_task is not None:
            await self._restore_task

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
        """A job by id (the last 100 are kept), or None."""
        return self._jobs.get(job_id)

    async def wait_first_fetch(self, timeout: float) -> None:
        """Without a stored table, give the start-up fetch up to ``timeout`` seconds, so that
        what starts next (links, workers) starts from the router's table and interfaces (a slow
        router only delays them; the sync keeps retrying in the background)."""
        if self.serving is not None:
            return
        for job in self.jobs():
            if job.trigger == "startup":
                with contextlib.suppress(TimeoutError):
                    await job.wait(timeout)

    def reconfigure(self, source: RouteSource, config: SyncConfig) -> None:
        """New source settings (SIGHUP): the serving table stays, a resync follows at once."""
        self.source = source
        self.config = config
        self.request_resync(trigger="reload")

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

    def links_updated(self, ifname_map: IfnameMap) -> None:
        """The engine links changed (a new link map): the link watch re-plans the kernel mirror
        for them at once.  Call on the event loop; returns without waiting for the remap."""
        self._new_ifname_map = ifname_map
        self._links_told.set()

    # -- reading, for the API ------------------------------------------------------------
    def table_loaded(self) -> bool:
        """True once a table serves (from the store or a sync)."""
        return self.serving is not None

    def router_interfaces(self) -> list[Interface]:
        """The router's interfaces as last fetched."""
        return [] if self.serving is None else list(self.serving.interfaces)

    async def fetch_fresh(self, progress: Progress | None = None) -> Snapshot:
        """Walk the router now without applying (for ``diff`` views); raises SourceError."""
        try:
            return await asyncio.wait_for(self.source.fetch(progress), self.config.timeout)
        except TimeoutError:
            raise SourceError(f"fetch from {strip_secrets(self.source.url)} timed out after "
                              f"{self.config.timeout:g} s") from None

    async def kernel_routes(self) -> list[Route] | None:
        """Routes in the kernel mirror table as read back from the kernel (None: no mirror)."""
        mirror = self.applier.mirror
        if mirror is None:
            return None

        def read() -> list[Route]:
            ours, _ = mirror.dump()
            names = {idx: name for name, (idx, _up) in mirror.link_index().items()}
            return [to_model(kr, names) for kr in ours.values()]

        async with self._apply_lock:      # one user of the mirror's netlink socket at a time
            return await asyncio.to_thread(read)

    async def verify(self, progress: Progress | None = None, max_age: float = 0.0) -> Verification:
        """Router (a fresh fetch) vs the Fib vs the kernel mirror (:mod:`sync.verify`); changes
        nothing.  Raises SourceError when the router cannot be read.

        A verification walks the whole router table: callers arriving while one runs share it
        (``progress`` is reported for the caller that started it), and with ``max_age`` > 0 the
        last one is returned again while it is younger than ``max_age`` seconds and the Fib has
        not changed since (its ``checked_at`` tells its age).  A failure is not reused.
        """
        last = self._verified
        if (max_age > 0 and last is not None and time.monotonic() - last.checked_at < max_age
                and last.generation == self.applier.fib.generation):
            return last
        if self._verifying is None:
            task = asyncio.get_running_loop().create_task(self._verify_now(progress))
            task.add_done_callback(self._verify_done)
            self._verifying = task
        # shield: a caller that gives up (client gone) must not cancel the others' verification
        return await asyncio.shield(self._verifying)

    def _verify_done(self, task: asyncio.Task[Verification]) -> None:
        if self._verifying is task:
            self._verifying = None
        if not task.cancelled() and task.exception() is None:   # exception(): retrieved, no warning
            self._verified = task.result()

    async def _verify_now(self, progress: Progress | None) -> Verification:
        # The fetch takes seconds and touches nothing of ours: outside the lock, so syncs go on.
        router = await self.fetch_fresh(progress)
        # Fib and mirror are read together under the apply lock: a half-applied change would
        # look like drift, and the mirror's netlink socket has one user at a time.
        async with self._apply_lock:
            fib = self.applier.fib
            routes = list(fib.routes())
            generation = fib.generation
            mirror = self.applier.mirror
            kernel = None if mirror is None else await asyncio.to_thread(
                check_mirror, routes, mirror, self.applier.ifname_map)
        # the diff of a full table is seconds of CPU: in a thread, the event loop keeps serving
        drift = await asyncio.to_thread(route_drift, routes, router.routes)
        return Verification(router, len(routes), generation, drift, kernel)

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
                self._record_failure(job, job.started_at or time.time(),
                                     f"internal error: {type(exc).__name__}: {exc}; previous table kept",
                                     reason="internal")
            finally:
                self._running = None

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval)
            self.request_resync(trigger="poll")

    async def _link_watch_loop(self) -> None:
        """The one link watch of the kernel mirror: re-plan it when told of new engine links
        (:meth:`links_updated`) or when the kernel's links changed (one went down or came back:
        the kernel flushes a down link's routes itself), looked at every ``link_watch_s``."""
        while True:
            period = self.config.link_watch_s if self.applier.mirror is not None else 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._links_told.wait(), period or None)
            self._links_told.clear()
            new_map, self._new_ifname_map = self._new_ifname_map, None
            mirror = self.applier.mirror
            try:
                if new_map is None:
                    if mirror is None or not await asyncio.to_thread(mirror.links_changed):
                        continue
                    new_map = self.applier.ifname_map
                if self.serving is not None:
                    self.counters["link_changes"] += 1
                await self.set_ifname_map(new_map)
            except asyncio.CancelledError:
                raise
            except Exception as exc:     # reported, retried next round
                self.last_error = f"engine link check failed: {exc}"
                log.error(self.last_error)

    async def _change_loop(self) -> None:
        last: str | None = None
        while True:
            if self.config.change_detect <= 0:
                # Disabled (possibly by a reload): idle, forget the marker, look again in a second.
                self.change_detection, last = "disabled", None
                await asyncio.sleep(1.0)
                continue
            t0 = time.perf_counter()
            try:
                marker = await asyncio.wait_for(self.source.change_marker(), self.config.timeout)
                self.last_marker_s = time.perf_counter() - t0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["marker_errors"] += 1
                self.change_detection = f"error: {exc}"
                await asyncio.sleep(max(self.config.change_detect, 1.0))
                continue
            if marker is None:
                self.change_detection = "unsupported by source (periodic polling only)"
                return
            self.change_detection = "active"
            if last is not None and marker != last:
                self.counters["change_triggers"] += 1
                self.request_resync(trigger="change")
            last = marker
            # fixed rate: the poll's own duration counts against the period
            await asyncio.sleep(max(0.05, self.config.change_detect - (time.perf_counter() - t0)))

    # -- one run ------------------------------------------------------------------------
    async def _run(self, job: SyncJob) -> None:
        started = time.time()
        job.status, job.started_at = "running", started
        job.progress = {"phase": "fetch", "rows": 0}
        self.last_attempt = started

        def progress(rows: int, phase: str) -> None:
            job.progress = {"phase": phase, "rows": rows}

        key = (strip_secrets(self.source.url), job.trigger)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        t0 = time.perf_counter()
        try:
            snap = await asyncio.wait_for(self.source.fetch(progress), self.config.timeout)
        except TimeoutError:
            self._record_failure(job, started, f"fetch from {strip_secrets(self.source.url)} timed out after "
                                              f"{self.config.timeout:g} s; previous table kept",
                                 reason="timeout")
            return
        except SourceError as exc:
            self._record_failure(job, started, f"{exc}; previous table kept",
                                 reason=exc.kind if exc.kind in ("unreachable", "auth") else "bad_reply")
            return
        except Exception as exc:     # a source bug must look like a failed fetch, not kill the job
            log.exception("fetch from %s crashed", strip_secrets(self.source.url))
            self._record_failure(job, started, f"fetch from {strip_secrets(self.source.url)} failed: "
                                              f"{type(exc).__name__}: {exc}; previous table kept",
                                 reason="internal")
            return
        finally:
            job.timings["fetch_s"] = time.perf_counter() - t0
        await self._apply_job(job, snap, started)

    async def _apply_job(self, job: SyncJob, snap: Snapshot, started: float) -> None:
        async with self._apply_lock:
            await self._apply_job_locked(job, snap, started)

    async def _apply_job_locked(self, job: SyncJob, snap: Snapshot, started: float) -> None:
        job.status = "running"
        job.started_at = job.started_at or started
        job.progress = {"phase": "diff", "rows": len(snap.routes)}
        old = self.serving
        t0 = time.perf_counter()
        d = await asyncio.to_thread(diff, old, snap, self._serving_index if old is not None else None)
        job.timings["diff_s"] = time.perf_counter() - t0
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
            result: dict[str, Any] = {"counts": counts}
            if job.trigger == "poll" and self.config.verify_kernel_on_poll:
                result["kernel_verify"] = await self._verify_kernel(job)
            self._success(started)
            self.counters["unchanged"] += 1
            self._history(job, started, "unchanged", None, counts)
            self._finish(job, "unchanged", result=result)
            return
        job.progress = {"phase": "apply", "rows": d.route_changes}
        t0 = time.perf_counter()
        try:
            res = await asyncio.to_thread(self.applier.apply, snap, d if old is not None else None,
                                          old is None)
        except ApplyError as exc:
            self._record_failure(job, started, str(exc), counts, reason="kernel_refused")
            return
        finally:
            job.timings["apply_s"] = time.perf_counter() - t0
        self.serving, self._serving_index = snap, d.new_index
        self.held = None
        self.last_apply = res.to_dict()
        self._success(started)
        self.counters["applied"] += 1
        if self.store is not None:
            job.progress = {"phase": "store", "rows": len(snap.routes)}
            await self._persist(job)
        self._history(job, started, "applied", None, counts, res)
        self._finish(job, "applied", result={"counts": counts, "apply": res.to_dict()})
        self._notify(snap, d, res)

    async def _verify_kernel(self, job: SyncJob) -> dict[str, Any] | None:
        """Repair kernel mirror drift against the serving table (caller holds the lock)."""
        if self.applier.mirror is None or self.serving is None:
            return None
        t0 = time.perf_counter()
        try:
            res = await asyncio.to_thread(self.applier.verify_kernel, self.serving)
        except ApplyError as exc:
            self.last_error = f"kernel mirror check failed: {exc}"
            log.error(self.last_error)
            return {"error": str(exc)}
        finally:
            job.timings["kernel_verify_s"] = time.perf_counter() - t0
        if res is None:
            return None
        if res.replaced or res.deleted:
            self.counters["kernel_drift_repaired"] += 1
            log.warning("kernel mirror drift repaired: %d routes put back, %d stray removed",
                        res.replaced, res.deleted)
        return res.to_dict()

    async def _persist(self, job: SyncJob | None) -> None:
        """Save the serving snapshot now, or once ``store_min_interval_s`` has passed."""
        pending = self._save_task is not None and not self._save_task.done()
        wait = self._last_save + self.config.store_min_interval_s - time.monotonic()
        if wait <= 0 and not pending:
            await self._save_now(job)
            return
        self._store_dirty = True
        if not pending:
            self._save_task = asyncio.create_task(self._deferred_save(max(wait, 0.0)), name="sync-save")

    async def _deferred_save(self, wait: float) -> None:
        await asyncio.sleep(wait)
        async with self._apply_lock:          # save a table that is serving, not one half applied
            if self._store_dirty:
                await self._save_now(None)

    async def _save_now(self, job: SyncJob | None) -> None:
        snap = self.serving
        if self.store is None or snap is None:
            return
        self._store_dirty = False
        self._last_save = time.monotonic()
        t0 = time.perf_counter()
        try:
            await asyncio.to_thread(self.store.save_snapshot, snap)
        except Exception as exc:   # a store error (sqlite, disk full) must not undo a good apply
            self.last_error = f"applied, but saving the snapshot failed: {exc}"
            log.error(self.last_error)
        if job is not None:
            job.timings["store_s"] = time.perf_counter() - t0

    def _valve(self, d: SnapshotDiff) -> str | None:
        """Reason to hold this diff back, or None to apply it."""
        if d.old_count == 0:
            return None
        if d.new_count == 0:
            return f"fetched table is empty but {d.old_count} routes are serving (router rebooting?)"
        if d.removed_share > self.config.safety_valve:
            return (f"would remove {len(d.removed)} of {d.old_count} routes ({d.removed_share:.0%} > "
                    f"sync.safety_valve {self.config.safety_valve:.0%})")
        # Additions are held too: a hostile or misconfigured router attracts traffic by adding
        # routes (a default route most of all), not only by withdrawing them.
        if any(r.prefix.prefixlen == 0 for r in d.added):
            return ("would add a default route ::/0 that was not there (every destination would "
                    "follow it); check the router, then resync --force")
        grown = len(d.added) + len(d.changed)
        if grown > self.config.safety_valve_additions * d.old_count:
            return (f"would add or change {grown} routes of a {d.old_count}-route table "
                    f"({grown / d.old_count:.0%} > sync.safety_valve_additions "
                    f"{self.config.safety_valve_additions:.0%})")
        return None

    def _notify(self, snap: Snapshot, d: SnapshotDiff, res: ApplyResult | None) -> None:
        sub = self.subscriber
        if sub is None:
            return
        try:
            sub.table_applied(snap, d, res)
        except Exception:      # the table is applied whatever a subscriber does with the news
            log.exception("sync subscriber %r failed on a table change", sub)
        if not d.interfaces.empty:
            try:
                sub.interfaces_changed(list(snap.interfaces), d.interfaces)
            except Exception:
                log.exception("sync subscriber %r failed on an interface change", sub)

    def _success(self, started: float) -> None:
        self.last_success = time.time()
        self.last_duration_s = self.last_success - started
        self.last_error = None

    def _record_failure(self, job: SyncJob, started: float, error: str,
                        counts: dict[str, int] | None = None, reason: str = "internal") -> None:
        key = (strip_secrets(self.source.url), reason)
        self.failures[key] = self.failures.get(key, 0) + 1
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
            "last_marker_s": self.last_marker_s,
            "interval_s": self.config.interval,
            "change_poll_s": self.config.change_detect,
            "max_removal_share": self.config.safety_valve,
            "counters": dict(self.counters),
        }


def build_service(
    source: str | RouteSource,
    fib: Fib,
    state_dir: str | os.PathLike[str] | None,
    *,
    kernel_table: int = DEFAULT_TABLE,
    kernel_protocol: int = DEFAULT_PROTOCOL,
    kernel_netns: str | None = None,
    ifname_map: IfnameMap | None = None,
    config: SyncConfig | None = None,
) -> SyncService:
    """Wire a SyncService from configuration values (``kernel_table=0``: no kernel mirror).

    ``source`` is a URL (opened through the registry in :mod:`sync.registry`) or a source already
    opened.  Raises SourceUrlError/ValueError naming the bad value, StoreError for an unusable
    state dir.
    """
    if isinstance(source, str):
        source = open_source(source)
    mirror = None if kernel_table == 0 else KernelMirror(kernel_table, kernel_protocol, netns=kernel_netns)
    applier = Applier(fib, mirror) if ifname_map is None else Applier(fib, mirror, ifname_map)
    store = None if state_dir is None else open_store(state_dir)
    return SyncService(source, applier, store, config)
