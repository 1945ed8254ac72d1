"""What every ``xcast6-engine`` command shares: the exit-code table, the error prefix, JSON output.

Each package's CLI (engine/tools, sync, vlan, api, lab, bench) reports through these, so a
script sees one convention whatever the command:

* exit codes (:data:`EXIT_CODES`, also in ``--help`` of the root command and the man page);
* errors on stderr as ``xcast6-engine: <message>``; with ``--json`` the error is a JSON document
  on stdout instead (``{"error": {"exit_code", "kind", "message"}}``), so stdout always holds
  exactly one JSON document;
* ``-c`` is ``--config`` wherever it exists.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

PROG = "xcast6-engine"
PREFIX = f"{PROG}: "

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and failed: an API error answer, no valid packet, a local failure
EXIT_USAGE = 2  # bad option, argument, input file or configuration
EXIT_UNREACHABLE = 3  # no answer: engine API, router (SNMP/NETCONF), or no running engine's counters
EXIT_AUTH = 4  # credentials missing or refused (API token, SNMPv3 user, NETCONF login)
EXIT_NOT_APPLIED = 5  # resync held back by the safety valve, or failed
EXIT_DIFFERS = 6  # verify --exit-code / routes diff: the tables differ

#: code -> (kind, meaning); the kind is the ``error.kind`` of a JSON error.
EXIT_CODES: dict[int, tuple[str, str]] = {
    EXIT_OK: ("ok", "success"),
    EXIT_FAILED: ("failed", "the command ran and failed (the API refused, no valid packet, a local error)"),
    EXIT_USAGE: ("usage", "bad option, argument, input file or configuration"),
    EXIT_UNREACHABLE: ("unreachable", "no answer from the engine API or the router, or no running engine"),
    EXIT_AUTH: ("auth", "credentials missing or refused (API token, SNMPv3, NETCONF)"),
    EXIT_NOT_APPLIED: ("not_applied", "resync held back by the safety valve, or failed"),
    EXIT_DIFFERS: ("differs", "verify --exit-code or routes diff found differences"),
}

#: SourceError.kind (sync/source.py) -> exit code
SOURCE_KIND_EXIT = {"unreachable": EXIT_UNREACHABLE, "auth": EXIT_AUTH, "failed": EXIT_FAILED}


def exit_table() -> str:
    """The exit-code table as text (root ``--help``, man page)."""
    return "\n".join(f"{code}  {meaning}" for code, (_, meaning) in EXIT_CODES.items())


def error_doc(message: str, code: int) -> dict[str, Any]:
    """The JSON form of an error."""
    kind = EXIT_CODES.get(code, ("failed", ""))[0]
    return {"error": {"exit_code": code, "kind": kind, "message": message}}


def fail(message: str, code: int = EXIT_FAILED, as_json: bool = False) -> typer.Exit:
    """Report an error the one way and return the ``typer.Exit`` to raise."""
    if as_json:
        typer.echo(json.dumps(error_doc(message, code), indent=2))
    else:
        typer.echo(PREFIX + message, err=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    """A warning on stderr (never on stdout, where ``--json`` output goes)."""
    typer.echo(PREFIX + "warning: " + message, err=True)


def dump(doc: Any) -> None:
    """Print one JSON document."""
    typer.echo(json.dumps(doc, indent=2, default=str))


def json_requested(args: list[str] | None = None) -> bool:
    """Whether ``--json`` is on the command line (for errors raised before a command runs)."""
    return "--json" in (sys.argv[1:] if args is None else args)


def die(message: str, code: int, as_json: bool = False) -> NoReturn:
    """``raise fail(...)`` for helpers that are not commands."""
    raise fail(message, code, as_json)
