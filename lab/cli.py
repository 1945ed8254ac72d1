"""``xcast6-engine lab up|demo|down|status`` and ``xcast6-engine counters`` (local stats read).

Every command takes ``--json`` (one JSON document on stdout, errors included); exit codes and the
error prefix are those of every command (engine/tools/clikit.py)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import typer

from engine.dataplane.counters import DEFAULT_PATH, CounterFile
from engine.tools import clikit
from lab.netns import LabError
from lab.topology import API_PORT, Topology

lab_app = typer.Typer(help="Namespace lab: two routers, two engines, a sender, five receivers.",
                      no_args_is_help=True)

PrefixOpt = typer.Option("xl-", "--prefix", help="Name prefix of the lab's namespaces.")
JsonOpt = typer.Option(False, "--json", help="Print JSON (errors too).")
StateOpt = typer.Option(None, "--state-dir", help="Run/log directory (default /tmp/<prefix>lab).")


def _topo(prefix: str, state_dir: Path | None, workers: int = 1) -> Topology:
    if not prefix or len(prefix) > 6 or not all(c.isalnum() or c == "-" for c in prefix):
        raise typer.BadParameter(f"prefix {prefix!r}: 1-6 characters of [A-Za-z0-9-]", param_hint="--prefix")
    sd = state_dir or Path(f"/tmp/{prefix}lab")
    if not sd.name.startswith("xl") and state_dir is None:
        sd = Path(f"/tmp/xl-{prefix}lab")
    topo = Topology(prefix=prefix, state_dir=sd, workers=workers)
    saved = sd / "topology.json"
    if saved.exists():
        doc = json.loads(saved.read_text())
        topo.workers = int(doc.get("workers", workers))
        topo.engines_per_router = int(doc.get("engines_per_router", 1))
        topo.fail_mode = str(doc.get("fail_mode", "open"))
    return topo


@lab_app.command("up")
def up(prefix: str = PrefixOpt, state_dir: Path | None = StateOpt,
       workers: int = typer.Option(1, min=1, max=16, help="Worker processes per engine."),
       mode: str = typer.Option("direct", help="Router-engine links: direct (veths) or vlan (802.1Q)."),
       dataplane: str = typer.Option("auto", help="Engines' data path: auto (TC eBPF if it loads), "
                                     "bpf, python."),
       engines_per_router: int = typer.Option(
           1, "--engines-per-router", min=1, max=4,
           help="Engines of router A; 2+ runs BFD (FRR bfdd) between every engine and its router."),
       fail_mode: str = typer.Option("open", "--fail-mode",
                                     help="All engines of a router down: open (forward normally) or closed."),
       as_json: bool = JsonOpt,
       ) -> None:
    """Build the lab and start snmpd, receivers and both engines (waits for their first sync)."""
    from lab import build

    if mode not in ("direct", "vlan"):
        raise typer.BadParameter(f"{mode!r}: use direct or vlan", param_hint="--mode")
    topo = _topo(prefix, state_dir, workers)
    if dataplane not in ("auto", "bpf", "python"):
        raise typer.BadParameter(f"{dataplane!r}: use auto, bpf or python", param_hint="--dataplane")
    if fail_mode not in ("open", "closed"):
        raise typer.BadParameter(f"{fail_mode!r}: use open or closed", param_hint="--fail-mode")
    topo.workers = workers
    topo.mode = mode
    topo.dataplane = dataplane
    topo.engines_per_router = engines_per_router
    topo.fail_mode = fail_mode
    try:
        with _quiet_if(as_json):
            build.up(topo)
    except LabError as exc:
        raise clikit.fail(f"lab up failed: {exc}", clikit.EXIT_FAILED, as_json) from exc
    engines: dict[str, Any] = {}
    for r in topo.engines:
        st = build.read_status(topo, r) or {}
        sync = st.get("sync") or {}
        engines[r] = {"namespace": topo.engine_ns(r), "config": str(topo.config_path(r)),
                      "api": f"https://127.0.0.1:{API_PORT}", "routes": sync.get("route_count"),
                      "source": sync.get("source"), "generation": sync.get("generation"), "workers": workers}
        if not as_json:
            typer.echo(f"engine {r.upper()}: daemon ready, {sync.get('route_count')} routes synced from "
                       f"{sync.get('source')} (generation {sync.get('generation')}), {workers} worker(s), "
                       f"API https://127.0.0.1:{API_PORT} in {topo.engine_ns(r)} "
                       f"(config {topo.config_path(r)})")
    if as_json:
        clikit.dump({"namespaces": topo.all_namespaces(), "state_dir": str(topo.state_dir),
                     "engines": engines})
    else:
        typer.echo(f"lab up: namespaces {', '.join(topo.all_namespaces())}; state in {topo.state_dir}")


@lab_app.command("demo")
def demo(prefix: str = PrefixOpt, state_dir: Path | None = StateOpt,
         count: int = typer.Option(3, min=1, max=1000, help="Datagrams to send."),
         as_json: bool = JsonOpt) -> None:
    """Send XCAST6 datagrams to every receiver; print the delivery matrix and the counters."""
    from lab import build, netns
    from lab.demo import run_demo

    topo = _topo(prefix, state_dir)
    missing = set(topo.all_namespaces()) - set(netns.namespaces())
    if missing:
        raise clikit.fail(f"lab is not up (missing {', '.join(sorted(missing))}); run 'xcast6-engine lab up'",
                          clikit.EXIT_UNREACHABLE, as_json)
    try:
        build.wait_engines(topo, timeout=30)
    except LabError as exc:
        raise clikit.fail(str(exc), clikit.EXIT_UNREACHABLE, as_json) from exc
    report: dict[str, Any] = {}
    with _quiet_if(as_json):
        ok = run_demo(topo, count, report)
    if as_json:
        clikit.dump(report)
    if not ok:
        raise typer.Exit(clikit.EXIT_FAILED)


@lab_app.command("status")
def status(prefix: str = PrefixOpt, state_dir: Path | None = StateOpt, as_json: bool = JsonOpt) -> None:
    """Engines' daemon /status through their APIs (always JSON)."""
    topo = _topo(prefix, state_dir)
    from lab import engine_api

    out: dict[str, object] = {}
    try:
        engine_api.token(topo)
    except LabError as exc:
        raise clikit.fail(str(exc), clikit.EXIT_UNREACHABLE, as_json) from None
    for r in topo.engines:
        st, err = engine_api.status_or_error(topo, r)
        out[r] = st if st is not None else {"error": f"API of engine {r} not answering: {err}"}
    typer.echo(json.dumps(out, indent=1, default=str))


@lab_app.command("down")
def down(prefix: str = PrefixOpt, state_dir: Path | None = StateOpt, as_json: bool = JsonOpt) -> None:
    """Stop the lab's processes (by pid file) and delete its namespaces."""
    from lab import build

    with _quiet_if(as_json):
        removed = build.down(_topo(prefix, state_dir))
    if as_json:
        clikit.dump({"removed": removed})
    else:
        typer.echo(f"lab down: removed {len(removed)} namespace(s)")


FileOpt = typer.Option(DEFAULT_PATH, "--file", help="Worker counter file.")


def counters(path: Path = FileOpt, as_json: bool = JsonOpt) -> None:
    """Read the workers' counters and latency histogram from shared memory (no API needed)."""
    from api.cli import render_stats
    from engine.dataplane.counters import counter_names

    try:
        cf = CounterFile.open(path)
    except FileNotFoundError as exc:
        raise clikit.fail(f"no counter file at {path} (is the engine running?)", clikit.EXIT_UNREACHABLE,
                          as_json) from exc
    except ValueError as exc:
        raise clikit.fail(str(exc), clikit.EXIT_USAGE, as_json) from exc
    stats = cf.snapshot().as_dict()
    cf.close()
    if as_json:
        typer.echo(json.dumps(stats, indent=1))
        return
    # the layout of 'show stats' (key numbers first, drop reasons non-zero first), without rates:
    # the shared file holds totals only
    counters = dict.fromkeys(counter_names(), 0) | stats["totals"] | {f"drop.{k}": v
                                                                      for k, v in stats["drops"].items()}
    latency = {**stats["latency"], "count": stats["totals"].get("latency_count", 0)}
    typer.echo(f"{path}: {cf.slots} worker slot(s)")
    typer.echo(render_stats({"counters": counters, "rates_per_s": None, "latency": latency}))


@contextlib.contextmanager
def _quiet_if(as_json: bool) -> Any:
    """With --json, progress printed by the lab goes to stderr: stdout holds only the document."""
    if not as_json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def register(app: typer.Typer) -> None:
    """Add ``lab`` and ``counters`` to the root app."""
    app.add_typer(lab_app, name="lab")
    app.command("counters")(counters)
