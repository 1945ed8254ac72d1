"""The packet workers behind :class:`api.state.WorkerPort`: engine.dataplane.worker.WorkerPool supervised.

The pool forks its workers after the table is loaded (they inherit the Fib copy-on-write) and
applies sync diffs to them (``WorkerPool.routes_hook`` on ``SyncService.on_routes``).  This
module watches the workers, revives a dead one after a backoff (doubling up to 30 s, reset
after a minute of good running) -- a revived worker forks from the supervisor's current Fib,
so the table is never lost -- and reads their counters and latency histogram from the shared
counter file for /stats and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from api.state import Histogram, WorkerInfo
from api.workers import sample_resources

log = logging.getLogger("xcast6.workers")
_MAX_BACKOFF = 30.0
_STABLE_AFTER = 60.0


class PoolWorkers:
    """WorkerPort over an ``engine.dataplane.worker.WorkerPool`` (see module docstring)."""

    def __init__(self, pool: Any, *, backoff: float = 1.0, poll_s: float = 0.2) -> None:
        self.pool = pool
        self._backoff = backoff
        self._poll_s = poll_s
        n = int(pool.workers)
        self._info = [WorkerInfo(index=i, pid=None, state="stopped") for i in range(n)]
        self._ps: list[psutil.Process | None] = [None] * n
        self._delay = [backoff] * n
        self._task: asyncio.Task[None] | None = None
        self._counters: Any = None
        # One thread talks to the pool: table diffs reach the workers in order, and a revive
        # never races a broadcast over the same pipes.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xcast6-pool")

    # -- lifecycle ------------------------------------------------------------------------------
    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def routes_hook(self, snap: Any, d: Any, res: Any = None) -> None:
        """``SyncService.on_routes``: queue the diff for the workers (in order, off the loop)."""
        self._executor.submit(self._safely, self.pool.routes_hook, snap, d, res)

    def set_links(self, linkmap: Any) -> None:
        """LinkService listener: new engine links for the workers (in order, off the loop)."""
        self._executor.submit(self._safely, self.pool.set_links, linkmap)

    @staticmethod
    def _safely(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception(
                "worker pool update %s failed (a revived worker forks the current table)",
                getattr(fn, "__name__", fn),
            )

    async def start(self) -> None:
        await self._call(self.pool.start)
        for i in range(len(self._info)):
            self._mark_started(i)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._call(self.pool.stop)
        self._executor.shutdown(wait=False)
        for info in self._info:
            info.state, info.pid = "stopped", None
        if self._counters is not None:
            with contextlib.suppress(Exception):
                self._counters.close()
            self._counters = None

    def _mark_started(self, i: int) -> None:
        proc = self.pool.procs[i]
        info = self._info[i]
        info.pid, info.state, info.started_at = proc.pid, "running", time.time()
        try:
            ps = psutil.Process(proc.pid)
            ps.cpu_percent(None)
        except psutil.Error:
            ps = None
        self._ps[i] = ps

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            alive = self.pool.alive()
            dead = [i for i, ok in enumerate(alive) if not ok]
            if not dead:
                continue
            for i in dead:
                info = self._info[i]
                code = self.pool.procs[i].exitcode
                info.last_exit = (
                    f"signal {signal.Signals(-code).name}"
                    if code is not None and code < 0
                    else f"exit status {code}"
                )
                ran = time.time() - (info.started_at or time.time())
                if ran > _STABLE_AFTER:
                    self._delay[i] = self._backoff
                info.state, info.pid = "restarting", None
                log.warning(
                    "worker %d died (%s) after %.1f s; restarting in %.1f s",
                    i,
                    info.last_exit,
                    ran,
                    self._delay[i],
                )
            await asyncio.sleep(max(self._delay[i] for i in dead))
            try:
                revived = await self._call(self.pool.revive)
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

    # -- WorkerPort -----------------------------------------------------------------------------
    def configured(self) -> int:
        return len(self._info)

    def workers(self) -> list[WorkerInfo]:
        for i, info in enumerate(self._info):
            ps = self._ps[i]
            if ps is not None and info.state == "running":
                sample_resources(info, ps)
        return list(self._info)

    def _stats(self) -> Any:
        from engine.dataplane.counters import CounterFile

        if self._counters is None:
            try:
                self._counters = CounterFile.open(Path(self.pool.counters_path))
            except (OSError, ValueError):
                return None
        return self._counters.snapshot()

    def counters(self) -> dict[str, int]:
        st = self._stats()
        if st is None:
            return {}
        return {k: int(v) for k, v in st.totals.items() if not k.startswith("latency_")}

    def latency(self) -> Histogram:
        import engine.dataplane.histogram as histogram

        st = self._stats()
        if st is None:
            return Histogram()
        return Histogram(
            bounds_us=[b / 1000 for b in histogram.BOUNDS_NS],
            counts=list(st.buckets),
            sum_us=st.totals.get("latency_sum_ns", 0) / 1000,
        )
