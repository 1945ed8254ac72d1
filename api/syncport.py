"""The route sync behind :class:`api.state.SyncPort`: an adapter over sync.service.SyncService.

SyncService (sync/) owns fetch -> diff -> safety valve -> apply (kernel mirror, then Fib) ->
store; this module only builds it from the configuration and translates its state and jobs
into what the API shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from api.config import Config, redact_url
from api.state import ResyncJob, SyncOutcome, SyncStatus
from engine.forwarding.fib import Fib
from engine.model import Interface, NextHop, Route, Snapshot
from sync.apply import Applier, IfnameMap
from sync.kernel import KernelMirror
from sync.service import SyncConfig, SyncJob, SyncService
from sync.source import Progress, RouteSource, SourceError
from sync.store import SyncStore

log = logging.getLogger("xcast6.sync")

_JOB_STATE = {
    "queued": "queued",
    "running": "running",
    "applied": "done",
    "unchanged": "done",
    "held": "held",
    "failed": "failed",
}


def sync_config(cfg: Config) -> SyncConfig:
    return SyncConfig(
        interval_s=cfg.sync.interval,
        change_poll_s=cfg.sync.change_detect,
        max_removal_share=cfg.sync.safety_valve,
        fetch_timeout_s=cfg.sync.timeout,
    )


class ServiceSync:
    """SyncPort over a SyncService (see module docstring)."""

    def __init__(self, service: SyncService, fib: Fib, mirror: KernelMirror | None = None) -> None:
        self.service = service
        self.fib = fib
        self.mirror = mirror
        self.loaded_from_store = False

    @classmethod
    def build(
        cls, cfg: Config, source: RouteSource, fib: Fib, ifname_map: IfnameMap | None = None
    ) -> ServiceSync:
        """SyncService with the SQLite store in the state directory and, when configured, the
        kernel mirror table."""
        mirror = None
        if cfg.sync.kernel_table:
            mirror = KernelMirror(table=cfg.sync.kernel_table, protocol=cfg.sync.kernel_proto)
        applier = Applier(fib, mirror) if ifname_map is None else Applier(fib, mirror, ifname_map)
        store = SyncStore(cfg.engine.state_dir)
        return cls(SyncService(source, applier, store, sync_config(cfg)), fib, mirror)

    async def start(self) -> None:
        """Serve the stored snapshot at once, then start the loops (first fetch queued)."""
        await self.service.start(initial_sync=True)
        # start() restores the store before it queues the first fetch: serving now = from the store
        self.loaded_from_store = self.service.serving is not None

    async def wait_first_fetch(self, timeout: float) -> None:
        """Without a stored table, give the start-up fetch up to ``timeout`` seconds, so that
        the links and workers start from the router's interfaces (a slow router only delays
        them; everything keeps retrying in the background)."""
        if self.service.serving is not None:
            return
        for job in self.service.jobs():
            if job.trigger == "startup":
                with contextlib.suppress(TimeoutError):
                    await job.wait(timeout)

    async def stop(self) -> None:
        await self.service.stop()

    def reconfigure(self, source: RouteSource, config: SyncConfig) -> None:
        """SIGHUP: new source settings; the serving table stays, a resync follows at once."""
        svc = self.service
        svc.source = source
        svc.config = config
        svc.request_resync(trigger="reload")

    # -- SyncPort ---------------------------------------------------------------------------
    def status(self) -> SyncStatus:
        st = self.service.state()
        held = st["held"]
        running = st["running_job"]
        if running is not None:
            phase = running["progress"].get("phase", "fetch")
            state = "applying" if phase in ("diff", "apply", "store") else "fetching"
        elif held is not None:
            state = "held"
        elif st["last_error"] and (
            st["last_success"] is None or (st["last_attempt"] or 0) > (st["last_success"] or 0)
        ):
            state = "error"
        elif self.service.serving is None:
            state = "starting"
        else:
            state = "idle"
        return SyncStatus(
            source=redact_url(self.service.source.url),
            state=state,
            last_success=st["last_success"],
            last_attempt=st["last_attempt"],
            last_duration_s=st["last_duration_s"],
            last_error=st["last_error"],
            generation=self.fib.generation,
            route_count=len(self.fib),
            interval_s=st["interval_s"],
            held_back=None
            if held is None
            else {k: int(held["counts"].get(k, 0)) for k in ("added", "removed", "changed")},
            held_reason=None if held is None else held["reason"],
            loaded_from_store=self.loaded_from_store,
            change_detection=st["change_detection"],
        )

    def table_loaded(self) -> bool:
        return self.service.serving is not None

    def router_interfaces(self) -> list[Interface]:
        s = self.service.serving
        return [] if s is None else list(s.interfaces)

    async def fetch_fresh(self, progress: Progress | None = None) -> Snapshot:
        timeout = self.service.config.fetch_timeout_s
        try:
            return await asyncio.wait_for(self.service.source.fetch(progress), timeout)
        except TimeoutError:
            raise SourceError(
                f"{redact_url(self.service.source.url)}: no complete answer within "
                f"{timeout:g} s (sync.timeout)"
            ) from None

    async def kernel_routes(self) -> list[Route] | None:
        mirror = self.mirror
        if mirror is None:
            return None
        ours, _foreign = await asyncio.to_thread(mirror.dump)
        out = []
        for kr in ours.values():
            hops = tuple(
                sorted({NextHop("", nh.gateway) for nh in kr.nexthops}, key=lambda h: h.gateway or b"")
            ) or (NextHop(""),)
            out.append(
                Route(
                    prefix=ipaddress.IPv6Network((kr.dst, kr.dst_len)),
                    nexthops=hops,
                    protocol=str(kr.protocol),
                    metric=kr.priority,
                )
            )
        return out

    def start_resync(self, force: bool) -> ResyncJob:
        return self._job(self.service.request_resync(force=force, trigger="manual"))

    def get_job(self, job_id: str) -> ResyncJob | None:
        job = self.service.job(job_id)
        return None if job is None else self._job(job)

    def _job(self, job: SyncJob) -> ResyncJob:
        res = job.result or {}
        outcome = None
        if job.status in ("applied", "unchanged", "held"):
            counts = res.get("counts", {})
            outcome = SyncOutcome(
                counts={k: int(counts.get(k, 0)) for k in ("added", "removed", "changed")},
                applied=job.status == "applied",
                held_back=job.status == "held",
                generation=int(res.get("apply", {}).get("generation", self.fib.generation)),
                route_count=int(counts.get("new_count", len(self.fib))),
                message=res.get("reason") or ("no change" if job.status == "unchanged" else "applied"),
            )
        return ResyncJob(
            id=job.id,
            force=job.force,
            created_at=job.created_at,
            state=_JOB_STATE.get(job.status, job.status),
            trigger=job.trigger,
            started_at=job.started_at,
            finished_at=job.finished_at,
            rows=int(job.progress.get("rows", 0)),
            phase=str(job.progress.get("phase", "")),
            outcome=outcome,
            error=None if job.status == "held" else job.error,
        )
