"""``xcast6-engine routes fetch|diff|history``: walk a router once, compare it with the stored
snapshot, show the sync history (local tools: no running engine needed).

Exit codes are the table of every command (engine/tools/clikit.py): 0 success (``routes diff``:
no differences), 2 a bad source URL or state directory, 3 the router did not answer, 4 it
refused the credentials, 1 any other failure, 6 ``routes diff`` found differences.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from engine.model import Route, Snapshot
from engine.tools import clikit
from sync.diff import SnapshotDiff, diff
from sync.registry import SourceUrlError, open_source, strip_secrets
from sync.source import SourceError
from sync.store import StoreError, SyncStore

DEFAULT_STATE_DIR = Path("/var/lib/xcast6-engine")

routes_app = typer.Typer(help="Route sync tools: fetch a router's table, diff it against the engine's.",
                         no_args_is_help=True)


def route_to_dict(r: Route) -> dict[str, Any]:
    """JSON shape of a route (shared by fetch/diff output)."""
    return {"prefix": str(r.prefix), "protocol": r.protocol, "metric": r.metric,
            "nexthops": [{"gateway": nh.gateway_text(), "ifname": nh.ifname} for nh in r.nexthops]}


def route_text(r: Route) -> str:
    hops = ", ".join(str(nh) for nh in r.nexthops)
    return f"{r.prefix!s:<44} {hops}  [{r.protocol}/{r.metric}]"


class _Progress:
    """Progress on stderr: an updating line on a terminal, a line per 10k rows otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_phase = ""
        self.last_rows = 0
        self.seen_rows = 0
        self.t0 = time.monotonic()
        self.used = False

    def __call__(self, rows: int, phase: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.t0
        if self.tty:
            sys.stderr.write(f"\r{phase}: {rows:,} rows, {elapsed:.1f} s   ")
            sys.stderr.flush()
            self.used = True
        elif phase != self.last_phase or rows - self.last_rows >= 10_000:
            sys.stderr.write(f"{phase}: {rows:,} rows, {elapsed:.1f} s\n")
            self.last_rows = rows
        self.last_phase, self.seen_rows = phase, rows

    def done(self) -> None:
        if self.used:
            sys.stderr.write("\n")
        elif not self.quiet and self.last_phase and self.seen_rows != self.last_rows:
            elapsed = time.monotonic() - self.t0
            sys.stderr.write(f"{self.last_phase}: {self.seen_rows:,} rows, {elapsed:.1f} s\n")


def _fetch(source_url: str, timeout: float, quiet: bool, as_json: bool) -> Snapshot:
    try:
        source = open_source(source_url)
    except (SourceUrlError, SourceError, ValueError) as exc:
        raise clikit.fail(str(exc), clikit.EXIT_USAGE, as_json) from None
    progress = _Progress(quiet)
    try:
        snap = asyncio.run(asyncio.wait_for(source.fetch(progress), timeout))
    except TimeoutError:
        raise clikit.fail(f"{strip_secrets(source_url)}: no complete table within {timeout:g} s (--timeout)",
                          clikit.EXIT_UNREACHABLE, as_json) from None
    except SourceError as exc:
        raise clikit.fail(str(exc), clikit.SOURCE_KIND_EXIT[exc.kind], as_json) from None
    finally:
        progress.done()
    return snap


@routes_app.command("fetch")
def fetch_cmd(
    source: str = typer.Argument(..., help="Router source, e.g. snmp://public@[2001:db8::1] or "
                                           "netconf://user@router:830?flavor=junos"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (errors too)."),
    limit: int = typer.Option(0, "--limit", min=0, help="Print at most this many routes (0 = all)."),
    timeout: float = typer.Option(600.0, "--timeout", min=0.1, help="Give up after this many seconds."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Walk the router once and print what the engine would see: routes and interfaces."""
    snap = _fetch(source, timeout, quiet, as_json)
    routes = sorted(snap.routes, key=lambda r: (r.prefix.prefixlen, r.prefix.network_address.packed))
    shown = routes[:limit] if limit else routes
    if as_json:
        typer.echo(json.dumps({
            "source": strip_secrets(snap.source or source), "fetched_at": snap.fetched_at,
            "duration_s": round(snap.duration_s, 3), "route_count": len(routes),
            "interfaces": [{"name": i.name, "index": i.index, "oper_up": i.oper_up, "descr": i.descr}
                           for i in snap.interfaces],
            "routes": [route_to_dict(r) for r in shown],
        }, indent=2))
        return
    typer.echo(f"source {strip_secrets(snap.source or source)}: {len(routes):,} routes, "
               f"{len(snap.interfaces)} interfaces, fetched in {snap.duration_s:.2f} s")
    typer.echo("\ninterfaces:")
    for i in sorted(snap.interfaces, key=lambda i: (i.index is None, i.index or 0, i.name)):
        typer.echo(f"  {i.index if i.index is not None else '-':>6}  {i.name:<24} "
                   f"{'up' if i.oper_up else 'DOWN':<5} {i.descr}")
    typer.echo("\nroutes:")
    for r in shown:
        typer.echo(f"  {route_text(r)}")
    if limit and len(routes) > limit:
        typer.echo(f"  ... {len(routes) - limit:,} more (--limit 0 for all)")


def _diff_json(d: SnapshotDiff, limit: int, stored: Snapshot | None) -> dict[str, Any]:
    def cut(items: list[Any]) -> list[Any]:
        return items[:limit] if limit else items

    return {
        "stored": None if stored is None else {"source": strip_secrets(stored.source),
                                               "fetched_at": stored.fetched_at,
                                               "route_count": len(stored.routes)},
        "counts": d.counts(),
        "removed_share": round(d.removed_share, 4),
        "added": [route_to_dict(r) for r in cut(d.added)],
        "removed": [route_to_dict(r) for r in cut(d.removed)],
        "changed": [{"old": route_to_dict(c.old), "new": route_to_dict(c.new)} for c in cut(d.changed)],
        "interfaces": {
            "added": [i.name for i in d.interfaces.added],
            "removed": [i.name for i in d.interfaces.removed],
            "oper_changed": [{"name": n.name, "oper_up": n.oper_up} for _, n in d.interfaces.oper_changed],
        },
    }


@routes_app.command("diff")
def diff_cmd(
    source: str = typer.Argument(..., help="Router source URL (as for 'routes fetch')."),
    state_dir_opt: str = typer.Option(str(DEFAULT_STATE_DIR), "--state-dir", envvar="XCAST6_STATE_DIR",
                                   help="Engine state directory holding the stored snapshot "
                                        "(env XCAST6_STATE_DIR)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (errors too)."),
    limit: int = typer.Option(50, "--limit", min=0, help="Show at most this many per section (0 = all)."),
    max_removal_share: float = typer.Option(0.5, "--max-removal-share", min=0.0, max=1.0,
                                            help="Report whether the safety valve would hold this diff."),
    timeout: float = typer.Option(600.0, "--timeout", min=0.1, help="Give up after this many seconds."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Walk the router and compare with the engine's stored (last good) snapshot (exit 6: they differ)."""
    state_dir = Path(state_dir_opt)
    if not (state_dir / "sync.sqlite3").exists():
        stored = None
    else:
        try:
            store = SyncStore(state_dir)
            stored = store.load_snapshot()
            store.close()
        except StoreError as exc:
            raise clikit.fail(str(exc), clikit.EXIT_FAILED, as_json) from None
    snap = _fetch(source, timeout, quiet, as_json)
    d = diff(stored, snap)
    held = None
    if stored is not None and d.old_count:
        if d.new_count == 0:
            held = "fetched table is empty"
        elif d.removed_share > max_removal_share:
            held = f"removes {d.removed_share:.0%} of the table (> {max_removal_share:.0%})"
    if as_json:
        out = _diff_json(d, limit, stored)
        out["safety_valve"] = {"would_hold": held is not None, "reason": held}
        typer.echo(json.dumps(out, indent=2))
    else:
        if stored is None:
            typer.echo(f"no stored snapshot in {state_dir}: everything is new")
        else:
            typer.echo(f"stored: {len(stored.routes):,} routes from {strip_secrets(stored.source)} at "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stored.fetched_at))}")
        c = d.counts()
        typer.echo(f"router: {c['new_count']:,} routes   +{c['added']:,} added  -{c['removed']:,} removed  "
                   f"~{c['changed']:,} changed   interfaces +{c['interfaces_added']} "
                   f"-{c['interfaces_removed']} ~{c['interfaces_oper_changed']} oper")
        if held:
            typer.echo(f"safety valve: the engine would HOLD this diff back ({held}) until forced")
        for title, sign, items in (("added", "+", d.added), ("removed", "-", d.removed)):
            items = sorted(items, key=lambda r: (r.prefix.network_address.packed, r.prefix.prefixlen))
            for r in items[:limit] if limit else items:
                typer.echo(f"{sign} {route_text(r)}")
            if limit and len(items) > limit:
                typer.echo(f"{sign} ... {len(items) - limit:,} more {title}")
        changed = sorted(d.changed, key=lambda c: (c.new.prefix.network_address.packed,
                                                  c.new.prefix.prefixlen))
        for ch in changed[:limit] if limit else changed:
            typer.echo(f"~ {route_text(ch.old)}\n  -> {', '.join(str(nh) for nh in ch.new.nexthops)}  "
                       f"[{ch.new.protocol}/{ch.new.metric}]")
        if limit and len(changed) > limit:
            typer.echo(f"~ ... {len(changed) - limit:,} more changed")
        for i in d.interfaces.added:
            typer.echo(f"+ interface {i.name}")
        for i in d.interfaces.removed:
            typer.echo(f"- interface {i.name}")
        for _, n in d.interfaces.oper_changed:
            typer.echo(f"~ interface {n.name} now {'up' if n.oper_up else 'DOWN'}")
    if d.route_changes or not d.interfaces.empty:
        raise typer.Exit(clikit.EXIT_DIFFERS)


@routes_app.command("history")
def history_cmd(
    state_dir_opt: str = typer.Option(str(DEFAULT_STATE_DIR), "--state-dir", envvar="XCAST6_STATE_DIR",
                                   help="Engine state directory (env XCAST6_STATE_DIR)."),
    limit: int = typer.Option(20, "--limit", min=1, help="Newest N entries."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (errors too)."),
) -> None:
    """Show the recorded sync history (time, trigger, outcome, counts, error)."""
    state_dir = Path(state_dir_opt)
    if not (state_dir / "sync.sqlite3").exists():
        raise clikit.fail(f"no sync state in {state_dir} (sync.sqlite3 missing)", clikit.EXIT_USAGE, as_json)
    try:
        store = SyncStore(state_dir)
        entries = store.history(limit)
        store.close()
    except StoreError as exc:
        raise clikit.fail(str(exc), clikit.EXIT_FAILED, as_json) from None
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.started_at))
        typer.echo(f"{when}  {e.trigger:<8} {e.outcome:<9} {e.duration_s:7.2f} s  "
                   f"routes {e.route_count:>8,}  +{e.added} -{e.removed} ~{e.changed}  gen {e.generation}"
                   + (f"\n    {e.error}" if e.error else ""))
