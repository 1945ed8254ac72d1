"""The ``xcast6-engine`` command: the one root CLI, in the top layer, assembled with fixed names.

Each package owns its commands (engine/tools/tools_cli.py packet tools, sync/cli.py ``routes``
tools, vlan/cli.py ``links`` tools, api/cli.py daemon, ``show``/``verify``/``resync``); this module
is the only place that gathers them, so no lower package imports another package's CLI.  The
namespace lab and the benchmarks sit above the product (they drive the daemon and its API), so
they join through the ``xcast6_engine.commands`` entry points (pyproject.toml) instead of an
import that would point up.

The conventions every command shares (exit codes, error prefix, ``--json`` errors) live in
engine/tools/clikit.py; this root enforces them for what happens before a command runs (a usage
error), turns shell completion on, and renders help as plain text: Rich markup would eat
``[links]`` or ``[up|down]`` in help texts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import typer
from typer.core import TyperGroup

from engine import __version__
from engine.tools import clikit

COMMAND_PLUGINS = "xcast6_engine.commands"  # register(app) functions of the tools above the product

VOCABULARY = """\
Vocabulary (as in vtysh/birdc): 'show ...' asks the running engine and changes nothing;
'verify' and 'resync' act on it; 'run' is the daemon; 'routes' and 'links' are local tools
(a router's table, this host's kernel); decode/explain/send/demo are packet tools.
"""


class RootGroup(TyperGroup):
    """The root command: one error prefix and exit code for usage errors, JSON with ``--json``."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(clikit.EXIT_FAILED)
        except typer.TyperException as exc:  # Click's exceptions (Typer vendors Click)
            sys.exit(_report(exc, clikit.json_requested(argv)))
        sys.exit(code if isinstance(code, int) else clikit.EXIT_OK)


def _report(exc: Exception, as_json: bool) -> int:
    """A usage error (bad option, missing argument, unknown command) in the one error format."""
    code = int(getattr(exc, "exit_code", clikit.EXIT_USAGE))
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and not as_json:   # a bare group: its help
        typer.echo(ctx.get_help() if ctx is not None else str(exc), err=True)
        return code
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    if ctx is not None and not as_json:
        typer.echo(ctx.get_usage(), err=True)
        message += f" (try '{ctx.command_path} --help')"
    clikit.fail(message, code, as_json)
    return code


app = typer.Typer(
    name="xcast6-engine",
    cls=RootGroup,
    help="XCAST6 routing engine: the daemon and its view (show, verify, resync), route and link "
    "tools, packet tools, lab and benchmarks.",
    # \b: Click keeps the next paragraph's line breaks (the table)
    epilog=VOCABULARY + "\n\b\nExit codes (every command):\n" + clikit.exit_table(),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
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


def manpage(
    output: str | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
) -> None:
    """Print the xcast6-engine(1) man page, generated from this command tree (roff)."""
    from api.manpage import render

    text = render(typer.main.get_command(app), __version__)
    if output is None:
        typer.echo(text, nl=False)
    else:
        with open(output, "w") as f:
            f.write(text)


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

    api_cli.register(app, routes_app=sync_cli.routes_app, links_app=vlan_cli.links_app,
                     links_aliases=vlan_cli.ALIASES)
    tools_cli.register(app)
    for entry in sorted(entry_points(group=COMMAND_PLUGINS), key=lambda e: e.name):
        entry.load()(app)
    app.command("manpage")(manpage)


def main() -> None:
    """Console-script entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
