"""The CLI's conventions, without a daemon: one vocabulary, help that renders, -c = --config,
--json everywhere it prints (errors too), one exit-code table and error prefix, completion, the
generated man page, and ``show stats`` leading with the key numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from api import main
from api.cli import render_stats
from engine.dataplane.counters import counter_names
from engine.tools import clikit

runner = CliRunner()
main._register()      # at import: the parametrized tests below walk the whole command tree


def invoke(*args: str) -> Any:
    return runner.invoke(main.app, list(args), prog_name="xcast6-engine")


def _commands_of(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        if not sub.hidden:
            yield from _commands_of(sub, [*path, name])


ALL = list(_commands_of(typer.main.get_command(main.app), []))


def test_vocabulary_top_level() -> None:
    """vtysh/birdc habits: 'show' reads the running engine, one verb per thing, local tools keep
    their groups; the previous spellings are hidden."""
    top = {name for path, _ in ALL if len(path) == 1 for name in path}
    assert {"show", "verify", "resync", "run", "config", "routes", "links", "decode", "explain", "send",
            "demo", "counters", "cpu-idle", "lab", "bench", "manpage"} <= top
    assert not top & {"status", "stats", "diff", "interfaces", "api"}
    show = {path[1] for path, _ in ALL if path[:1] == ["show"] and len(path) == 2}
    assert show == {"status", "routes", "links", "stats"}
    links = {path[1] for path, _ in ALL if path[:1] == ["links"] and len(path) == 2}
    assert links == {"plan", "apply", "kernel"}
    routes = {path[1] for path, _ in ALL if path[:1] == ["routes"] and len(path) == 2}
    assert routes == {"fetch", "diff", "history"}


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=lambda p: " ".join(p) or "root")
def test_every_help_renders(path: list[str]) -> None:
    """Plain-text help: nothing eaten by markup, no reST double backticks shown literally."""
    r = invoke(*path, "--help")
    assert r.exit_code == 0, r.output
    assert "``" not in r.output
    assert "Traceback" not in r.output


def test_help_keeps_brackets() -> None:
    """Rich markup used to eat '[links]' and '[up|down]' in the links help."""
    out = invoke("links", "plan", "--help").output
    assert "[links]" in out and "[up|down]" in out


def test_root_help_has_the_exit_code_table() -> None:
    out = invoke("--help").output
    for code, (_, meaning) in clikit.EXIT_CODES.items():
        assert f"{code}  {meaning}" in out


@pytest.mark.parametrize("path", [p for p, c in ALL if any(
    "--config" in getattr(o, "opts", ()) for o in getattr(c, "params", []))], ids=" ".join)
def test_c_means_config_wherever_it_exists(path: list[str]) -> None:
    cmd = dict((tuple(p), c) for p, c in ALL)[tuple(path)]
    for opt in cmd.params:
        if "-c" in getattr(opt, "opts", ()):
            assert "--config" in opt.opts, path


def test_no_c_that_is_not_config() -> None:
    for path, cmd in ALL:
        for opt in getattr(cmd, "params", []):
            if "-c" in getattr(opt, "opts", ()):
                assert "--config" in opt.opts, (path, opt.opts)


# Benchmarks are left out: they write their JSON to files (bench/results), the table is for people;
# manpage prints roff.
PRINTING = [p for p, c in ALL if not getattr(c, "commands", None) and p and p != ["manpage"]
            and p[0] != "bench"]


@pytest.mark.parametrize("path", PRINTING, ids=" ".join)
def test_every_printing_command_has_json(path: list[str]) -> None:
    cmd = dict((tuple(p), c) for p, c in ALL)[tuple(path)]
    assert any("--json" in getattr(o, "opts", ()) for o in cmd.params), path


def test_usage_error_prefix_and_json() -> None:
    r = invoke("show", "routes", "--bogus")
    assert r.exit_code == clikit.EXIT_USAGE
    assert "xcast6-engine: No such option: --bogus" in r.stderr
    r = invoke("show", "routes", "--bogus", "--json")
    assert r.exit_code == clikit.EXIT_USAGE and r.stderr == ""
    assert json.loads(r.stdout) == {"error": {"exit_code": 2, "kind": "usage",
                                              "message": "No such option: --bogus"}}


def test_counters_without_engine_is_unreachable(tmp_path: Any) -> None:
    r = invoke("counters", "--file", str(tmp_path / "none.shm"), "--json")
    assert r.exit_code == clikit.EXIT_UNREACHABLE
    assert json.loads(r.stdout)["error"]["kind"] == "unreachable"


def test_config_check_errors_are_json_with_json(tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sync]\ninterval = -5\n")
    r = invoke("config", "check", str(bad), "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["valid"] is False and doc["error"]["kind"] == "usage"
    r = invoke("config", "check", str(bad))
    assert r.exit_code == 2 and r.stderr.startswith("xcast6-engine: ")


def test_shell_completion_is_on() -> None:
    r = invoke("--show-completion", "bash")
    assert r.exit_code == 0 and "complete" in r.output and "_XCAST6_ENGINE_COMPLETE" in r.output


def test_man_page_is_generated_and_renders(tmp_path: Any) -> None:
    assert shutil.which("groff"), "groff comes with Debian's groff-base (scripts/bootstrap.sh)"
    page = tmp_path / "xcast6-engine.1"
    r = invoke("manpage", "-o", str(page))
    assert r.exit_code == 0, r.output
    text = page.read_text()
    for section in (".SH NAME", ".SH SYNOPSIS", ".SH COMMANDS", ".SH EXIT STATUS", ".SH ENVIRONMENT"):
        assert section in text
    for path, cmd in ALL:
        if path and not getattr(cmd, "commands", None):
            assert f".SS {' '.join(path)}\n" in text, path
    assert ".SS interfaces" not in text and ".SS api" not in text        # hidden spellings
    g = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(page)], capture_output=True, text=True)
    assert g.returncode == 0 and g.stderr == "", g.stderr
    shown = re.sub(".\x08", "", g.stdout)                       # grotty's overstrike bold
    assert "show stats" in shown and "EXIT STATUS" in shown


def _stats(counters: dict[str, int]) -> dict[str, Any]:
    full = dict.fromkeys(counter_names(), 0) | counters
    return {"counters": full, "rates_per_s": {"received": 12.5},
            "latency": {"count": 7, "p50_us": 20.0, "p90_us": 40.0, "p99_us": 90.0}, "workers": []}


def test_stats_leads_with_key_numbers_and_nonzero_drops_first() -> None:
    text = render_stats(_stats({"received": 100, "branched": 90, "copies_out": 80, "x2u_out": 70,
                                "drop.hop_limit_exceeded": 3, "drop.truncated": 5, "not_xcast": 2,
                                "drop.no_route": 4, "egress_no_mac": 1, "rx_queue_drops": 1}))
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[:7]] == ["received", "branched", "copies", "copies", "drops",
                                                      "drops", "drops"]
    assert lines[0].split() == ["received", "100", "12.5/s"]
    assert lines[4].split()[:3] == ["drops", "(packets)", "11"]      # 5 + 3 + 2 + 1 whole packets
    assert lines[5].split()[:3] == ["drops", "(destinations)", "4"]
    assert lines[7] == "latency: p50 20 us, p90 40 us, p99 90 us (7 packets)"
    head = lines.index(next(line for line in lines if line.startswith("DROP REASON")))
    table = [line.split() for line in lines[head + 1:lines.index("", head)]]
    nonzero = ["truncated", "no_route", "hop_limit_exceeded", "not_xcast", "no_router_mac", "rx_queue_full"]
    assert [row[0] for row in table[:6]] == nonzero
    assert [row[1] for row in table[:6]] == ["packets", "destinations", "packets", "packets", "copies",
                                             "packets"]
    assert len(table) > 26 and {row[2] for row in table[6:]} == {"0"}   # every other reason, zero, after


def test_run_with_json_reports_a_bad_config_as_json(tmp_path: Any) -> None:
    r = invoke("run", "-c", str(tmp_path / "missing.toml"), "--json")
    assert r.exit_code == clikit.EXIT_USAGE
    assert json.loads(r.stdout)["error"]["kind"] == "usage"
