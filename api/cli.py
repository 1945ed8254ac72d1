"""CLI of the daemon and its API: ``run``, ``config check``, ``cpu-idle``, ``show status|routes|links|stats``,
``verify``, ``resync`` and the hidden spellings of the previous release.

The vocabulary follows vtysh/birdc: ``show ...`` asks the running engine and changes nothing;
``verify`` and ``resync`` are the two actions on it; the local tools keep their groups
(``routes fetch|diff|history``, ``links plan|apply|kernel``).  Human tables by default,
``--json`` for scripts; errors and exit codes from engine/tools/clikit.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from api.client import ApiClient, ClientError, resolve_target
from engine.tools import clikit
from engine.tools.clikit import EXIT_DIFFERS, EXIT_FAILED, EXIT_NOT_APPLIED, EXIT_OK, EXIT_USAGE, dump

if TYPE_CHECKING:
    from api.config import Config

UrlOpt = typer.Option(None, "--url", help="API URL (env XCAST6_API_URL; default from the config file)")
TokenOpt = typer.Option(None, "--token", help="API token (env XCAST6_API_TOKEN; default from the config)")
ConfigOpt = typer.Option(None, "--config", "-c", help="Engine config file (env XCAST6_CONFIG)")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table (errors too)")


def _call(
    url: str | None, token: str | None, config: str | None, fn: Callable[[ApiClient], int], as_json: bool
) -> None:
    try:
        with ApiClient(resolve_target(url, token, config)) as c:
            code = fn(c)
    except ClientError as exc:
        raise clikit.fail(exc.reason, exc.exit_code, as_json) from None
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


# -- commands -------------------------------------------------------------------------------------


def status(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Readiness, sync state, held-back diff, workers, links."""

    def go(c: ApiClient) -> int:
        s = c.get("/status")
        if as_json:
            dump(s)
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
        if s["workers"].get("data_path"):
            rows.append(["data path", s["workers"]["data_path"]])
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

    _call(url, token, config, go, as_json)


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
    """The engine's forwarding table, or with --lookup the route one destination uses."""

    def go(c: ApiClient) -> int:
        if lookup is not None:
            hit = c.get("/routes/lookup", dst=lookup)
            if as_json:
                dump(hit)
            else:
                r, h = hit["route"], hit["nexthop"]
                typer.echo(
                    f"{hit['dst']} via {r['prefix']} ({r['protocol']}): "
                    f"{h['gateway'] or 'connected'} dev {h['ifname']}  [generation {hit['generation']}]"
                )
            return EXIT_OK
        page = c.get("/routes", prefix=prefix, dst=dst, limit=limit, offset=offset)
        if as_json:
            dump(page)
            return EXIT_OK
        rows = [[r["prefix"], _hops(r), r["protocol"], str(r["metric"])] for r in page["routes"]]
        typer.echo(_table(rows, ["PREFIX", "NEXT HOPS", "PROTO", "METRIC"]))
        shown = len(page["routes"])
        typer.echo(f"{shown} of {page['total']} routes (offset {offset}, generation {page['generation']})")
        return EXIT_OK

    _call(url, token, config, go, as_json)


def verify(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
    exit_code: bool = typer.Option(False, "--exit-code", help=f"Exit {EXIT_DIFFERS} when tables differ"),
) -> None:
    """Check the engine: a fresh router fetch vs the engine table vs the kernel mirror."""

    def go(c: ApiClient) -> int:
        d = c.get("/routes/diff")
        if as_json:
            dump(d)
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

    _call(url, token, config, go, as_json)


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
                dump(job)
            else:
                typer.echo(f"resync job {job['id']} {job['state']}  (GET {job['href']})")
            return EXIT_OK
        job = _wait(c, job, timeout, show=not as_json)
        if as_json:
            dump(job)
        return _report(job, quiet=as_json)

    _call(url, token, config, go, as_json)


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
    if not quiet:
        typer.echo(f"{clikit.PREFIX}resync {job['id']} {job['state']}: {reason}", err=True)
    return EXIT_NOT_APPLIED


def links(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The engine's links: router interface, state, engine link, VLAN, addresses, router MAC."""

    def go(c: ApiClient) -> int:
        rows = c.get("/interfaces")
        if as_json:
            dump(rows)
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

    _call(url, token, config, go, as_json)


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}/s"


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:g} us"


def render_stats(s: dict[str, Any]) -> str:
    """``show stats`` as text: the numbers an operator looks at first (like FRR/BIRD ``show``
    output), then every drop reason with the non-zero ones first, then the rest."""
    from engine.dataplane import families as fam

    counters: dict[str, int] = s["counters"]
    has_rates = s.get("rates_per_s") is not None      # None: a file of totals (xcast6-engine counters)
    rates: dict[str, float] = s.get("rates_per_s") or {}
    members: dict[fam.Family, list[tuple[str, str | None]]] = {f: [] for f in fam.FAMILIES}
    for name in counters:
        hit = fam.classify(name)
        if hit is not None:
            members[hit[0]].append((name, hit[1]))

    def total(f: fam.Family, label: str | None = "*") -> tuple[int, float | None]:
        names = [n for n, lab in members[f] if label == "*" or lab == label]
        return sum(counters[n] for n in names), sum(rates.get(n, 0.0) for n in names) if has_rates else None

    def rate(name: str) -> float | None:
        return rates.get(name, 0.0) if has_rates else None

    lat = s["latency"]
    rows = []
    for title, (value, per_s) in (
        ("received", total(fam.RECEIVED)),
        ("branched", total(fam.BRANCHED)),
        ("copies (xcast6)", total(fam.SENT, "xcast6")),
        ("copies (x2u)", total(fam.SENT, "x2u")),
        ("drops (packets)", total(fam.DROPPED_PACKETS)),
        ("drops (destinations)", total(fam.DROPPED_DESTINATIONS)),
        ("drops (copies)", total(fam.DROPPED_COPIES)),
    ):
        rows.append([title, f"{value:,}", _rate(per_s)])
    out = [_table(rows, ["", "TOTAL", "RATE"]).split("\n", 1)[1]]
    out.append(
        f"latency: p50 {_us(lat['p50_us'])}, p90 {_us(lat['p90_us'])}, p99 {_us(lat['p99_us'])} "
        f"({lat['count']:,} packets)"
    )
    drops = [
        (counters[n], f.name.split("_")[1], lab or n, rate(n))
        for f in (fam.DROPPED_PACKETS, fam.DROPPED_DESTINATIONS, fam.DROPPED_COPIES)
        for n, lab in members[f]
    ]
    drops.sort(key=lambda d: (-d[0], d[2]))
    if drops:
        out.append("")
        rows = [[r, u, f"{v:,}", _rate(rt)] for v, u, r, rt in drops]
        out.append(_table(rows, ["DROP REASON", "PER", "COUNT", "RATE"]))
    rest = [
        [f"{f.name.removesuffix('_total')}" + (f"{{{f.label}={lab}}}" if f.label else ""), f"{counters[n]:,}",
         _rate(rate(n))]
        for f in (fam.BYTES, fam.SYSCALLS, fam.FLOW_CACHE_HITS, fam.CACHE_EVICTIONS, fam.TABLE_UPDATES,
                  fam.OTHER)
        for n, lab in sorted(members[f], key=lambda m: str(m[1]))
    ]
    if rest:
        out.append("")
        out.append(_table(rest, ["COUNTER", "VALUE", "RATE"]))
    if not counters:
        out.append("no packet counters yet (no workers have run)")
    return "\n".join(out)


def stats(
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Key numbers first (received, branched, copies, drops, latency), then drops by reason
    (non-zero first), the other counters and the workers."""

    def go(c: ApiClient) -> int:
        s = c.get("/stats")
        if as_json:
            dump(s)
            return EXIT_OK
        typer.echo(render_stats(s))
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

    _call(url, token, config, go, as_json)


def run(
    config: str = typer.Option(..., "--config", "-c", help="Engine config file (TOML)"),
    as_json: bool = typer.Option(False, "--json", help="Log (start-up summary included) as JSON lines"),
) -> None:
    """Run the engine: sync, workers and the API (foreground; SIGTERM stops, SIGHUP reloads)."""
    from api.daemon import run as run_daemon

    raise typer.Exit(run_daemon(config, log_format="json" if as_json else None))


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
            dump({"valid": False, "problems": exc.problems, **clikit.error_doc(str(exc), EXIT_USAGE)})
            raise typer.Exit(EXIT_USAGE) from None
        raise clikit.fail(str(exc), EXIT_USAGE) from None
    problems = _source_problems(cfg)
    if problems:
        message = f"{path}: " + "; ".join(problems)
        if as_json:
            dump({"valid": False, "problems": problems, **clikit.error_doc(message, EXIT_USAGE)})
            raise typer.Exit(EXIT_USAGE)
        raise clikit.fail(message, EXIT_USAGE)
    if as_json:
        dump({"valid": True, "config": cfg.summary()})
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


def _config_or_exit(path: str, as_json: bool = False) -> Config:
    from api.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise clikit.fail(str(exc), EXIT_USAGE, as_json) from None


def _cpu_idle_report(lines: Sequence[tuple[int, str, str | None]], problems: list[str], note: str | None,
                     as_json: bool) -> None:
    """Print what apply/restore did; exit 1 when a CPU could not be set."""
    if as_json:
        dump({"cpus": [{"cpu": cpu, "limit": now, "was": was} for cpu, now, was in lines],
              "problems": problems, "note": note,
              **(clikit.error_doc("; ".join(problems), EXIT_FAILED) if problems else {})})
    else:
        for cpu, now, was in lines:
            typer.echo(f"CPU {cpu}: resume latency limit {now}" + (f" (was {was})" if was else " again"))
        for problem in problems:
            typer.echo(clikit.PREFIX + problem, err=True)
        if note:
            typer.echo(note)
    raise typer.Exit(EXIT_FAILED if problems else EXIT_OK)


@cpu_idle_app.command("apply")
def cpu_idle_apply(
    config: str = typer.Option(..., "--config", "-c", help="Engine config file"), as_json: bool = JsonOpt
) -> None:
    """Set workers.cpu_resume_latency_us on workers.cpus; the originals go to the state directory.

    Also writes back what an earlier, killed run left limited.  Nothing to do (exit 0) when the
    key is not set.  Exit 1 when a CPU could not be set (the daemon forwards anyway).
    """
    from engine.dataplane import cpuidle

    cfg = _config_or_exit(config, as_json)
    limit_us = cfg.workers.idle_limit_us
    limit = cpuidle.CpuIdleLimit(cfg.workers.cpus if limit_us is not None else (), limit_us or 0,
                                 state_file=cpuidle.state_file(cfg.engine.state_dir))
    problems = limit.apply()
    now = cpuidle.describe(cpuidle.sysfs_value(limit.limit_us))
    lines = [(cpu, now, cpuidle.describe(before)) for cpu, before in sorted(limit.saved.items())]
    note = None if limit_us is not None else \
        "workers.cpu_resume_latency_us is not set (or no workers.cpus): nothing to limit"
    _cpu_idle_report(lines, problems, note, as_json)


@cpu_idle_app.command("restore")
def cpu_idle_restore(
    config: str = typer.Option(..., "--config", "-c", help="Engine config file"), as_json: bool = JsonOpt
) -> None:
    """Write back every value that 'apply' recorded, and remove the record.  Exit 1 when one
    could not be written back (it stays recorded for the next apply/restore)."""
    from engine.dataplane import cpuidle

    cfg = _config_or_exit(config, as_json)
    path = cpuidle.state_file(cfg.engine.state_dir)
    recorded = cpuidle.recorded(path)
    problems = cpuidle.CpuIdleLimit((), 0, state_file=path).apply()
    lines = [(cpu, cpuidle.describe(before), None) for cpu, before in sorted(recorded.items())]
    _cpu_idle_report(lines, problems, None, as_json)


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


class _DefaultCommandGroup(TyperGroup):
    """A group of the previous release that ran ``default_command`` when no sub-command was named
    (``routes 2001:db8::/32`` = ``routes show``); kept for those spellings only."""

    default_command = "show"
    allow_bare = False  # a bare group name prints its help instead of asking the engine

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        named = any(a in self.commands for a in args) or args[:1] in (["--help"], ["-h"])
        if not named and (args or self.allow_bare):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _default_group(command: str, allow_bare: bool) -> type[TyperGroup]:
    return type(f"DefaultTo{command.title()}Group", (_DefaultCommandGroup,),
                {"default_command": command, "allow_bare": allow_bare})


def alias(fn: Callable[..., None], old: str, new: str) -> Callable[..., None]:
    """``fn`` under the spelling of the previous release: same options, a deprecation note on
    stderr (stdout, where --json goes, is untouched).  Registered hidden; removed in the next."""

    @functools.wraps(fn)
    def spelled_old(*args: Any, **kwargs: Any) -> None:
        clikit.warn(f"'{old}' is deprecated and goes in the next release: use '{new}'")
        fn(*args, **kwargs)

    return spelled_old


SHOW_COMMANDS: dict[str, Callable[..., None]] = {
    "status": status,
    "routes": routes,
    "links": links,
    "stats": stats,
}


def register(app: typer.Typer, *, routes_app: typer.Typer, links_app: typer.Typer,
             links_aliases: dict[str, tuple[str, Callable[..., None]]]) -> None:
    """Add ``show``, ``verify``, ``resync``, ``run``, ``config``, ``cpu-idle`` and the spellings
    of the previous release (hidden, with a deprecation note).

    ``routes_app``/``links_app`` are the local tool groups (sync's ``routes fetch|diff|history``,
    vlan's ``links plan|apply|kernel``); ``links_aliases`` maps vlan's old sub-command names to
    (new name, command) for the hidden ``interfaces`` group.
    """
    show_app = typer.Typer(
        help="The running engine's state, from its API (changes nothing).", no_args_is_help=True
    )
    for name, fn in SHOW_COMMANDS.items():
        show_app.command(name)(fn)
    app.add_typer(show_app, name="show")
    app.command("verify")(verify)
    app.command("resync")(resync)
    app.command("run")(run)
    app.add_typer(config_app, name="config")
    app.add_typer(cpu_idle_app, name="cpu-idle")

    # -- the previous release's spellings -----------------------------------------------------
    for old, new, fn in (("status", "show status", status), ("stats", "show stats", stats),
                         ("diff", "verify", verify)):
        app.command(old, hidden=True)(alias(fn, old, new))
    api_app = typer.Typer(help="Previous spelling of the API client commands.", no_args_is_help=True,
                          hidden=True)
    for old, new, fn in (("status", "show status", status), ("routes", "show routes", routes),
                         ("diff", "verify", verify), ("resync", "resync", resync),
                         ("interfaces", "show links", links), ("stats", "show stats", stats)):
        api_app.command(old)(alias(fn, f"api {old}", new))
    app.add_typer(api_app, name="api")
    # ``routes [PREFIX]`` and ``routes show`` asked the engine; ``routes`` alone now prints help.
    routes_app.command("show", hidden=True)(alias(routes, "routes show", "show routes"))
    routes_app.info.cls = _default_group("show", allow_bare=False)
    app.add_typer(routes_app, name="routes")
    app.add_typer(links_app, name="links")
    interfaces_app = typer.Typer(help="Previous name of 'links'.", hidden=True)
    for old, (new, fn) in links_aliases.items():
        interfaces_app.command(old)(alias(fn, f"interfaces {old}", f"links {new}"))
    interfaces_app.command("live")(alias(links, "interfaces live", "show links"))
    interfaces_app.info.cls = _default_group("live", allow_bare=True)
    app.add_typer(interfaces_app, name="interfaces")


if __name__ == "__main__":  # pragma: no cover - `python -m api.cli` is the whole command
    from api.main import main

    main()
