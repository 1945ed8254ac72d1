"""``xcast6-engine interfaces plan|apply|show``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import main as cli
from engine.model import Interface
from lab import netns
from tests.vlan.nsutil import addrs, sh
from vlan.cli import parse_router_interfaces
from vlan.config import PlanError

DIRECT = """
[links]
mode = "direct"
pool = "2001:db8:aa::/56"
[[links.map]]
router_if = "ge-0/0/1.0"
link = "xe1"
"""


def invoke(*args: str) -> tuple[int, str, str]:
    cli._register()
    result = CliRunner().invoke(cli.app, ["links", *args])
    return result.exit_code, result.stdout, result.stderr


def test_router_interface_file_formats() -> None:
    assert parse_router_interfaces("ge-0/0/1.0\nge-0/0/2.0 down  # maintenance\n\n") == [
        Interface("ge-0/0/1.0", 1, True),
        Interface("ge-0/0/2.0", 2, False),
    ]
    assert parse_router_interfaces('[{"name": "xe-1/0/0", "index": 514, "oper_up": false}]') == [
        Interface("xe-1/0/0", 514, False)
    ]
    with pytest.raises(PlanError, match=r"ifs:2: 'b sideways': expected 'NAME \[up\|down\]'"):
        parse_router_interfaces("a\nb sideways\n", "ifs")
    with pytest.raises(PlanError, match=r"ifs\[0\].oper_up"):
        parse_router_interfaces('[{"name": "a", "oper_up": "yes"}]', "ifs")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[links]\ntrunk = "eth1"\n[[links.map]]\nrouter_if = "a"\nvlan = 5000\n',
         "xcast6-engine: links.map[0].vlan: 5000 is not allowed: must be an integer VLAN id from 1 to 4094"),
        # the daemon's file has no [interfaces] table: the section is named for what is missing
        ('[interfaces]\ntrunk = "eth1"\n', "xcast6-engine: links: {cfg} has no [links] table"),
    ],
)
def test_bad_config_exits_2_and_names_the_field(tmp_path: Path, text: str, error: str) -> None:
    cfg = tmp_path / "engine.toml"
    cfg.write_text(text)
    ifs = tmp_path / "ifs.txt"
    ifs.write_text("a\n")
    code, _, err = invoke("plan", "-c", str(cfg), "--router-interfaces", str(ifs))
    assert code == 2
    assert error.format(cfg=cfg) in err


def test_missing_router_input_is_explained(tmp_path: Path) -> None:
    cfg = tmp_path / "engine.toml"
    cfg.write_text(DIRECT)
    code, _, err = invoke("plan", "-c", str(cfg))
    assert code == 2 and "--router/--router-interfaces: give exactly one" in err
    code, out, err = invoke("plan", "-c", str(cfg), "--json")     # with --json, a JSON error
    assert code == 2 and err == ""
    assert json.loads(out)["error"] == {"exit_code": 2, "kind": "usage",
                                        "message": "--router/--router-interfaces: give exactly one"}


@pytest.mark.root
@pytest.mark.netns
def test_plan_apply_show_in_a_namespace(tmp_path: Path) -> None:
    cfg = tmp_path / "engine.toml"
    cfg.write_text(DIRECT)
    ifs = tmp_path / "ifs.txt"
    ifs.write_text("ge-0/0/1.0 up\nfxp0.0 up\n")
    with netns.temporary("xvl-cli") as (ns,):
        sh("link", "add", "xe1", "type", "veth", "peer", "name", "xr1", ns=ns)
        sh("link", "set", "xr1", "up", ns=ns)
        code, out, _ = invoke("plan", "-c", str(cfg), "--router-interfaces", str(ifs), "--netns", ns)
        assert code == 0
        assert "+ xe1             address 2001:db8:aa::1/64" in out
        assert "fxp0.0: not mapped (no mapping entry matches)" in out
        assert addrs(ns, "xe1") == set()  # plan never changes the kernel
        code, out, _ = invoke(
            "apply",
            "-c",
            str(cfg),
            "--router-interfaces",
            str(ifs),
            "--netns",
            ns,
            "--wait-neighbors",
            "0",
            "--json",
        )
        assert code == 0
        doc = json.loads(out)
        assert doc["applied"] and doc["links"][0]["engine_addr"] == "2001:db8:aa::1"
        assert addrs(ns, "xe1") == {"2001:db8:aa::1/64"}
        code, out, _ = invoke(
            "apply", "-c", str(cfg), "--router-interfaces", str(ifs), "--netns", ns, "--wait-neighbors", "0"
        )
        assert code == 0 and "no changes" in out
        code, out, _ = invoke("kernel", "-c", str(cfg), "--netns", ns, "--json")
        rows = json.loads(out)
        assert [(r["engine_if"], r["router_if"], r["addrs"]) for r in rows] == [
            ("xe1", "ge-0/0/1.0", ["2001:db8:aa::1/64"])
        ]
        # the previous release's spelling: same output, a deprecation note on stderr
        old = CliRunner().invoke(cli.app, ["interfaces", "show", "-c", str(cfg), "--netns", ns, "--json"])
        assert old.exit_code == 0 and json.loads(old.stdout) == rows
        assert "'interfaces show' is deprecated and goes in the next release: use 'links kernel'" \
            in old.stderr


EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "api" / "engine.example.toml"


@pytest.mark.root
@pytest.mark.netns
def test_plan_reads_the_daemons_own_config(tmp_path: Path) -> None:
    """The README's command on the shipped example: the daemon's file, its [links] table."""
    ifs = tmp_path / "ifs.txt"
    ifs.write_text("ge-0/0/1.0 up\nge-0/0/2.0 up\nfxp0.0 up\n")
    with netns.temporary("xvl-ex") as (ns,):
        sh("link", "add", "eth1", "type", "veth", "peer", "name", "eth9", ns=ns)
        args = ["plan", "-c", str(EXAMPLE_CONFIG), "--router-interfaces", str(ifs), "--netns", ns]
        code, out, err = invoke(*args)
        assert code == 0, err
        # the map's explicit addresses and the automatic ones agree: router ::1, engine ::2
        assert "+ xc-v101         address 2001:db8:ffff:101::2/64" in out
        assert "+ xc-v100         address 2001:db8:ffff::2/64" in out
        assert "fxp0.0: not mapped (excluded)" in out

