"""``xcast6-engine lab up|demo|down|status`` and ``xcast6-engine counters`` (local stats read)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from engine.dataplane.counters import DEFAULT_PATH, CounterFile
from lab.netns import LabError
from lab.topology import API_PORT, Topology

lab_app = typer.Typer(help="Namespace lab: two routers, two engines, a sender, five receivers.",
                      no_args_is_help=True)

PrefixOpt = typer.Option("xl-", "--prefix", help="Name prefix of the lab's namespaces.")
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
       engines_per_router: int = typer.Option(
           1, "--engines-per-router", min=1, max=4,
           help="Engines of router A; 2+ runs BFD (FRR bfdd) between every engine and its router."),
       fail_mode: str = typer.Option("open", "--fail-mode",
                                     help="All engines of a router down: open (forward normally) or closed.")
       ) -> None:
    """Build the lab and start snmpd, receivers and both engines (waits for their first sync)."""
    from lab import build

    if mode not in ("direct", "vlan"):
        raise typer.BadParameter(f"{mode!r}: use direct or vlan", param_hint="--mode")
    topo = _topo(prefix, state_dir, workers)
    if fail_mode not in ("open", "closed"):
        raise typer.BadParameter(f"{fail_mode!r}: use open or closed", param_hint="--fail-mode")
    topo.workers = workers
    topo.mode = mode
    topo.engines_per_router = engines_per_router
    topo.fail_mode = fail_mode
    try:
        build.up(topo)
    except LabError as exc:
        typer.echo(f"lab up failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    for r in topo.engines:
        st = build.read_status(topo, r) or {}
        sync = st.get("sync") or {}
        typer.echo(f"engine {r.upper()}: daemon ready, {sync.get('route_count')} routes synced from "
                   f"{sync.get('source')} (generation {sync.get('generation')}), {workers} worker(s), "
                   f"API http://127.0.0.1:{API_PORT} in {topo.engine_ns(r)} (config {topo.config_path(r)})")
    typer.echo(f"lab up: namespaces {', '.join(topo.all_namespaces())}; state in {topo.state_dir}")


@lab_app.command("demo")
def demo(prefix: str = PrefixOpt, state_dir: Path | None = StateOpt,
         count: int = typer.Option(3, min=1, max=1000, help="Datagrams to send.")) -> None:
    """Send XCAST6 datagrams to every receiver; print the delivery matrix and the counters."""
    from lab import build, netns
    from lab.demo import run_demo

    topo = _topo(prefix, state_dir)
    missing = set(topo.all_namespaces()) - set(netns.namespaces())
    if missing:
        typer.echo(f"lab is not up (missing {', '.join(sorted(missing))}); run 'xcast6-engine lab up'",
                   err=True)
        raise typer.Exit(1)
    try:
        build.wait_engines(topo, timeout=30)
    except LabError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    if not run_demo(topo, count):
        raise typer.Exit(1)


@lab_app.command("status")
def status(prefix: str = PrefixOpt, state_dir: Path | None = StateOpt) -> None:
    """Engines' daemon ``/status`` through their APIs (JSON)."""
    topo = _topo(prefix, state_dir)
    from lab import engine_api

    out: dict[str, object] = {}
    try:
        engine_api.token(topo)
    except LabError as exc:
        typer.echo(f"xcast6-engine: {exc}", err=True)
        raise typer.Exit(1) from None
    for r in topo.engines:
        st, err = engine_api.status_or_error(topo, r)
        out[r] = st if st is not None else {"error": f"API of engine {r} not answering: {err}"}
    typer.echo(json.dumps(out, indent=1, default=str))


@lab_app.command("down")
def down(prefix: str = PrefixOpt, state_dir: Path | None = StateOpt) -> None:
    """Stop the lab's processes (by pid file) and delete its namespaces."""
    from lab import build

    removed = build.down(_topo(prefix, state_dir))
    typer.echo(f"lab down: removed {len(removed)} namespace(s)")


FileOpt = typer.Option(DEFAULT_PATH, "--file", help="Worker counter file.")
JsonOpt = typer.Option(False, "--json", help="Print JSON.")


def counters(path: Path = FileOpt, as_json: bool = JsonOpt) -> None:
    """Read the workers' counters and latency histogram from shared memory (no API needed)."""
    from lab.demo import format_counters

    try:
        cf = CounterFile.open(path)
    except FileNotFoundError as exc:
        typer.echo(f"no counter file at {path} (is the engine running?)", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    stats = cf.snapshot().as_dict()
    cf.close()
    typer.echo(json.dumps(stats, indent=1) if as_json else format_counters(str(path), stats))


def register(app: typer.Typer) -> None:
    """Add ``lab`` and ``counters`` to the root app."""
    app.add_typer(lab_app, name="lab")
    app.command("counters")(counters)
