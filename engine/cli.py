"""The ``xcast6-engine`` command: one Typer app, sub-commands contributed by each package."""

from __future__ import annotations

import typer

from engine import __version__

app = typer.Typer(
    name="xcast6-engine",
    help="XCAST6 routing engine: packet tools, route sync, interfaces, lab, daemon and API client.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xcast6-engine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
) -> None:
    """XCAST6 routing engine."""


def _register() -> None:
    # Each package owns its commands in its own module; imported here, at start, so that
    # importing engine.cli stays cheap for the packet path.
    from api import cli as api_cli
    from engine import bench, tools_cli
    from engine.lab import cli as lab_cli
    from sync import cli as sync_cli
    from vlan import cli as vlan_cli

    for module in (tools_cli, bench, sync_cli, vlan_cli, api_cli, lab_cli):
        module.register(app)


def main() -> None:
    """Console-script entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
