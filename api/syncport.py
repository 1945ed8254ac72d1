"""The API's view of sync.service.SyncService: its state and jobs translated into the API's models.

SyncService (sync/) owns fetch -> diff -> safety valve -> apply (kernel mirror, then Fib) ->
store, and the router/engine/mirror verification; it is built and run by the pipeline
(api/pipeline.py).  Nothing here reads the router or the kernel: this is translation only.
"""

from __future__ import annotations

from api.state import ResyncJob, SyncOutcome, SyncStatus
from engine.model import Interface
from sync.registry import strip_secrets
from sync.service import SyncJob, SyncService
from sync.source import Progress
from sync.verify import Verification

_JOB_STATE = {
    "queued": "queued",
    "running": "running",
    "applied": "done",
    "unchanged": "done",
    "held": "held",
    "failed": "failed",
}


class SyncServiceView:
    """:class:`api.state.SyncPort` of a SyncService (see module docstring)."""

    def __init__(self, service: SyncService) -> None:
        self.service = service

    def status(self) -> SyncStatus:
        """The service's state in the API's terms (one word for what it is doing)."""
        svc = self.service
        st = svc.state()
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
        elif svc.serving is None:
            state = "starting"
        else:
            state = "idle"
        return SyncStatus(
            source=strip_secrets(svc.source.url),
            state=state,
            last_success=st["last_success"],
            last_attempt=st["last_attempt"],
            last_duration_s=st["last_duration_s"],
            last_error=st["last_error"],
            generation=st["generation"],
            route_count=st["route_count"],
            interval_s=st["interval_s"],
            held_back=None
            if held is None
            else {k: int(held["counts"].get(k, 0)) for k in ("added", "removed", "changed")},
            held_reason=None if held is None else held["reason"],
            loaded_from_store=svc.loaded_from_store,
            change_detection=st["change_detection"],
            attempts=dict(svc.attempts),
            failures=dict(svc.failures),
            outcomes={k: int(st["counters"][k]) for k in ("applied", "unchanged", "held", "failed")},
        )

    def table_loaded(self) -> bool:
        return self.service.table_loaded()

    def router_interfaces(self) -> list[Interface]:
        return self.service.router_interfaces()

    async def verify(self, progress: Progress | None = None, max_age: float = 0.0) -> Verification:
        """SyncService.verify: shared while it runs, reused up to ``max_age`` seconds."""
        return await self.service.verify(progress, max_age)

    def start_resync(self, force: bool) -> ResyncJob:
        return self._job(self.service.request_resync(force=force, trigger="manual"))

    def get_job(self, job_id: str) -> ResyncJob | None:
        job = self.service.job(job_id)
        return None if job is None else self._job(job)

    def _job(self, job: SyncJob) -> ResyncJob:
        fib = self.service.applier.fib
        res = job.result or {}
        outcome = None
        if job.status in ("applied", "unchanged", "held"):
            counts = res.get("counts", {})
            outcome = SyncOutcome(
                counts={k: int(counts.get(k, 0)) for k in ("added", "removed", "changed")},
                applied=job.status == "applied",
                held_back=job.status == "held",
                generation=int(res.get("apply", {}).get("generation", fib.generation)),
                route_count=int(counts.get("new_count", len(fib))),
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
