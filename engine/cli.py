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
    # Each package owns its commands in its own module; import here so one missing optional
    # piece does not hide the others' help.
    from engine import tools_cli

    tools_cli.register(app)
    from engine import bench; bench.register(app)  # noqa: E702, I001
    from sync import cli as sync_cli; sync_cli.register(app)  # noqa: E702, I001
    from vlan import cli as vlan_cli; vlan_cli.register(app)  # noqa: E702, I001
    from api import cli as api_cli; api_cli.register(app)  # noqa: E702, I001


def main() -> None:
    """Console-script entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
