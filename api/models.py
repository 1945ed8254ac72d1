"""Response and request schemas of the engine API (they make the OpenAPI document complete)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.model import NextHop, Route
from sync.verify import RouteDrift


class Problem(BaseModel):
    """RFC 9457 problem details (served as application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = Field(None, description="The request field at fault, when one is.")
    correlation_id: str | None = Field(
        None, description="For an internal error: the id under which the engine logged it."
    )


class NextHopOut(BaseModel):
    ifname: str = Field(description="Router egress interface")
    gateway: str | None = Field(description="Router next-hop address; null for a connected route")

    @classmethod
    def of(cls, h: NextHop) -> NextHopOut:
        return cls(ifname=h.ifname, gateway=h.gateway_text())


class RouteOut(BaseModel):
    prefix: str
    nexthops: list[NextHopOut]
    protocol: str
    metric: int

    @classmethod
    def of(cls, r: Route) -> RouteOut:
        return cls(
            prefix=str(r.prefix),
            nexthops=[NextHopOut.of(h) for h in r.nexthops],
            protocol=r.protocol,
            metric=r.metric,
        )


class RoutePageOut(BaseModel):
    total: int = Field(description="Routes matching the filter")
    offset: int
    limit: int
    generation: int
    routes: list[RouteOut]


class LookupOut(BaseModel):
    dst: str
    generation: int
    route: RouteOut
    nexthop: NextHopOut = Field(description="The member this destination uses (ECMP pick is per destination)")
    egress_link: str | None = Field(
        None,
        description="Engine link the copies leave on; null when no engine link stands for the next "
        "hop's router interface (then the workers count the destination as no_route)",
    )


class DiffCounts(BaseModel):
    added: int
    removed: int
    changed: int


class ChangeOut(BaseModel):
    prefix: str
    before: RouteOut
    after: RouteOut


class DiffOut(BaseModel):
    counts: DiffCounts
    added: list[RouteOut]
    removed: list[RouteOut]
    changed: list[ChangeOut]

    @classmethod
    def of(cls, d: RouteDrift) -> DiffOut:
        return cls(
            counts=DiffCounts(**d.counts()),
            added=[RouteOut.of(r) for r in d.added],
            removed=[RouteOut.of(r) for r in d.removed],
            changed=[
                ChangeOut(prefix=str(c.new.prefix), before=RouteOut.of(c.old), after=RouteOut.of(c.new))
                for c in d.changed
            ],
        )


class TableInfo(BaseModel):
    route_count: int
    detail: str


class RouteDiffReport(BaseModel):
    router: TableInfo = Field(description="Fresh fetch from the router")
    engine: TableInfo = Field(description="Engine forwarding table")
    kernel: TableInfo | None = Field(description="Kernel mirror table; null when not configured")
    router_vs_engine: DiffOut = Field(description="What a resync would change in the engine table")
    engine_vs_kernel: DiffOut | None = Field(
        description="What a mirror reconcile would change in the kernel table for the engine table "
        "(kernel routes: engine interfaces, protocol proto-N); routes left out on purpose (no engine "
        "link, link down, foreign route) are not drift"
    )
    in_sync: bool
    age_s: float | None = Field(
        None,
        description="Seconds since this verification was taken: a result younger than "
        "api.diff_min_interval is served again instead of walking the router again",
    )


class SyncStatusOut(BaseModel):
    source: str
    state: str
    last_success: float | None
    last_attempt: float | None
    last_duration_s: float | None
    last_error: str | None
    generation: int
    route_count: int
    interval_s: float
    loaded_from_store: bool
    held_back: DiffCounts | None = Field(
        description="Diff the safety valve holds back (force a resync to apply)"
    )
    held_reason: str | None
    change_detection: str = Field(description="active | disabled | unsupported ... | error: ...")


class WorkerOut(BaseModel):
    index: int
    pid: int | None
    state: str
    restarts: int
    started_at: float | None
    last_exit: str | None
    cpu_percent: float | None
    cpu_seconds: float | None
    rss_bytes: int | None
    ctx_switches_voluntary: int | None
    ctx_switches_involuntary: int | None
    cpus: list[int] | None = Field(None, description="CPUs the worker may run on (its affinity; "
                                   "one entry when workers.cpus pinned it)")


class WorkersSummary(BaseModel):
    configured: int
    running: int
    restarts: int
    data_path: str = Field("", description="which data path runs and why: the TC eBPF program on the "
                           "ingress links, or the Python workers alone ([dataplane] mode and the reason)")


class StatusOut(BaseModel):
    version: str
    uptime_s: float
    ready: bool
    not_ready_because: list[str]
    sync: SyncStatusOut
    workers: WorkersSummary
    links: int
    link_mode: str
    ha: dict[str, Any] | None = Field(
        None, description="Engine pairs ([ha]): BFD admin state, session states, transitions")


class ResyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(False, description="Apply even if the safety valve would hold the diff back")


class JobResult(BaseModel):
    applied: bool
    held_back: bool
    generation: int
    route_count: int
    counts: DiffCounts
    message: str


class JobOut(BaseModel):
    id: str
    state: str = Field(description="queued | running | done | held | failed")
    trigger: str
    force: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    rows: int = Field(description="Rows read so far by the running fetch")
    phase: str
    result: JobResult | None
    error: str | None
    href: str


class InterfaceOut(BaseModel):
    router_if: str
    router_index: int | None
    router_oper_up: bool | None
    engine_if: str | None
    engine_ifindex: int | None
    vlan_id: int | None
    engine_addr: str | None
    router_addr: str | None
    engine_mac: str | None
    router_mac: str | None
    mtu: int | None
    state: str = Field(
        description="up | down | unmapped (router interface with no engine link) | "
        "orphan (engine link whose router interface is gone)"
    )


class HistogramBucket(BaseModel):
    le_us: float | None = Field(description="Upper bound in microseconds; null = +Inf")
    count: int


class LatencyOut(BaseModel):
    count: int
    sum_us: float
    p50_us: float | None
    p90_us: float | None
    p99_us: float | None
    buckets: list[HistogramBucket]


class StatsOut(BaseModel):
    counters: dict[str, int]
    rates_per_s: dict[str, float]
    latency: LatencyOut
    workers: list[WorkerOut]


class Health(BaseModel):
    status: str
    reasons: list[str] = []
