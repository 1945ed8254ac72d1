"""Supervision of the packet worker processes behind :class:`api.state.WorkerPort`.

Each worker is its own OS process (so a crash in the packet path cannot take the table,
the sync or the API down).  The supervisor restarts a worker that exits, with exponential
backoff (``workers.restart_backoff`` doubling up to 30 s, reset after 60 s of good running),
and reports per-process CPU, memory and context switches through psutil.  Counters and the
latency histogram come from a reader the worker implementation provides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from api.state import Histogram, WorkerInfo

log = logging.getLogger("xcast6.workers")

ArgvFor = Callable[[int], Sequence[str]]
CounterReader = Callable[[], tuple[dict[str, int], Histogram]]
_MAX_BACKOFF = 30.0
_STABLE_AFTER = 60.0


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


@dataclass
class _Slot:
    info: WorkerInfo
    proc: asyncio.subprocess.Process | None = None
    ps: psutil.Process | None = None
    task: asyncio.Task[None] | None = None


class WorkerSupervisor:
    """Runs ``count`` worker processes from ``argv_for(index)`` and keeps them running."""

    def __init__(
        self, count: int, argv_for: ArgvFor, *, backoff: float = 1.0, reader: CounterReader | None = None
    ) -> None:
        self._count = count
        self._argv_for = argv_for
        self._backoff = backoff
        self._reader = reader
        self._slots = [_Slot(WorkerInfo(index=i, pid=None, state="stopped")) for i in range(count)]
        self._stopping = False

    # -- WorkerPort -----------------------------------------------------------------------------
    def configured(self) -> int:
        return self._count

    def workers(self) -> list[WorkerInfo]:
        for slot in self._slots:
            self._refresh(slot)
        return [slot.info for slot in self._slots]

    def counters(self) -> dict[str, int]:
        return {} if self._reader is None else self._reader()[0]

    def latency(self) -> Histogram:
        return Histogram() if self._reader is None else self._reader()[1]

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        for slot in self._slots:
            await self._spawn(slot)
            slot.task = asyncio.get_running_loop().create_task(self._watch(slot))

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every worker, SIGKILL the ones still there after ``grace`` seconds."""
        self._stopping = True
        for slot in self._slots:
            if slot.task:
                slot.task.cancel()
        for slot in self._slots:
            proc = slot.proc
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            slot.info.state, slot.info.pid = "stopped", None
        await asyncio.gather(*(s.task for s in self._slots if s.task), return_exceptions=True)

    async def _spawn(self, slot: _Slot) -> None:
        argv = list(self._argv_for(slot.info.index))
        slot.proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        slot.info.pid, slot.info.state, slot.info.started_at = slot.proc.pid, "running", time.time()
        try:
            slot.ps = psutil.Process(slot.proc.pid)
            slot.ps.cpu_percent(None)  # prime: the next call reports usage since now
        except psutil.Error:
            slot.ps = None
        log.info("worker %d started (pid %d)", slot.info.index, slot.proc.pid)

    async def _watch(self, slot: _Slot) -> None:
        delay = self._backoff
        while not self._stopping:
            assert slot.proc is not None
            rc = await slot.proc.wait()
            if self._stopping:
                return
            ran = time.time() - (slot.info.started_at or time.time())
            why = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
            slot.info.last_exit, slot.info.state, slot.info.pid = why, "restarting", None
            if ran > _STABLE_AFTER:
                delay = self._backoff
            log.warning(
                "worker %d died (%s) after %.1f s; restarting in %.1f s", slot.info.index, why, ran, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)
            try:
                await self._spawn(slot)
            except OSError as exc:
                slot.info.state = "failed"
                log.error("worker %d could not be restarted: %s", slot.info.index, exc)
                continue
            slot.info.restarts += 1

    def _refresh(self, slot: _Slot) -> None:
        if slot.ps is not None and slot.info.state == "running":
            sample_resources(slot.info, slot.ps)
