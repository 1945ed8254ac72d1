"""xcast6-engine(1), generated from the command tree, so the man page cannot drift from the CLI.

Walks the Click commands Typer builds (hidden ones, the previous release's spellings, are left
out, as in ``--help``) and writes man(7) roff: NAME, SYNOPSIS, DESCRIPTION, one subsection per
command with its options, EXIT STATUS from the one exit-code table, ENVIRONMENT, FILES.
"""

from __future__ import annotations

import time
from typing import Any

from engine.tools import clikit

ENVIRONMENT = {
    "XCAST6_CONFIG": "engine configuration file of the client commands "
    "(default /etc/xcast6-engine/engine.toml)",
    "XCAST6_API_URL": "API URL of the client commands",
    "XCAST6_API_TOKEN": "API bearer token",
    "XCAST6_SNMP_COMMUNITY": "SNMPv2c community of a route source",
    "XCAST6_SNMP_AUTH_KEY": "SNMPv3 authentication key",
    "XCAST6_SNMP_PRIV_KEY": "SNMPv3 privacy key",
    "XCAST6_NETCONF_PASSWORD": "NETCONF password",
    "XCAST6_STATE_DIR": "state directory of 'routes diff' and 'routes history'",
}


def _esc(text: str) -> str:
    """Escape roff: backslashes, and a leading dot or quote that would start a request."""
    out = []
    for line in text.replace("\\", "\\e").splitlines():
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


# Typer vendors its own Click: the command objects are walked by their documented attributes
# (commands, hidden, params, opts) rather than by Click's classes.
def _walk(cmd: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    out: list[tuple[list[str], Any]] = []
    commands = getattr(cmd, "commands", None)
    if commands is not None:
        for name in commands:
            sub = commands[name]
            if not sub.hidden:
                out += _walk(sub, [*path, name])
    elif path:
        out.append((path, cmd))
    return out


def _context(cmd: Any) -> Any:
    return cmd.context_class(cmd, info_name=cmd.name)


def _usage(cmd: Any) -> str:
    return " ".join(cmd.collect_usage_pieces(_context(cmd)))


def _option(p: Any) -> str | None:
    if getattr(p, "hidden", False):
        return None
    if p.param_type_name == "option":
        names = ", ".join(f"\\fB{_esc(n)}\\fR" for n in [*p.opts, *p.secondary_opts])
        kind = getattr(getattr(p, "type", None), "name", None) or "value"
        meta = "" if p.is_flag else f" \\fI{_esc(p.metavar or kind.upper())}\\fR"
        return f".TP\n{names}{meta}\n{_esc(p.help or '')}"
    if p.param_type_name == "argument":
        name = (p.metavar or p.name or "ARG").upper()
        return f".TP\n\\fI{_esc(name)}\\fR\n{_esc(getattr(p, 'help', None) or '')}"
    return None


def render(root: Any, version: str, prog: str = clikit.PROG) -> str:
    """The man page as roff text."""
    date = time.strftime("%Y-%m-%d", time.gmtime())
    lines = [
        f'.TH {prog.upper()} 1 "{date}" "{prog} {version}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- XCAST6 routing engine: daemon, client, route/link and packet tools",
        ".SH SYNOPSIS",
        f"\\fB{prog}\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        _esc(root.help or ""),
        ".PP",
        _esc(" ".join((root.epilog or "").split("Exit codes")[0].split())),
        ".SH COMMANDS",
    ]
    for path, cmd in _walk(root, []):
        lines.append(f".SS {' '.join(path)}")
        lines.append(f"\\fB{prog} {' '.join(path)}\\fR {_esc(_usage(cmd))}")
        lines.append(".PP")
        lines.append(_esc(cmd.help or ""))
        for p in cmd.params:
            if p.name in ("help",):
                continue
            text = _option(p)
            if text:
                lines.append(text)
    lines.append(".SH EXIT STATUS")
    for code, (kind, meaning) in clikit.EXIT_CODES.items():
        lines.append(f".TP\n\\fB{code}\\fR\n{_esc(meaning)} (JSON error kind \\fI{kind}\\fR)")
    lines.append(".SH ENVIRONMENT")
    for var, what in ENVIRONMENT.items():
        lines.append(f".TP\n\\fB{var}\\fR\n{_esc(what)}")
    lines += [
        ".SH FILES",
        ".TP\n/etc/xcast6-engine/engine.toml\nengine configuration",
        ".TP\n/var/lib/xcast6-engine\nstate directory: last good snapshot, sync history, generated API token",
        ".TP\n/run/xcast6-engine/stats.shm\nworker counters (\\fBxcast6-engine counters\\fR)",
        ".SH SEE ALSO",
        "\\fBsystemd.service\\fR(5), \\fBjournalctl\\fR(1), \\fBip\\fR(8)",
    ]
    return "\n".join(lines) + "\n"
