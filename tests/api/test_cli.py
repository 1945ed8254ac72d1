"""CLI commands against a running daemon: output, --json, and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.client import (
    EXIT_API,
    EXIT_AUTH,
    EXIT_DIFFERS,
    EXIT_NOT_APPLIED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from api.config import example_path
from tests.api.conftest import (
    ROOT,
    TOKEN,
    Daemon,
    Router,
    free_port,
    router_namespace,
    start_daemon,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.root, pytest.mark.netns]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("XCAST6_")}
    full.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "api.main", *args],
        cwd=ROOT,
        env=full,
        text=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Router, Daemon, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="xapi-cli-"))
    with router_namespace("xapi-c") as router:
        port = free_port()
        cfg = tmp / "engine.toml"
        # the diff test changes the router and looks at once: every diff walks afresh
        write_config(cfg, tmp / "state", f"kernel://{router.ns}", port, link=router.host_link,
                     change_detect=0, extra="diff_min_interval = 0\n")
        d = start_daemon(cfg, tmp / "daemon.log", f"http://127.0.0.1:{port}")
        try:
            yield router, d, cfg
        finally:
            rc = d.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            assert rc == 0


def env_of(d: Daemon) -> dict[str, str]:
    return {"XCAST6_API_URL": d.url, "XCAST6_API_TOKEN": TOKEN}


def test_status_table_and_json(lab: tuple[Router, Daemon, Path]) -> None:
    router, d, cfg = lab
    r = cli("show", "status", "--config", str(cfg))  # URL and token from the config file
    assert r.returncode == EXIT_OK, r.stderr
    assert "ready" in r.stdout and "yes" in r.stdout and f"kernel://{router.ns}" in r.stdout
    r = cli("show", "status", "--json", env=env_of(d))
    doc = json.loads(r.stdout)
    assert doc["ready"] is True and doc["sync"]["route_count"] == 23
    assert r.stderr == ""


def test_routes_prefix_dst_lookup(lab: tuple[Router, Daemon, Path]) -> None:
    _, d, _ = lab
    r = cli("show", "routes", "2001:db8:1000::/44", env=env_of(d))
    assert r.returncode == EXIT_OK, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["PREFIX", "NEXT", "HOPS", "PROTO", "METRIC"]
    assert "2001:db8:1000::/48  2001:db8:a::2 via xapi-e0" in r.stdout
    assert lines[-1].startswith("16 of 16 routes")
    r = cli("show", "routes", "--dst", "2001:db8:1003::9", "--json", env=env_of(d))
    assert [x["prefix"] for x in json.loads(r.stdout)["routes"]] == ["2001:db8:1003::/48"]
    r = cli("show", "routes", "--lookup", "2001:db8:1003::9", env=env_of(d))
    assert r.stdout.startswith("2001:db8:1003::9 via 2001:db8:1003::/48 (") and "dev xapi-e0" in r.stdout
    r = cli("show", "routes", "--lookup", "2001:db8:ffff::1", env=env_of(d))
    assert r.returncode == EXIT_API
    assert r.stderr.strip().endswith(
        "404 no route to 2001:db8:ffff::1 in generation " + r.stderr.strip().rsplit(" ", 1)[1]
    )
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("show", "routes", "nonsense", env=env_of(d))
    assert r.returncode == EXIT_API and "'nonsense' is not an IPv6 prefix" in r.stderr


def test_previous_spellings_still_work_with_a_note(lab: tuple[Router, Daemon, Path]) -> None:
    """The previous release's spellings are hidden aliases: same output, a deprecation note on
    stderr (stdout stays clean for --json), gone from --help."""
    _, d, _ = lab
    new = cli("show", "routes", "--limit", "2", env=env_of(d))
    for old in (("routes", "show", "--limit", "2"), ("routes", "--limit", "2"),
                ("api", "routes", "--limit", "2")):
        r = cli(*old, env=env_of(d))
        assert r.returncode == EXIT_OK, r.stderr
        assert r.stdout == new.stdout and r.stdout.splitlines()[-1].startswith("2 of 23 routes")
        assert "is deprecated and goes in the next release: use 'show routes'" in r.stderr
    r = cli("routes", "2001:db8:1000::/44", env=env_of(d))
    assert r.returncode == EXIT_OK and r.stdout.splitlines()[-1].startswith("16 of 16 routes")
    for old, new_name in ((("status", "--json"), ("show", "status", "--json")),
                          (("interfaces", "--json"), ("show", "links", "--json")),
                          (("interfaces", "live", "--json"), ("show", "links", "--json")),
                          (("stats", "--json"), ("show", "stats", "--json")),
                          (("diff", "--json"), ("verify", "--json"))):
        r = cli(*old, env=env_of(d))
        assert r.returncode == EXIT_OK and "deprecated" in r.stderr, (old, r.stderr)
        doc, want = json.loads(r.stdout), json.loads(cli(*new_name, env=env_of(d)).stdout)
        assert set(doc) == set(want) if isinstance(doc, dict) else len(doc) == len(want)
    # a bare group no longer asks the engine: it prints its help (usage, exit 2)
    r = cli("routes", env=env_of(d))
    assert r.returncode == EXIT_USAGE and "fetch" in r.stderr and r.stdout == ""
    top = cli("--help").stdout
    assert "show" in top and "verify" in top and "links" in top
    assert not any(line.split()[:1] in (["interfaces"], ["api"], ["diff"], ["status"], ["stats"])
                   for line in top.splitlines())


def test_interfaces_and_stats(lab: tuple[Router, Daemon, Path]) -> None:
    router, d, _ = lab
    r = cli("show", "links", env=env_of(d))
    assert r.returncode == EXIT_OK, r.stderr
    assert r.stdout.split("\n", 1)[0].split()[:3] == ["ROUTER", "IF", "STATE"]
    assert any(line.split()[:2] == ["xapi-e1", "unmapped"] for line in r.stdout.splitlines())
    assert any(line.split()[:4] == ["xapi-e2", "up", router.host_link, "-"] for line in r.stdout.splitlines())
    bare = cli("interfaces", env=env_of(d))  # the previous spelling, still there for a release
    assert bare.returncode == EXIT_OK and bare.stdout == r.stdout
    r = cli("show", "links", "--json", env=env_of(d))
    assert {"router_if", "vlan_id", "router_mac", "state"} <= set(json.loads(r.stdout)[0])
    r = cli("show", "stats", env=env_of(d))
    assert r.returncode == EXIT_OK, r.stderr
    assert r.stdout.splitlines()[0].split() == ["received", "0", "0.0/s"]
    assert "latency: p50 -, p90 -, p99 - (0 packets)" in r.stdout
    assert json.loads(cli("show", "stats", "--json", env=env_of(d)).stdout)["workers"] == []


def test_diff_resync_wait_and_safety_valve(lab: tuple[Router, Daemon, Path]) -> None:
    router, d, _ = lab
    assert cli("verify", "--exit-code", env=env_of(d)).returncode == EXIT_OK
    router.add_routes(300, 2)
    r = cli("verify", "--exit-code", env=env_of(d))
    assert r.returncode == EXIT_DIFFERS, r.stderr
    assert "router vs engine: +2 -0 ~0" in r.stdout and "+ 2001:db8:112c::/48" in r.stdout
    doc = json.loads(cli("verify", "--json", env=env_of(d)).stdout)
    assert doc["router_vs_engine"]["counts"] == {"added": 2, "removed": 0, "changed": 0}
    r = cli("resync", "--wait", env=env_of(d))
    assert r.returncode == EXIT_OK, r.stderr
    assert "applied: +2 -0 ~0, 25 routes" in r.stdout
    assert cli("verify", "--exit-code", env=env_of(d)).returncode == EXIT_OK

    router.del_routes(0, 20)  # 20 of 25 gone: the valve holds
    r = cli("resync", "--wait", env=env_of(d))
    assert r.returncode == EXIT_NOT_APPLIED
    assert "held: would remove 20 of 25 routes" in r.stderr
    st = json.loads(cli("show", "status", "--json", env=env_of(d)).stdout)["sync"]
    assert st["route_count"] == 25 and st["held_back"]["removed"] == 20
    r = cli("resync", "--force", "--wait", "--json", env=env_of(d))
    assert r.returncode == EXIT_OK, r.stderr
    job = json.loads(r.stdout)
    assert job["state"] == "done" and job["force"] is True and job["result"]["route_count"] == 5
    router.add_routes(0, 20)
    r = cli("resync", env=env_of(d))  # no --wait: prints the job and returns
    assert r.returncode == EXIT_OK and r.stdout.startswith("resync job ")
    def routes_now() -> int:
        return int(json.loads(cli("show", "status", "--json", env=env_of(d)).stdout)["sync"]["route_count"])

    wait_for(lambda: routes_now() == 25, 20)


def test_exit_codes_auth_unreachable_usage(lab: tuple[Router, Daemon, Path]) -> None:
    _, d, _ = lab
    r = cli("show", "status", env={"XCAST6_API_URL": d.url, "XCAST6_API_TOKEN": "wrong"})
    assert r.returncode == EXIT_AUTH and r.stderr.strip() == "xcast6-engine: unauthorized: wrong bearer token"
    r = cli("show", "status", env={"XCAST6_API_URL": d.url})
    assert r.returncode == EXIT_AUTH and "no token" in r.stderr
    nobody = {"XCAST6_API_URL": f"http://127.0.0.1:{free_port()}", "XCAST6_API_TOKEN": "x"}
    r = cli("show", "stats", env=nobody)
    assert r.returncode == EXIT_UNREACHABLE and "cannot reach the engine API" in r.stderr
    r = cli("show", "status", "--config", "/nonexistent/engine.toml")
    assert r.returncode == EXIT_USAGE and "cannot read the file" in r.stderr
    # with --json the error is a JSON document on stdout, with the same exit code
    r = cli("show", "status", "--json", env={"XCAST6_API_URL": d.url, "XCAST6_API_TOKEN": "wrong"})
    assert r.returncode == EXIT_AUTH and r.stderr == ""
    assert json.loads(r.stdout) == {"error": {"exit_code": EXIT_AUTH, "kind": "auth",
                                              "message": "unauthorized: wrong bearer token"}}
    r = cli("verify", "--json", env={"XCAST6_API_URL": f"http://127.0.0.1:{free_port()}",
                                     "XCAST6_API_TOKEN": "x"})
    assert r.returncode == EXIT_UNREACHABLE and json.loads(r.stdout)["error"]["kind"] == "unreachable"


def test_config_check(lab: tuple[Router, Daemon, Path]) -> None:
    _, _, cfg = lab
    r = cli("config", "check", str(cfg))
    assert r.returncode == EXIT_OK and "valid (source kernel://" in r.stdout
    r = cli("config", "check", str(example_path()))
    assert r.returncode == EXIT_USAGE and "auth_key: missing" in r.stderr  # the driver's own check
    keys = {"XCAST6_SNMP_AUTH_KEY": "auth-secret-1", "XCAST6_SNMP_PRIV_KEY": "priv-secret-2"}
    r = cli("config", "check", str(example_path()), "--json", env=keys)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    assert "secret" not in r.stdout
    assert json.loads(r.stdout)["config"]["sync"]["source"].startswith("snmpv3://xcast@")
    bad = Path(tempfile.mkdtemp(prefix="xapi-cfg-")) / "bad.toml"
    try:
        bad.write_text(
            cfg.read_text().replace("interval = 120", "interval = -5").replace("[workers]", "[worker]")
        )
        r = cli("config", "check", str(bad))
        assert r.returncode == EXIT_USAGE
        assert "sync.interval: -5 is not allowed: must be a positive number of seconds" in r.stderr
        assert "worker: unknown key (did you mean 'workers'?)" in r.stderr
        doc = json.loads(cli("config", "check", str(bad), "--json").stdout)
        assert doc["valid"] is False and len(doc["problems"]) == 2
        # a rule only vlan/'s plan knows (pool smaller than one link subnet) is reported too
        bad.write_text(
            cfg.read_text().replace('mode = "direct"', 'mode = "direct"\npool = "2001:db8:f::/80"')
        )
        r = cli("config", "check", str(bad))
        assert r.returncode == EXIT_USAGE, r.stdout
        assert "links.pool: 2001:db8:f::/80 is smaller than one /64 subnet" in r.stderr
        bad.write_text(cfg.read_text().replace("kernel://", "snmp://public@[2001:db8::1]:99999#"))
        r = cli("config", "check", str(bad))
        assert r.returncode == EXIT_USAGE and "sync.source" in r.stderr and "public" not in r.stderr
    finally:
        shutil.rmtree(bad.parent, ignore_errors=True)
