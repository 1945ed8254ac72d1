"""``xcast6-engine links plan|apply|kernel``: engine links on this host's kernel (local operations).

(The running engine's own view of its links is ``xcast6-engine show links``; ``interfaces`` is the
previous release's name of this group, kept hidden for one release.)

Inputs: the ``[links]`` section of the engine's TOML config (the daemon's own file, validated by
the same rules the daemon applies to it) and the router's interface list, either fetched from
the router (``--router URL``, through the sync sources) or read from a file
(``--router-interfaces``: JSON list of ``{"name", "index", "oper_up"}`` objects, or text lines
``NAME [up|down]``).
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from engine.model import Interface, LinkMap
from engine.tools import clikit
from vlan.config import LinksConfig, PlanError
from vlan.kernel import mac_text, read_kernel
from vlan.neighbors import read_neighbors
from vlan.plan import owner_router_if
from vlan.reconcile import ReconcileError, ReconcileResult, is_owned, open_ipr, reconcile

links_app = typer.Typer(
    name="links",
    help="Engine links on this host (802.1Q subinterfaces or direct links) mirroring the router's "
    "interfaces: plan, apply, and what the kernel has.",
    no_args_is_help=True,
)

ConfigOpt = typer.Option(..., "--config", "-c", help="The engine configuration (its [links] table is used).")
RouterOpt = typer.Option(
    None, "--router", help="Fetch the interface list from this router URL (snmp://, netconf://)."
)
RouterFileOpt = typer.Option(
    None,
    "--router-interfaces",
    help="Router interface list: JSON [{name,index,oper_up}] or lines 'NAME [up|down]'.",
)
NetnsOpt = typer.Option(None, "--netns", help="Operate in this network namespace (default: the current one).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output (errors too).")


def load_config(path: Path) -> LinksConfig:
    """Read and validate the ``[links]`` table of the engine's TOML configuration."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise PlanError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError("--config", f"{path} is not valid TOML: {exc}") from None
    table = raw.get("links")
    if table is None:
        raise PlanError("links", f"{path} has no [links] table (the engine links: mode, trunk, map)")
    if not isinstance(table, dict):
        raise PlanError("links", "must be a table")
    return LinksConfig.from_dict(table, where="links")


def parse_router_interfaces(text: str, origin: str = "router interfaces") -> list[Interface]:
    """Parse a JSON list or ``NAME [up|down]`` lines into router interfaces (file order = index)."""
    stripped = text.strip()
    result: list[Interface] = []
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise PlanError(origin, f"not valid JSON: {exc}") from None
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("name"), str):
                raise PlanError(f"{origin}[{i}].name", "each entry needs a string 'name'")
            index = row.get("index", i + 1)
            oper = row.get("oper_up", True)
            if not isinstance(oper, bool):
                raise PlanError(f"{origin}[{i}].oper_up", f"{oper!r} must be true or false")
            result.append(Interface(row["name"], index, oper, str(row.get("descr", ""))))
        return result
    for lineno, line in enumerate(stripped.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        state = words[1].lower() if len(words) > 1 else "up"
        if state not in ("up", "down") or len(words) > 2:
            raise PlanError(f"{origin}:{lineno}", f"{line.strip()!r}: expected 'NAME [up|down]'")
        result.append(Interface(words[0], lineno, state == "up"))
    return result


class RouterFetchError(Exception):
    """``--router`` could not be read; ``code`` is the exit code its failure kind maps to."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def router_interfaces(router: str | None, router_file: Path | None) -> list[Interface]:
    """The router's interfaces from ``--router`` (a sync source URL) or ``--router-interfaces``."""
    if (router is None) == (router_file is None):
        raise PlanError("--router/--router-interfaces", "give exactly one")
    if router_file is not None:
        try:
            return parse_router_interfaces(router_file.read_text(), str(router_file))
        except OSError as exc:
            raise PlanError(
                "--router-interfaces", f"cannot read {router_file}: {exc.strerror or exc}"
            ) from None
    assert router is not None
    from sync.registry import open_source
    from sync.source import SourceError

    try:
        source = open_source(router)
    except (SourceError, ValueError) as exc:
        raise PlanError("--router", str(exc)) from None
    try:
        snapshot = asyncio.run(source.fetch())
    except SourceError as exc:
        raise RouterFetchError(f"--router: {exc}", clikit.SOURCE_KIND_EXIT[exc.kind]) from None
    return list(snapshot.interfaces)


def linkmap_rows(linkmap: LinkMap) -> list[dict[str, Any]]:
    """JSON-friendly rows of a LinkMap (also what ``--json`` prints)."""
    from ipaddress import IPv6Address

    return [
        {
            "router_if": lk.router_ifname,
            "engine_if": lk.engine_ifname,
            "ifindex": lk.engine_ifindex,
            "vlan": lk.vlan_id,
            "engine_addr": str(IPv6Address(lk.engine_addr)),
            "router_addr": str(IPv6Address(lk.router_addr)) if lk.router_addr else None,
            "engine_mac": mac_text(lk.engine_mac),
            "router_mac": mac_text(lk.router_mac) if lk.router_mac else None,
            "mtu": lk.mtu,
            "oper_up": lk.oper_up,
        }
        for lk in linkmap.links()
    ]


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'ROUTER IF':<18} {'ENGINE IF':<15} {'VLAN':>4} {'ENGINE ADDR':<26} {'ROUTER ADDR':<24} "
        f"{'ROUTER MAC':<17} {'MTU':>5} STATE"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['router_if']:<18} {r['engine_if']:<15} {r['vlan'] if r['vlan'] is not None else '-':>4} "
            f"{r['engine_addr']:<26} {r['router_addr'] or '-':<24} {r['router_mac'] or '(unresolved)':<17} "
            f"{r['mtu']:>5} {'up' if r['oper_up'] else 'down'}"
        )
    return "\n".join(lines)


def _print_result(result: ReconcileResult, as_json: bool, dry_run: bool) -> None:
    rows = linkmap_rows(result.linkmap)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "applied": result.applied,
                    "actions": [a.describe() for a in result.actions],
                    "links": rows,
                    "unmapped": result.plan.unmapped,
                },
                indent=2,
            )
        )
        return
    verb = "to make (dry run)" if dry_run else "made"
    if result.actions:
        typer.echo(f"# {len(result.actions)} change(s) {verb}:")
        for action in result.actions:
            typer.echo(action.describe())
    else:
        typer.echo("# kernel already matches the plan (no changes)")
    typer.echo("")
    typer.echo(_table(rows))
    for name, why in sorted(result.plan.unmapped.items()):
        typer.echo(f"# router interface {name}: not mapped ({why})")


def _fail(exc: Exception, as_json: bool) -> typer.Exit:
    """A bad config/option/input file is a usage error; the kernel refusing a change is a failure."""
    if isinstance(exc, RouterFetchError):
        code = exc.code
    elif isinstance(exc, PlanError):
        code = clikit.EXIT_USAGE
    else:
        code = clikit.EXIT_FAILED
    return clikit.fail(str(exc), code, as_json)


@links_app.command("plan")
def plan_cmd(
    config: Path = ConfigOpt,
    router: str | None = RouterOpt,
    router_interfaces_file: Path | None = RouterFileOpt,
    netns: str | None = NetnsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show the desired links and, as a diff, what 'apply' would change in the kernel."""
    try:
        cfg = load_config(config)
        result = reconcile(cfg, router_interfaces(router, router_interfaces_file), netns=netns, dry_run=True)
    except (PlanError, ReconcileError, RouterFetchError) as exc:
        raise _fail(exc, as_json) from None
    _print_result(result, as_json, dry_run=True)


@links_app.command("apply")
def apply_cmd(
    config: Path = ConfigOpt,
    router: str | None = RouterOpt,
    router_interfaces_file: Path | None = RouterFileOpt,
    netns: str | None = NetnsOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the changes as a diff, change nothing."),
    wait_neighbors: float = typer.Option(2.0, "--wait-neighbors", help="Seconds to wait for router MACs."),
    as_json: bool = JsonOpt,
) -> None:
    """Create/update/delete the engine links so the kernel matches the plan (idempotent)."""
    try:
        cfg = load_config(config)
        result = reconcile(
            cfg,
            router_interfaces(router, router_interfaces_file),
            netns=netns,
            dry_run=dry_run,
            neighbor_wait_s=wait_neighbors,
        )
    except (PlanError, ReconcileError, RouterFetchError) as exc:
        raise _fail(exc, as_json) from None
    _print_result(result, as_json, dry_run=dry_run)


@links_app.command("kernel")
def kernel_cmd(
    config: Path = ConfigOpt,
    netns: str | None = NetnsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """What this host's kernel has now: the engine's links, addresses, state and router MACs."""
    try:
        cfg = load_config(config)
        with open_ipr(netns) as ipr:
            view = read_kernel(ipr)
            neighbors = read_neighbors(ipr)
    except (PlanError, ReconcileError, RouterFetchError) as exc:
        raise _fail(exc, as_json) from None
    if cfg.mode == "vlan":
        managed = [(owner_router_if(lk.alias) or "?", lk) for lk in view.links.values() if is_owned(lk, cfg)]
    else:
        managed = [(e.router_if, view.links[e.link]) for e in cfg.entries if e.link in view.links]
    rows: list[dict[str, Any]] = []
    for router_if, lk in sorted(managed, key=lambda item: (item[1].vlan_id or 0, item[1].name)):
        neigh = {
            str(addr): mac_text(entry.mac)
            for (idx, addr), entry in neighbors.items()
            if idx == lk.index and entry.usable and not addr.is_link_local and not addr.is_multicast
        }
        rows.append(
            {
                "router_if": router_if,
                "engine_if": lk.name,
                "ifindex": lk.index,
                "vlan": lk.vlan_id,
                "addrs": sorted(str(a) for a in lk.addrs),
                "mtu": lk.mtu,
                "admin_up": lk.admin_up,
                "oper_state": lk.oper_state,
                "engine_mac": mac_text(lk.mac),
                "neighbors": neigh,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(
        f"{'ENGINE IF':<15} {'VLAN':>4} {'ROUTER IF':<18} {'ADMIN':<5} {'OPER':<14} {'MTU':>5}  "
        "ADDRESSES / NEIGHBORS"
    )
    for r in rows:
        typer.echo(
            f"{r['engine_if']:<15} {r['vlan'] if r['vlan'] is not None else '-':>4} {r['router_if']:<18} "
            f"{'up' if r['admin_up'] else 'down':<5} {r['oper_state']:<14} {r['mtu']:>5}  "
            f"{', '.join(r['addrs']) or '-'}"
            + "".join(f"\n{'':>66}neighbor {a} at {m}" for a, m in sorted(r["neighbors"].items()))
        )
    if not rows:
        typer.echo("# no engine links in the kernel")


#: the previous release's sub-command names -> (name now, command), for the hidden ``interfaces``
ALIASES: dict[str, tuple[str, Callable[..., None]]] = {
    "plan": ("plan", plan_cmd), "apply": ("apply", apply_cmd), "show": ("kernel", kernel_cmd)
}
