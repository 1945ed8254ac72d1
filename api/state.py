"""What the API and the CLI need from sync, the workers and vlan: the seams, and the engine view.

The app never touches sockets, SNMP or netlink itself; it talks to an :class:`EngineView`
built by the daemon from three ports:

* :class:`SyncPort`    -- the route sync (sync/service.py, translated by api/syncport.py):
  status, verification (router vs engine vs kernel mirror), resync with the safety valve.
* :class:`WorkerPort`  -- the packet workers (engine/dataplane/supervisor.py):
  per-process state and resource use, drop/forward counters, latency histogram.
* :class:`LinkPort`    -- the engine links (vlan/ LinkMap) and the router's interface list.

Everything here is pure logic (filtering, paging, job bookkeeping), testable without
root; the I/O lives behind the ports.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from engine.dataplane.supervisor import Histogram, WorkerInfo
from engine.forwarding.fib import Fib
from engine.model import EngineLink, Interface, NextHop, Route, Snapshot
from sync.source import Progress
from sync.verify import Verification, route_drift

if TYPE_CHECKING:
    from api.ha import HaController


def _route_sort_key(r: Route) -> tuple[bytes, int]:
    return (r.prefix.network_address.packed, r.prefix.prefixlen)


# ---------------------------------------------------------------------------------------------
# Ports


@dataclass
class SyncStatus:
    """What the sync reports about itself (times are UNIX seconds)."""

    source: str  # redacted URL
    state: str = "starting"  # starting | idle | fetching | applying | held | error
    last_success: float | None = None
    last_attempt: float | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    generation: int = 0
    route_count: int = 0
    interval_s: float = 0.0
    held_back: dict[str, int] | None = None  # counts of a diff the safety valve refused to apply
    held_reason: str | None = None
    loaded_from_store: bool = False
    change_detection: str = ""
    # counters for /metrics: runs by (source, trigger), failures by (source, reason), runs by outcome
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass
class SyncOutcome:
    """Result of one sync run."""

    counts: dict[str, int]  # added / removed / changed
    applied: bool
    held_back: bool
    generation: int
    route_count: int
    message: str = ""


class SyncPort(Protocol):
    def status(self) -> SyncStatus: ...

    def table_loaded(self) -> bool: ...

    def router_interfaces(self) -> list[Interface]: ...

    async def verify(self, progress: Progress | None = None, max_age: float = 0.0) -> Verification:
        """Router (fresh fetch) vs engine table vs kernel mirror (sync.verify); raises on a
        failed fetch.  Concurrent callers share one verification; with ``max_age`` > 0 one
        younger than that (Fib unchanged) may be returned again."""
        ...

    def start_resync(self, force: bool) -> ResyncJob:
        """Queue a resync (a request while one is queued joins it); returns its current state."""
        ...

    def get_job(self, job_id: str) -> ResyncJob | None: ...


class WorkerPort(Protocol):
    def workers(self) -> list[WorkerInfo]: ...

    def configured(self) -> int: ...

    def data_path(self) -> str: ...

    def counters(self) -> dict[str, int]: ...

    def latency(self) -> Histogram: ...


class LinkPort(Protocol):
    def mode(self) -> str: ...

    def links(self) -> list[EngineLink]: ...


# ---------------------------------------------------------------------------------------------
# Resync jobs


@dataclass
class ResyncJob:
    """A resync job as the API shows it (a copy: read it again for progress)."""

    id: str
    force: bool
    created_at: float
    state: str = "queued"  # queued | running | done | held | failed
    trigger: str = "manual"
    started_at: float | None = None
    finished_at: float | None = None
    rows: int = 0
    phase: str = ""
    outcome: SyncOutcome | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# The engine view the app reads


@dataclass
class RoutePage:
    total: int
    routes: list[Route]


class EngineView:
    """The read/command surface of a running engine, shared by the API and the daemon."""

    def __init__(
        self,
        *,
        fib: Fib,
        sync: SyncPort,
        workers: WorkerPort,
        links: LinkPort,
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fib = fib
        self.sync = sync
        self.workers = workers
        self.links = links
        self.version = version
        self.started_at = clock()
        self._clock = clock
        self._rate_prev: tuple[float, dict[str, int]] | None = None
        self._rates: dict[str, float] = {}
        self._sorted_cache: tuple[int, list[Route], list[tuple[bytes, int]]] | None = None
        self.ha: HaController | None = None      # engine pairs ([ha]); set by the daemon

    # -- readiness ------------------------------------------------------------------------
    def uptime(self) -> float:
        return self._clock() - self.started_at

    def workers_running(self) -> bool:
        want = self.workers.configured()
        return sum(1 for w in self.workers.workers() if w.state == "running") >= want

    def ready(self) -> tuple[bool, list[str]]:
        """Ready = a table is loaded and every configured worker runs; else the reasons."""
        why = []
        if not self.sync.table_loaded():
            why.append("no route table loaded yet")
        if not self.workers_running():
            running = sum(1 for w in self.workers.workers() if w.state == "running")
            why.append(f"{running} of {self.workers.configured()} workers running")
        return (not why, why)

    # -- routes -----------------------------------------------------------------------------
    def _sorted(self) -> tuple[list[Route], list[tuple[bytes, int]]]:
        """The table sorted by (address, length), built once per Fib generation (a 250k table
        takes ~0.5 s to sort: never per request)."""
        gen = self.fib.generation
        if self._sorted_cache is None or self._sorted_cache[0] != gen:
            ordered = sorted(self.fib.routes(), key=_route_sort_key)
            self._sorted_cache = (gen, ordered, [_route_sort_key(r) for r in ordered])
        return self._sorted_cache[1], self._sorted_cache[2]

    def routes(
        self,
        *,
        prefix: ipaddress.IPv6Network | None = None,
        dst: ipaddress.IPv6Address | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> RoutePage:
        """Table routes sorted by address then length; ``prefix`` keeps routes inside it
        (equal or more specific), ``dst`` keeps routes covering that address."""
        ordered, keys = self._sorted()
        if prefix is not None:
            # routes inside a prefix are one contiguous run of the (address, length) order
            lo = bisect.bisect_left(keys, (prefix.network_address.packed, prefix.prefixlen))
            hi = bisect.bisect_right(keys, (prefix.broadcast_address.packed, 128))
            selected = [r for r in ordered[lo:hi] if r.prefix.prefixlen >= prefix.prefixlen]
        else:
            selected = ordered
        if dst is not None:
            # covering routes: at most one per prefix length, found by exact lookups
            covering = []
            for n in range(129):
                r = self.fib.get(ipaddress.IPv6Network((int(dst) >> (128 - n) << (128 - n), n)))
                if r is not None and (prefix is None or r.prefix.subnet_of(prefix)):
                    covering.append(r)
            selected = sorted(covering, key=_route_sort_key)
        return RoutePage(total=len(selected), routes=selected[offset : offset + limit])

    def lookup(self, dst: ipaddress.IPv6Address) -> tuple[Route, NextHop] | None:
        return self.fib.lookup(dst.packed)

    # -- stats ------------------------------------------------------------------------------
    def sample_rates(self) -> dict[str, float]:
        """Per-second rates of every counter since the previous sample (call periodically)."""
        now, counters = self._clock(), dict(self.workers.counters())
        if self._rate_prev is not None:
            t0, c0 = self._rate_prev
            dt = now - t0
            if dt > 0:
                self._rates = {k: max(0, v - c0.get(k, 0)) / dt for k, v in counters.items()}
        self._rate_prev = (now, counters)
        return self._rates

    def rates(self) -> dict[str, float]:
        return dict(self._rates)


class StaticSync:
    """SyncPort over a fixed snapshot: the table an engine serves when it only replays a
    stored/offline table (benchmarks, ``explain``-style tools); resync re-applies it."""

    def __init__(self, fib: Fib, snapshot: Snapshot) -> None:
        self.fib = fib
        self.snapshot = snapshot
        self.fib.replace(snapshot.routes)
        self._jobs: dict[str, ResyncJob] = {}

    def status(self) -> SyncStatus:
        return SyncStatus(
            source=self.snapshot.source,
            state="idle",
            last_success=self.snapshot.fetched_at,
            generation=self.fib.generation,
            route_count=len(self.fib),
        )

    def table_loaded(self) -> bool:
        return True

    def router_interfaces(self) -> list[Interface]:
        return list(self.snapshot.interfaces)

    async def verify(self, progress: Progress | None = None, max_age: float = 0.0) -> Verification:
        """The fixed snapshot is the router; there is no kernel mirror.  Nothing is fetched, so
        nothing is shared or reused; the diff runs in a thread (seconds of CPU for a big table)."""
        routes = list(self.fib.routes())
        drift = await asyncio.to_thread(route_drift, routes, self.snapshot.routes)
        return Verification(self.snapshot, len(routes), self.fib.generation, drift, None)

    def start_resync(self, force: bool) -> ResyncJob:
        now = time.time()
        job = ResyncJob(
            id=f"static-{len(self._jobs) + 1}",
            force=force,
            created_at=now,
            state="done",
            started_at=now,
            finished_at=now,
            rows=len(self.snapshot.routes),
            phase="done",
            outcome=SyncOutcome(
                {"added": 0, "removed": 0, "changed": 0},
                applied=False,
                held_back=False,
                generation=self.fib.generation,
                route_count=len(self.fib),
                message="no change",
            ),
        )
        self._jobs[job.id] = job
        return job

    def get_job(self, job_id: str) -> ResyncJob | None:
        return self._jobs.get(job_id)
