"""The packet workers' supervisor: the dataplane's own lifecycle, run on the daemon's event loop.

:class:`engine.dataplane.worker.WorkerPool` forks the workers after the table is loaded (they
inherit the Fib copy-on-write) and sends them table diffs and link maps over one pipe each.
This supervisor owns that pool: it feeds it from one thread (diffs reach the workers in order,
and a revive never races a broadcast over the same pipes), watches the workers, revives a dead
one after a backoff (doubling up to 30 s, reset after a minute of good running) -- a revived
worker forks from the current Fib, so the table is never lost -- and reports per-process CPU,
memory and context switches (psutil) and the counters and latency histogram the workers
publish in the shared counter file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from engine.dataplane import histogram
from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import WorkerPool
from engine.model import LinkMap, SnapshotDiff

log = logging.getLogger("xcast6.workers")
_MAX_BACKOFF = 30.0
_STABLE_AFTER = 60.0
T = TypeVar("T")


@dataclass
class WorkerInfo:
    """One worker process as the supervisor last saw it."""

    index: int
    pid: int | None
    state: str  # running | restarting | stopped | failed
    restarts: int = 0
    started_at: float | None = None
    last_exit: str | None = None
    cpu_percent: float | None = None
    cpu_seconds: float | None = None
    rss_bytes: int | None = None
    ctx_switches_voluntary: int | None = None
    ctx_switches_involuntary: int | None = None
    cpus: list[int] | None = None       # the CPUs the worker may run on (its affinity)


@dataclass
class Histogram:
    """Latency histogram: cumulative-free bucket counts with upper bounds in microseconds."""

    bounds_us: list[float] = field(default_factory=list)  # last bucket is +Inf (not listed)
    counts: list[int] = field(default_factory=list)  # len(bounds_us) + 1
    sum_us: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (None if empty or in +Inf)."""
        total = self.count
        if total == 0:
            return None
        want = q * total
        seen = 0
        for bound, c in zip(self.bounds_us, self.counts, strict=False):
            seen += c
            if seen >= want:
                return bound
        return None


def sample_resources(info: WorkerInfo, ps: psutil.Process) -> None:
    """Refresh a running worker's CPU, memory and context-switch figures (a vanished one is left)."""
    try:
        with ps.oneshot():
            cpu = ps.cpu_times()
            info.cpu_seconds = cpu.user + cpu.system
            info.cpu_percent = ps.cpu_percent(None)
            info.rss_bytes = ps.memory_info().rss
            ctx = ps.num_ctx_switches()
            info.ctx_switches_voluntary, info.ctx_switches_involuntary = ctx.voluntary, ctx.involuntary
            info.cpus = sorted(ps.cpu_affinity())
    except psutil.Error:
        pass


class WorkerSupervisor:
    """Runs a WorkerPool's workers and keeps them running; ``pool=None`` = no workers configured."""

    def __init__(self, pool: WorkerPool | None, *, backoff: float = 1.0, poll_s: float = 0.2) -> None:
        self.pool = pool
        self._backoff = backoff
        self._poll_s = poll_s
        n = 0 if pool is None else pool.workers
        self._info = [WorkerInfo(index=i, pid=None, state="stopped") for i in range(n)]
        self._ps: list[psutil.Process | None] = [None] * n
        self._delay = [backoff] * n
        self._task: asyncio.Task[None] | None = None
        self._counters: CounterFile | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xcast6-pool")

    # -- feeding the workers (any thread; queued in order, never on the event loop) ---------
    def feed(self, d: SnapshotDiff) -> None:
        """A sync diff for the workers (the master Fib is already updated by sync's apply)."""
        if self.pool is not None:
            self._executor.submit(self._safely, self.pool.send_diff, d)

    def set_links(self, linkmap: LinkMap) -> None:
        """New engine links for the workers."""
        if self.pool is not None:
            self._executor.submit(self._safely, self.pool.set_links, linkmap)

    @staticmethod
    def _safely(fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception(
                "worker pool update %s failed (a revived worker forks the current table)",
                getattr(fn, "__name__", fn),
            )

    # -- lifecycle ------------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Fork the workers (from the table loaded now) and start watching them."""
        if self.pool is None:
            return
        await self._call(self.pool.start)
        for i in range(len(self._info)):
            self._mark_started(i)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Stop watching, stop the workers, close the counter file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.pool is not None:
            await self._call(self.pool.stop)
        self._executor.shutdown(wait=False)
        for info in self._info:
            info.state, info.pid = "stopped", None
        if self._counters is not None:
            with contextlib.suppress(Exception):
                self._counters.close()
            self._counters = None

    def _mark_started(self, i: int) -> None:
        assert self.pool is not None
        pid = self.pool.procs[i].pid
        info = self._info[i]
        info.pid, info.state, info.started_at = pid, "running", time.time()
        ps: psutil.Process | None
        try:
            ps = psutil.Process(pid)
            ps.cpu_percent(None)  # prime: the next call reports usage since now
        except psutil.Error:
            ps = None
        self._ps[i] = ps

    async def _watch(self) -> None:
        pool = self.pool
        assert pool is not None
        while True:
            await asyncio.sleep(self._poll_s)
            dead = [i for i, ok in enumerate(pool.alive()) if not ok]
            if not dead:
                continue
            for i in dead:
                info = self._info[i]
                code = pool.procs[i].exitcode
                info.last_exit = (
                    f"signal {signal.Signals(-code).name}"
                    if code is not None and code < 0
                    else f"exit status {code}"
                )
                ran = time.time() - (info.started_at or time.time())
                if ran > _STABLE_AFTER:
                    self._delay[i] = self._backoff
                info.state, info.pid = "restarting", None
                log.warning("worker %d died (%s) after %.1f s; restarting in %.1f s",
                            i, info.last_exit, ran, self._delay[i])
            await asyncio.sleep(max(self._delay[i] for i in dead))
            try:
                revived = await self._call(pool.revive)
            except Exception as exc:  # keep watching: the next round tries again
                log.error("worker restart failed: %s", exc)
                for i in dead:
                    self._delay[i] = min(self._delay[i] * 2, _MAX_BACKOFF)
                continue
            for i in revived:
                self._mark_started(i)
                self._info[i].restarts += 1
                self._delay[i] = min(self._delay[i] * 2, _MAX_BACKOFF)
                log.info("worker %d restarted (pid %s)", i, self._info[i].pid)

    # -- what the API reads ---------------------------------------------------------------------
    def configured(self) -> int:
        """How many workers are configured."""
        return len(self._info)

    def data_path(self) -> str:
        """Which data path runs and why (the TC eBPF program, or the Python workers alone and the
        reason); "" when no workers are configured."""
        return "" if self.pool is None else self.pool.data_path

    def workers(self) -> list[WorkerInfo]:
        """Every worker, with fresh resource figures for the running ones."""
        for i, info in enumerate(self._info):
            ps = self._ps[i]
            if ps is not None and info.state == "running":
                sample_resources(info, ps)
        return list(self._info)

    def _stats(self) -> Any:
        if self.pool is None:
            return None
        if self._counters is None:
            try:
                self._counters = CounterFile.open(Path(self.pool.counters_path))
            except (OSError, ValueError):
                return None
        return self._counters.snapshot()

    def counters(self) -> dict[str, int]:
        """Packet counters summed over the workers (drop reasons, copies, syscalls...)."""
        st = self._stats()
        if st is None:
            return {}
        return {k: int(v) for k, v in st.totals.items() if not k.startswith("latency_")}

    def latency(self) -> Histogram:
        """The workers' latency histogram (arrival to copies written), in microseconds."""
        st = self._stats()
        if st is None:
            return Histogram()
        return Histogram(
            bounds_us=[b / 1000 for b in histogram.BOUNDS_NS],
            counts=list(st.buckets),
            sum_us=st.totals.get("latency_sum_ns", 0) / 1000,
        )
