"""CLI: ``run``, ``config check`` and the API client commands (status, routes, diff, resync,
interfaces, stats).  Human tables by default, ``--json`` for scripts; exit codes in api.client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from api.client import (
    EXIT_DIFFERS,
    EXIT_NOT_APPLIED,
    EXIT_OK,
    EXIT_USAGE,
    ApiClient,
    ClientError,
    resolve_target,
)

if TYPE_CHECKING:
    from api.config import Config

UrlOpt = typer.Option(None, "--url", help="API URL (env XCAST6_API_URL; default from the config file)")
TokenOpt = typer.Option(None, "--token", help="API token (env XCAST6_API_TOKEN; default from the config)")
ConfigOpt = typer.Option(None, "--config", "-c", help="Engine config file (env XCAST6_CONFIG)")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table")


def _fail(exc: ClientError) -> typer.Exit:
    typer.echo(f"xcast6-engine: {exc.reason}", err=True)
    return typer.Exit(exc.exit_code)


def _client(url: str | None, token: str | None, config: str | None) -> ApiClient:
    return ApiClient(resolve_target(url, token, config))


def _call(url: str | None, token: str | None, config: str | None, fn: Callable[[ApiClient], int]) -> None:
    try:
        with _client(url, token, config) as c:
            code = fn(c)
    except ClientError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)).rstrip() for r in [header, *rows]
    ]
    return "\n".join(lines)


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    d = time.time() - ts
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.1f}h ago"


def _hops(route: dict[str, Any]) -> str:
    return ", ".join(f"{h['gateway'] or 'connected'} via {h['ifname']}" for h in route["nexthops"])


def _dump(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2))


# -- commands -------------------------------------------------------------------------------------


def status(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Engine status: readiness, sync state, workers."""

    def go(c: ApiClient) -> int:
        s = c.get("/status")
        if as_json:
            _dump(s)
            return EXIT_OK
        sy = s["sync"]
        held = sy["held_back"]
        rows = [
            ["version", s["version"]],
            ["uptime", f"{s['uptime_s']:.0f} s"],
            ["ready", "yes" if s["ready"] else "no: " + "; ".join(s["not_ready_because"])],
            ["source", sy["source"]],
            ["sync state", sy["state"]],
            ["routes", f"{sy['route_count']} (generation {sy['generation']})"],
            ["last success", _ago(sy["last_success"])],
            ["last attempt", _ago(sy["last_attempt"])],
            ["last duration", "-" if sy["last_duration_s"] is None else f"{sy['last_duration_s']:.2f} s"],
            ["last error", sy["last_error"] or "-"],
            [
                "held back",
                "-"
                if not held
                else f"+{held['added']} -{held['removed']} ~{held['changed']} (resync --force applies it)",
            ],
            [
                "workers",
                f"{s['workers']['running']}/{s['workers']['configured']} running, "
                f"{s['workers']['restarts']} restarts",
            ],
            ["links", f"{s['links']} ({s['link_mode']})"],
        ]
        ha = s.get("ha")
        if ha:   # engine pairs: what the router sees of this engine
            state = "draining" if ha["draining"] else f"admin {ha['admin']}"
            if ha["admin"] == "down" and ha["hold_down_remaining_s"]:
                state += f" (hold-down {ha['hold_down_remaining_s']:.1f} s)"
            rows.append(["ha", state + ("" if ha["healthy"] else ": " + "; ".join(ha["problems"]))])
            for sess in ha["sessions"]:
                rows.append([f"bfd {sess['link']}",
                             f"{sess['state']} to {sess['peer']} ({sess['diagnostic']})"])
        typer.echo(_table(rows, ["", ""]).split("\n", 1)[1])
        return EXIT_OK

    _call(url, token, config, go)


def routes(
    prefix: str | None = typer.Argument(None, help="Only routes inside this prefix"),
    dst: str | None = typer.Option(None, "--dst", help="Only routes covering this address"),
    lookup: str | None = typer.Option(
        None, "--lookup", help="Show the route and next hop a destination uses (live explain)"
    ),
    limit: int = typer.Option(100, "--limit", min=1, max=10000, help="Routes per page"),
    offset: int = typer.Option(0, "--offset", min=0),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The engine's forwarding table (or --lookup DST)."""

    def go(c: ApiClient) -> int:
        if lookup is not None:
            hit = c.get("/routes/lookup", dst=lookup)
            if as_json:
                _dump(hit)
            else:
                r, h = hit["route"], hit["nexthop"]
                typer.echo(
                    f"{hit['dst']} via {r['prefix']} ({r['protocol']}): "
                    f"{h['gateway'] or 'connected'} dev {h['ifname']}  [generation {hit['generation']}]"
                )
            return EXIT_OK
        page = c.get("/routes", prefix=prefix, dst=dst, limit=limit, offset=offset)
        if as_json:
            _dump(page)
            return EXIT_OK
        rows = [[r["prefix"], _hops(r), r["protocol"], str(r["metric"])] for r in page["routes"]]
        typer.echo(_table(rows, ["PREFIX", "NEXT HOPS", "PROTO", "METRIC"]))
        shown = len(page["routes"])
        typer.echo(f"{shown} of {page['total']} routes (offset {offset}, generation {page['generation']})")
        return EXIT_OK

    _call(url, token, config, go)


def diff(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
    exit_code: bool = typer.Option(False, "--exit-code", help=f"Exit {EXIT_DIFFERS} when tables differ"),
) -> None:
    """Router (fresh fetch) vs engine table vs kernel mirror."""

    def go(c: ApiClient) -> int:
        d = c.get("/routes/diff")
        if as_json:
            _dump(d)
        else:
            typer.echo(f"router  {d['router']['route_count']:>8} routes  {d['router']['detail']}")
            typer.echo(f"engine  {d['engine']['route_count']:>8} routes  {d['engine']['detail']}")
            k = d["kernel"]
            typer.echo(
                f"kernel  {k['route_count']:>8} routes  {k['detail']}"
                if k
                else "kernel         -          no kernel mirror configured"
            )
            for title, part in (
                ("router vs engine", d["router_vs_engine"]),
                ("engine vs kernel", d["engine_vs_kernel"]),
            ):
                if part is None:
                    continue
                n = part["counts"]
                typer.echo(f"\n{title}: +{n['added']} -{n['removed']} ~{n['changed']}")
                for r in part["added"]:
                    typer.echo(f"  + {r['prefix']}  {_hops(r)}")
                for r in part["removed"]:
                    typer.echo(f"  - {r['prefix']}  {_hops(r)}")
                for ch in part["changed"]:
                    typer.echo(f"  ~ {ch['prefix']}  {_hops(ch['before'])}  ->  {_hops(ch['after'])}")
            typer.echo("\nin sync" if d["in_sync"] else "\ntables differ")
        return EXIT_DIFFERS if exit_code and not d["in_sync"] else EXIT_OK

    _call(url, token, config, go)


def resync(
    force: bool = typer.Option(False, "--force", help="Apply past the safety valve"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result, with a progress bar"),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds --wait waits at most"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Resync the engine table from the router now."""

    def go(c: ApiClient) -> int:
        job = c.request("POST", "/resync", json={"force": force}, ok=(202,))
        if not wait:
            if as_json:
                _dump(job)
            else:
                typer.echo(f"resync job {job['id']} {job['state']}  (GET {job['href']})")
            return EXIT_OK
        job = _wait(c, job, timeout, show=not as_json)
        if as_json:
            _dump(job)
        return _report(job, quiet=as_json)

    _call(url, token, config, go)


def _wait(c: ApiClient, job: dict[str, Any], timeout: float, show: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("resync {task.fields[job]}: {task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f} rows"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=True,
    ) as bar:
        task = bar.add_task(job["state"], total=None, job=job["id"])
        while job["state"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise ClientError(
                    EXIT_NOT_APPLIED, f"resync job {job['id']} still {job['state']} after {timeout:g} s"
                )
            time.sleep(0.2)
            job = c.get(job["href"])
            bar.update(task, description=f"{job['state']} {job['phase']}".strip(), completed=job["rows"])
    return job


def _report(job: dict[str, Any], quiet: bool) -> int:
    res = job.get("result")
    if job["state"] == "done" and res:
        n = res["counts"]
        if not quiet:
            typer.echo(
                f"resync {job['id']} applied: +{n['added']} -{n['removed']} ~{n['changed']}, "
                f"{res['route_count']} routes, generation {res['generation']}"
            )
        return EXIT_OK
    reason = (res or {}).get("message") or job.get("error") or job["state"]
    typer.echo(f"xcast6-engine: resync {job['id']} {job['state']}: {reason}", err=True)
    return EXIT_NOT_APPLIED


def interfaces(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Router interface <-> engine link table."""

    def go(c: ApiClient) -> int:
        rows = c.get("/interfaces")
        if as_json:
            _dump(rows)
            return EXIT_OK
        table = [
            [
                r["router_if"],
                r["state"],
                r["engine_if"] or "-",
                "-" if r["vlan_id"] is None else str(r["vlan_id"]),
                r["engine_addr"] or "-",
                r["router_addr"] or "-",
                r["router_mac"] or "-",
            ]
            for r in rows
        ]
        typer.echo(
            _table(
                table, ["ROUTER IF", "STATE", "ENGINE IF", "VLAN", "ENGINE ADDR", "ROUTER ADDR", "ROUTER MAC"]
            )
        )
        return EXIT_OK

    _call(url, token, config, go)


def stats(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Packet counters, rates, latency and per-worker resources."""

    def go(c: ApiClient) -> int:
        s = c.get("/stats")
        if as_json:
            _dump(s)
            return EXIT_OK
        rates = s["rates_per_s"]
        rows = [[k, str(v), f"{rates.get(k, 0.0):.1f}/s"] for k, v in sorted(s["counters"].items())]
        typer.echo(_table(rows, ["COUNTER", "VALUE", "RATE"]) if rows else "no packet counters yet")
        lat = s["latency"]

        def us(v: float | None) -> str:
            return "-" if v is None else f"{v:g} us"

        typer.echo(
            f"\nlatency: {lat['count']} samples, p50 {us(lat['p50_us'])}, p90 {us(lat['p90_us'])}, "
            f"p99 {us(lat['p99_us'])}"
        )
        from engine.dataplane.config import cpu_ranges

        wrows = [
            [
                str(w["index"]),
                str(w["pid"] or "-"),
                w["state"],
                str(w["restarts"]),
                "-" if w["cpu_percent"] is None else f"{w['cpu_percent']:.1f}%",
                "-" if w["rss_bytes"] is None else f"{w['rss_bytes'] / 2**20:.1f} MiB",
                "-"
                if w["ctx_switches_voluntary"] is None
                else f"{w['ctx_switches_voluntary']}/{w['ctx_switches_involuntary']}",
                cpu_ranges(w["cpus"]) if w.get("cpus") else "-",
            ]
            for w in s["workers"]
        ]
        typer.echo("\n" + _table(wrows, ["WORKER", "PID", "STATE", "RESTARTS", "CPU", "RSS", "CTXSW V/I",
                                         "ON CPUS"]))
        return EXIT_OK

    _call(url, token, config, go)


def run(config: str = typer.Option(..., "--config", "-c", help="Engine config file (TOML)")) -> None:
    """Run the engine: sync, workers and the API (foreground; SIGTERM stops, SIGHUP reloads)."""
    from api.daemon import run as run_daemon

    raise typer.Exit(run_daemon(config))


config_app = typer.Typer(help="Engine configuration file.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    path: str = typer.Argument(..., help="Config file to validate"), as_json: bool = JsonOpt
) -> None:
    """Validate a configuration file without starting anything (secrets shown as ***)."""
    from api.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        if as_json:
            _dump({"valid": False, "problems": exc.problems})
        else:
            typer.echo(f"xcast6-engine: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    problems = _source_problems(cfg)
    if problems:
        if as_json:
            _dump({"valid": False, "problems": problems})
        else:
            typer.echo(f"xcast6-engine: {path}: " + "; ".join(problems), err=True)
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        _dump({"valid": True, "config": cfg.summary()})
    else:
        typer.echo(
            f"{path}: valid (source {cfg.sync.source_redacted()}, links {cfg.links.mode}, "
            f"{cfg.workers.count} workers, API {cfg.api_url()})"
        )


cpu_idle_app = typer.Typer(
    help="Idle-state limit of the worker CPUs (workers.cpu_resume_latency_us), for a service manager "
    "whose daemon may not write /sys: run as root before (apply) and after (restore) the daemon.",
    no_args_is_help=True,
)


def _config_or_exit(path: str) -> Config:
    from api.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"xcast6-engine: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


@cpu_idle_app.command("apply")
def cpu_idle_apply(config: str = typer.Option(..., "--config", "-c", help="Engine config file")) -> None:
    """Set workers.cpu_resume_latency_us on workers.cpus; the originals go to the state directory.

    Also writes back what an earlier, killed run left limited.  Nothing to do (exit 0) when the
    key is not set.  Exit 1 when a CPU could not be set (the daemon forwards anyway).
    """
    from engine.dataplane import cpuidle

    cfg = _config_or_exit(config)
    limit_us = cfg.workers.idle_limit_us
    limit = cpuidle.CpuIdleLimit(cfg.workers.cpus if limit_us is not None else (), limit_us or 0,
                                 state_file=cpuidle.state_file(cfg.engine.state_dir))
    problems = limit.apply()
    for cpu, before in sorted(limit.saved.items()):
        typer.echo(f"CPU {cpu}: resume latency limit {cpuidle.describe(cpuidle.sysfs_value(limit.limit_us))} "
                   f"(was {cpuidle.describe(before)})")
    for problem in problems:
        typer.echo(f"xcast6-engine: {problem}", err=True)
    if limit_us is None:
        typer.echo("workers.cpu_resume_latency_us is not set (or no workers.cpus): nothing to limit")
    raise typer.Exit(1 if problems else EXIT_OK)


@cpu_idle_app.command("restore")
def cpu_idle_restore(config: str = typer.Option(..., "--config", "-c", help="Engine config file")) -> None:
    """Write back every value that ``apply`` recorded, and remove the record.  Exit 1 when one
    could not be written back (it stays recorded for the next apply/restore)."""
    from engine.dataplane import cpuidle

    cfg = _config_or_exit(config)
    path = cpuidle.state_file(cfg.engine.state_dir)
    recorded = cpuidle.recorded(path)
    problems = cpuidle.CpuIdleLimit((), 0, state_file=path).apply()
    for cpu, before in sorted(recorded.items()):
        typer.echo(f"CPU {cpu}: resume latency limit {cpuidle.describe(before)} again")
    for problem in problems:
        typer.echo(f"xcast6-engine: {problem}", err=True)
    raise typer.Exit(1 if problems else EXIT_OK)


def _source_problems(cfg: Config) -> list[str]:
    """Let the source driver parse its URL and find its secrets (no connection is made)."""
    from sync.registry import open_source
    from sync.source import SourceError

    problems = []
    try:
        open_source(cfg.sync.source, cfg.sync.credentials())
    except (SourceError, ValueError) as exc:
        problems.append(f"sync.source: {exc}")
    return problems


CLIENT_COMMANDS: dict[str, Callable[..., None]] = {
    "status": status,
    "routes": routes,
    "diff": diff,
    "resync": resync,
    "interfaces": interfaces,
    "stats": stats,
}


class _DefaultCommandGroup(TyperGroup):
    """A command group that runs ``default_command`` when no sub-command is named."""

    default_command = "show"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not any(a in self.commands for a in args) and args[:1] not in (["--help"], ["-h"]):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _default_group(command: str) -> type[TyperGroup]:
    return type(f"DefaultTo{command.title()}Group", (_DefaultCommandGroup,), {"default_command": command})


def register(app: typer.Typer, *, routes: typer.Typer, interfaces: typer.Typer) -> None:
    """Add ``run``, ``config``, ``cpu-idle`` and the client commands.

    ``routes`` and ``interfaces`` are the local tool groups (sync's ``routes fetch|diff|history``,
    vlan's ``interfaces plan|apply|show``); the running engine's view joins each as its default
    sub-command under a fixed name (``routes show``, ``interfaces live``), so ``routes [PREFIX]``
    and a bare ``interfaces`` ask the engine.  Every client command is also under ``api``.
    """
    joins = {"routes": (routes, "show"), "interfaces": (interfaces, "live")}
    api_app = typer.Typer(help="Engine API client commands.", no_args_is_help=True)
    for name, fn in CLIENT_COMMANDS.items():
        api_app.command(name)(fn)
        if name in joins:
            group, sub = joins[name]
            group.command(sub)(fn)
            group.info.cls = _default_group(sub)
            group.info.no_args_is_help = False
            app.add_typer(group, name=name)
        else:
            app.command(name)(fn)
    app.add_typer(api_app, name="api")
    app.command("run")(run)
    app.add_typer(config_app, name="config")
    app.add_typer(cpu_idle_app, name="cpu-idle")


if __name__ == "__main__":  # pragma: no cover - `python -m api.cli` is the whole command
    from api.main import main

    main()
