"""The engine's REST API (FastAPI): status, routes, live lookup, diff, resync jobs, interfaces,
stats, Prometheus metrics, health.

Every endpoint but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>``,
``/openapi.json`` included (``/docs`` and ``/redoc`` are off): a ``read`` token for GET, an
``admin`` token for anything that changes state (api/auth.py); the token and the body size (64
KiB) are checked by :class:`api.guard.RequestGuard` before anything reads the body.  ``/readyz``
tells its reasons only to a caller with a token.  Errors are RFC 9457 ``application/problem+json``
naming the field at fault; unknown query parameters and body fields are refused (422) rather than
silently ignored.
"""

import asyncio
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import metrics
from api.auth import Keyring, Refusal, authenticate, authorize
from api.guard import RequestGuard
from api.models import (
    DiffCounts,
    DiffOut,
    Health,
    HistogramBucket,
    InterfaceOut,
    JobOut,
    JobResult,
    LatencyOut,
    LookupOut,
    NextHopOut,
    Problem,
    ResyncRequest,
    RouteDiffReport,
    RouteOut,
    RoutePageOut,
    StatsOut,
    StatusOut,
    SyncStatusOut,
    TableInfo,
    WorkerOut,
    WorkersSummary,
)
from api.state import EngineView, ResyncJob
from sync.gcpause import gc_paused
from sync.registry import strip_secrets
from sync.verify import Verification

log = logging.getLogger("xcast6.api")
PROBLEM = "application/problem+json"


class ApiProblem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field, self.headers = status, title, detail, field, headers


def _problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    correlation_id: str | None = None,
) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, instance=request.url.path, field=field,
                   correlation_id=correlation_id)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM, headers=headers
    )


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    titles = {
        400: "Bad request",
        401: "Missing or wrong bearer token",
        403: "The token's role may not do this (a read token on a method that changes state)",
        404: "Not found",
        413: "Request body too large",
        422: "Invalid request field",
        502: "Router fetch failed",
        503: "Not ready",
    }
    return {
        c: {"description": titles[c], "content": {PROBLEM: {"schema": Problem.model_json_schema()}}}
        for c in codes
    }


def only_query(*allowed: str) -> Callable[[Request], None]:
    """Dependency: refuse query parameters the endpoint does not define."""
    allowed_set = frozenset(allowed)

    def check(request: Request) -> None:
        for name in request.query_params:
            if name not in allowed_set:
                hint = f" (allowed: {', '.join(sorted(allowed_set))})" if allowed_set else " (none allowed)"
                raise ApiProblem(
                    422,
                    "Unknown query parameter",
                    f"unknown query parameter {name!r}{hint}",
                    field=f"query.{name}",
                )

    return check


def create_app(view: EngineView, token: Keyring | str | None, diff_min_interval: float = 5.0) -> FastAPI:
    """Build the API over an engine view.  ``token``: the keyring (its tokens may be replaced
    while the app runs), or one admin token, or None = every protected endpoint refuses (401);
    ``diff_min_interval``: seconds a /routes/diff verification is served again (0: never)."""
    keyring = token if isinstance(token, Keyring) else Keyring.admin(token)
    app = FastAPI(
        title="xcast6-engine API",
        version=view.version,
        description="XCAST6 routing engine: status, routes, diff, resync, interfaces, stats.",
        responses=_problem_responses(422),
        # The interactive pages load their scripts from a CDN and would need the schema without a
        # token: off.  /openapi.json is served behind the token (RequestGuard).
        docs_url=None,
        redoc_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="API token: the read role for GET, the admin "
                        "role for anything that changes state (api.token, XCAST6_API_TOKEN, api.tokens_file)")

    def auth(
        request: Request, _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> None:
        # RequestGuard has refused a request without the token before its body was read; this
        # check stays for the OpenAPI security requirement and for the app used without the guard.
        refusal = authorize(request.headers.get("authorization"), request.method, request.url.path, keyring)
        if isinstance(refusal, Refusal):
            raise ApiProblem(refusal.status, refusal.title, refusal.detail, refusal.field, refusal.headers)

    protected = [Depends(auth)]
    auth_errors = _problem_responses(401)
    # what a read token meets on an endpoint that changes state
    admin_errors = _problem_responses(401, 403)

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return _problem(request, exc.status, exc.title, exc.detail, exc.field, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return _problem(
            request,
            exc.status_code,
            title,
            str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errs)
        return _problem(request, 422, "Invalid request field", detail, field=where or None)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text may name files, addresses or configuration: it goes to the log
        # under an id the operator can grep, the client gets only the id.
        cid = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s %s", cid, request.method, request.url.path, exc_info=exc)
        return _problem(request, 500, "Internal error",
                        f"internal error {cid}; the engine log has the details", correlation_id=cid)

    # -- health (no auth) ---------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, dependencies=[Depends(only_query())], tags=["health"])
    def healthz() -> Health:
        """Liveness: the API process answers."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        dependencies=[Depends(only_query())],
        tags=["health"],
        responses={503: {"description": "Not ready", "model": Health}},
    )
    def readyz(request: Request) -> Any:
        """Readiness: a route table is loaded and every configured worker runs.  The reasons
        when not ready only with the bearer token (a stranger learns ready or not, no more)."""
        ok, why = view.ready()
        if ok:
            return Health(status="ready")
        if isinstance(authenticate(request.headers.get("authorization"), keyring), Refusal):
            why = []
        return JSONResponse(Health(status="not ready", reasons=why).model_dump(), status_code=503)

    # -- status ----------------------------------------------------------------------------------
    @app.get(
        "/status",
        response_model=StatusOut,
        dependencies=[*protected, Depends(only_query())],
        responses=auth_errors,
    )
    def status() -> StatusOut:
        """Version, uptime, readiness, sync state and worker summary."""
        st = view.sync.status()
        ws = view.workers.workers()
        ok, why = view.ready()
        return StatusOut(
            version=view.version,
            uptime_s=round(view.uptime(), 3),
            ready=ok,
            not_ready_because=why,
            sync=SyncStatusOut(
                source=strip_secrets(st.source),
                state=st.state,
                last_success=st.last_success,
                last_attempt=st.last_attempt,
                last_duration_s=st.last_duration_s,
                last_error=st.last_error,
                generation=st.generation,
                route_count=st.route_count,
                interval_s=st.interval_s,
                loaded_from_store=st.loaded_from_store,
                held_back=None if st.held_back is None else DiffCounts(**st.held_back),
                held_reason=st.held_reason,
                change_detection=st.change_detection,
            ),
            workers=WorkersSummary(
                configured=view.workers.configured(),
                running=sum(1 for w in ws if w.state == "running"),
                restarts=sum(w.restarts for w in ws),
                data_path=view.workers.data_path(),
            ),
            links=len(view.links.links()),
            link_mode=view.links.mode(),
            ha=None if view.ha is None else view.ha.status(),
        )

    # -- routes ----------------------------------------------------------------------------------
    def _net(value: str | None, name: str) -> ipaddress.IPv6Network | None:
        if value is None:
            return None
        try:
            return ipaddress.IPv6Network(value, strict=False)
        except ValueError:
            raise ApiProblem(
                422,
                "Invalid request field",
                f"{name}={value!r} is not an IPv6 prefix (e.g. 2001:db8::/32)",
                field=f"query.{name}",
            ) from None

    def _addr(value: str, name: str) -> ipaddress.IPv6Address:
        try:
            return ipaddress.IPv6Address(value)
        except ValueError:
            raise ApiProblem(
                422,
                "Invalid request field",
                f"{name}={value!r} is not an IPv6 address",
                field=f"query.{name}",
            ) from None

    @app.get(
        "/routes",
        response_model=RoutePageOut,
        dependencies=[*protected, Depends(only_query("prefix", "dst", "offset", "limit"))],
        responses=auth_errors,
    )
    def routes(
        prefix: Annotated[str | None, Query(description="Routes inside this prefix")] = None,
        dst: Annotated[str | None, Query(description="Routes covering this address")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> RoutePageOut:
        """The engine's forwarding table, sorted by prefix, paginated."""
        page = view.routes(
            prefix=_net(prefix, "prefix"),
            dst=None if dst is None else _addr(dst, "dst"),
            offset=offset,
            limit=limit,
        )
        return RoutePageOut(
            total=page.total,
            offset=offset,
            limit=limit,
            generation=view.fib.generation,
            routes=[RouteOut.of(r) for r in page.routes],
        )

    @app.get(
        "/routes/lookup",
        response_model=LookupOut,
        dependencies=[*protected, Depends(only_query("dst"))],
        responses=_problem_responses(401, 404),
    )
    def lookup(dst: Annotated[str, Query(description="IPv6 destination address")]) -> LookupOut:
        """Which route and next hop the engine uses for a destination (live ``explain``)."""
        addr = _addr(dst, "dst")
        gen = view.fib.generation
        hit = view.lookup(addr)
        if hit is None:
            raise ApiProblem(404, "No route", f"no route to {addr} in generation {gen}", field="query.dst")
        route, hop = hit
        links = {link.router_ifname: link.engine_ifname for link in view.links.links()}
        if hop.ifname not in links:
            # the workers skip ECMP members without an engine link (engine.forwarding.branch egress_ok)
            usable = [h for h in route.nexthops if h.ifname in links]
            if usable:
                hop = usable[int.from_bytes(addr.packed[12:], "big") % len(usable)]
        return LookupOut(
            dst=str(addr),
            generation=gen,
            route=RouteOut.of(route),
            nexthop=NextHopOut.of(hop),
            egress_link=links.get(hop.ifname),
        )

    reports = DiffReports()

    @app.get(
        "/routes/diff",
        response_model=RouteDiffReport,
        dependencies=[*protected, Depends(only_query())],
        responses=_problem_responses(401, 502),
    )
    async def route_diff() -> Response:
        """Router (fresh fetch) vs engine table vs kernel mirror (sync's own verification).

        Callers arriving while a verification runs share it; one younger than
        ``api.diff_min_interval`` seconds (the engine table unchanged since) is served again,
        ``age_s`` telling how old it is."""
        try:
            v = await view.sync.verify(max_age=diff_min_interval)
        except Exception as exc:
            raise ApiProblem(502, "Router fetch failed", str(exc) or type(exc).__name__) from None
        return Response(await reports.json(v), media_type="application/json")

    # -- resync ----------------------------------------------------------------------------------
    def _job_out(job: ResyncJob) -> JobOut:
        o = job.outcome
        return JobOut(
            id=job.id,
            state=job.state,
            trigger=job.trigger,
            force=job.force,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            rows=job.rows,
            phase=job.phase,
            error=job.error,
            href=f"/resync/{job.id}",
            result=None
            if o is None
            else JobResult(
                applied=o.applied,
                held_back=o.held_back,
                generation=o.generation,
                route_count=o.route_count,
                counts=DiffCounts(**o.counts),
                message=o.message,
            ),
        )

    @app.post(
        "/resync",
        response_model=JobOut,
        status_code=202,
        dependencies=[*protected, Depends(only_query())],
        responses={**admin_errors, **_problem_responses(413)},
    )
    async def resync(body: ResyncRequest | None = None) -> JobOut:
        """Start a resync from the router now (``force`` past the safety valve); returns the job."""
        return _job_out(view.sync.start_resync(force=bool(body and body.force)))

    @app.get(
        "/resync/{job_id}",
        response_model=JobOut,
        dependencies=[*protected, Depends(only_query())],
        responses=_problem_responses(401, 404),
    )
    def resync_job(job_id: str) -> JobOut:
        """Progress and result of a resync job."""
        job = view.sync.get_job(job_id)
        if job is None:
            raise ApiProblem(
                404,
                "No such job",
                f"no resync job {job_id!r} (jobs are kept in memory, the last 100)",
                field="path.job_id",
            )
        return _job_out(job)

    # -- interfaces / stats / metrics ------------------------------------------------------------
    @app.get(
        "/interfaces",
        response_model=list[InterfaceOut],
        dependencies=[*protected, Depends(only_query())],
        responses=auth_errors,
    )
    def interfaces() -> list[InterfaceOut]:
        """Router interface <-> engine link (VLAN, addresses, router MAC, state)."""
        return interface_rows(view)

    @app.get(
        "/stats",
        response_model=StatsOut,
        dependencies=[*protected, Depends(only_query())],
        responses=auth_errors,
    )
    def stats() -> StatsOut:
        """Counters by reason, rates, latency histogram, per-worker CPU, memory, context switches."""
        h = view.workers.latency()
        buckets = [HistogramBucket(le_us=b, count=c) for b, c in zip(h.bounds_us, h.counts, strict=False)]
        if len(h.counts) > len(h.bounds_us):
            buckets.append(HistogramBucket(le_us=None, count=h.counts[-1]))
        return StatsOut(
            counters=view.workers.counters(),
            rates_per_s=view.rates(),
            latency=LatencyOut(
                count=h.count,
                sum_us=h.sum_us,
                p50_us=h.quantile(0.5),
                p90_us=h.quantile(0.9),
                p99_us=h.quantile(0.99),
                buckets=buckets,
            ),
            workers=[WorkerOut(**vars(w)) for w in view.workers.workers()],
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        dependencies=[*protected, Depends(only_query())],
        responses={
            200: {
                "content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}},
                "description": "Prometheus text exposition format 0.0.4",
            },
            **auth_errors,
        },
    )
    def prometheus() -> PlainTextResponse:
        """Prometheus exposition of status and stats."""
        return PlainTextResponse(metrics.render(view), media_type=metrics.CONTENT_TYPE)

    # Outermost: nothing below it (FastAPI's body parsing included) runs for a refused request.
    app.add_middleware(RequestGuard, keyring=keyring)
    return app


def diff_report(v: Verification) -> RouteDiffReport:
    """The /routes/diff document of a verification (``age_s`` left out: it is per answer)."""
    snap, k = v.router, v.kernel
    kernel_detail = ""
    if k is not None:
        left_out = ", ".join(f"{n} {why}" for why, n in k.skipped.items() if n)
        kernel_detail = f"kernel mirror table {k.table}"
        if left_out:
            kernel_detail += f"; not mirrored: {left_out}"
    return RouteDiffReport(
        router=TableInfo(
            route_count=len(snap.routes),
            detail=f"{strip_secrets(snap.source)} fetched in {snap.duration_s:.2f} s",
        ),
        engine=TableInfo(route_count=v.engine_routes, detail=f"generation {v.generation}"),
        kernel=None if k is None else TableInfo(route_count=k.routes, detail=kernel_detail),
        router_vs_engine=DiffOut.of(v.router_vs_engine),
        engine_vs_kernel=None if k is None else DiffOut.of(k.drift),
        in_sync=v.in_sync,
        age_s=None,
    )


class DiffReports:
    """The /routes/diff body of the latest verification, built once and off the event loop.

    The document of a 100k-route diff is ~30 MB of JSON and seconds of CPU (a model per route,
    every address formatted): built in a thread, once per verification however many callers
    share it, and kept as bytes; each answer only appends its own ``age_s``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._of: Verification | None = None
        self._built: asyncio.Task[bytes] | None = None

    async def json(self, v: Verification) -> bytes:
        """The JSON body for ``v``, with its age now."""
        if self._of is not v or self._built is None:
            self._of = v
            self._built = asyncio.get_running_loop().create_task(asyncio.to_thread(_report_json, v))
        body = await asyncio.shield(self._built)
        age = max(0.0, round(self._clock() - v.checked_at, 3))
        return body[:-1] + b',"age_s":' + json.dumps(age).encode() + b"}"


def _report_json(v: Verification) -> bytes:
    # Hundreds of thousands of models and no cycle among them: a collection here would walk the
    # whole heap holding the GIL (stalls of ~0.3 s on the event loop at 100k routes).
    with gc_paused():
        # a JSON object, so it ends with "}": DiffReports.json appends age_s just before it
        return diff_report(v).model_dump_json(exclude={"age_s"}).encode()


def _mac(b: bytes | None) -> str | None:
    return None if b is None else ":".join(f"{x:02x}" for x in b)


def _ip(b: bytes | None) -> str | None:
    return None if b is None else str(ipaddress.IPv6Address(b))


def interface_rows(view: EngineView) -> list[InterfaceOut]:
    """Join the router's interface list with the engine links (unmapped and orphan rows kept)."""
    router_ifs = {i.name: i for i in view.sync.router_interfaces()}
    links = {link.router_ifname: link for link in view.links.links()}
    rows = []
    for name in sorted(router_ifs.keys() | links.keys()):
        ri, link = router_ifs.get(name), links.get(name)
        if link is None:
            state = "unmapped"
        elif ri is None:
            state = "orphan"
        else:
            state = "up" if link.oper_up and ri.oper_up else "down"
        rows.append(
            InterfaceOut(
                router_if=name,
                router_index=ri.index if ri else None,
                router_oper_up=ri.oper_up if ri else None,
                engine_if=link.engine_ifname if link else None,
                engine_ifindex=link.engine_ifindex if link else None,
                vlan_id=link.vlan_id if link else None,
                engine_addr=_ip(link.engine_addr) if link else None,
                router_addr=_ip(link.router_addr) if link else None,
                engine_mac=_mac(link.engine_mac) if link else None,
                router_mac=_mac(link.router_mac) if link else None,
                mtu=link.mtu if link else None,
                state=state,
            )
        )
    return rows
