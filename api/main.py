"""The ``xcast6-engine`` command: the one root CLI, in the top layer, assembled with fixed names.

Each package owns its commands (engine/tools/tools_cli.py packet tools, sync/cli.py ``routes``
tools, vlan/cli.py ``interfaces`` tools, api/cli.py daemon and API client); this module is the only
place that gathers them, so no lower package imports another package's CLI.  The namespace lab
and the benchmarks sit above the product (they drive the daemon and its API), so they join through
the ``xcast6_engine.commands`` entry points (pyproject.toml) instead of an import that would point
up.  Group names are fixed here: ``routes`` and ``interfaces`` hold the local tools plus the
running engine's view as their default sub-command (``routes show``, ``interfaces live``); every
API client command is also under ``api``.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import typer

from engine import __version__

COMMAND_PLUGINS = "xcast6_engine.commands"  # register(app) functions of the tools above the product

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
    ca_file: str | None = typer.Option(
        None, "--ca-file", help="Verify the API's TLS certificate against this CA file (or the server's own "
        "certificate) (env XCAST6_API_CA_FILE)"),
    client_cert: str | None = typer.Option(
        None, "--client-cert", help="Client certificate for an API that requires one (mTLS) "
        "(env XCAST6_API_CLIENT_CERT)"),
    client_key: str | None = typer.Option(
        None, "--client-key",
        help="Its private key, when not in the certificate file (env XCAST6_API_CLIENT_KEY)"),
) -> None:
    """XCAST6 routing engine."""
    # Issue 20: the API client's TLS settings, for every client command at once; a flag is its
    # environment variable given on the command line (api/client.py resolve_target reads them).
    for var, value in (("XCAST6_API_CA_FILE", ca_file), ("XCAST6_API_CLIENT_CERT", client_cert),
                       ("XCAST6_API_CLIENT_KEY", client_key)):
        if value:
            os.environ[var] = value


_registered = False


def _register() -> None:
    """Attach every package's commands (imported here, at start, so importing engine stays cheap)."""
    global _registered
    if _registered:
        return
    _registered = True
    from api import cli as api_cli
    from engine.tools import tools_cli
    from sync import cli as sync_cli
    from vlan import cli as vlan_cli

    tools_cli.register(app)
    api_cli.register(app, routes=sync_cli.routes_app, interfaces=vlan_cli.interfaces_app)
    for entry in sorted(entry_points(group=COMMAND_PLUGINS), key=lambda e: e.name):
        entry.load()(app)


def main() -> None:
    """Console-script entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
