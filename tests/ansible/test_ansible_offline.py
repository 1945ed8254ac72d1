"""Offline checks of ansible/: syntax, ansible-lint (production profile), rendering vs golden files.

The golden files under ansible/golden/example/ are what render.yml writes for the example inventory
(secrets masked). Regenerate them deliberately with XCAST6_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
GOLDEN = ANSIBLE_DIR / "golden" / "example"
BIN = Path(sys.executable).parent
PLAYBOOKS = ["site.yml", "engine.yml", "routers.yml", "render.yml", "upgrade.yml"]
INVENTORIES = ["inventories/example/hosts.yml", "inventories/lab/hosts.yml"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_LOCAL_TEMP"] = "/tmp/xcast6-ansible-tmp"
    return env


def _run(*args: str, cwd: Path = ANSIBLE_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _render(inventory: Path, out: Path) -> None:
    res = _run(
        str(BIN / "ansible-playbook"), "-i", str(inventory), "render.yml", "-e", f"xcast6_render_dir={out}"
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _edited_example(tmp_path: Path, edits: list[tuple[str, str, str]]) -> Path:
    """A copy of the example inventory with, per (host, old, new), the one ``old`` in that host's
    vars replaced by ``new``; returns its hosts.yml."""
    inv = tmp_path / "inventory"
    shutil.copytree(ANSIBLE_DIR / "inventories/example", inv)
    for host, old, new in edits:
        path = inv / "host_vars" / f"{host}.yml"
        text = path.read_text()
        assert text.count(old) == 1, (host, old)
        path.write_text(text.replace(old, new))
    return inv / "hosts.yml"


def _render_one(inventory: Path, host: str, out: Path) -> subprocess.CompletedProcess[str]:
    """render.yml for one host of ``inventory`` (the result is returned, not asserted)."""
    return _run(str(BIN / "ansible-playbook"), "-i", str(inventory), "render.yml",
                "-e", f"xcast6_render_dir={out}", "--limit", host)


@pytest.mark.parametrize("inventory", INVENTORIES)
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(playbook: str, inventory: str) -> None:
    res = _run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", inventory, playbook)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ansible_lint_production_profile() -> None:
    res = _run(str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor")
    assert res.returncode == 0, res.stdout + res.stderr


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_example_matches_golden(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _render(ANSIBLE_DIR / "inventories/example/hosts.yml", out)
    rendered = _files(out)
    if os.environ.get("XCAST6_UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        shutil.copytree(out, GOLDEN)
    assert rendered == _files(GOLDEN)
    # Secrets never reach rendered output.
    for text in rendered.values():
        assert "Example-0001" not in text and "example-api-token" not in text


def test_changing_one_link_changes_exactly_its_lines(tmp_path: Path) -> None:
    inventory = _edited_example(tmp_path, [
        ("mx1", "vlan: 102", "vlan: 142"),
        ("xe1", "vlan: 202", "vlan: 242"),
        ("xr1", "vlan: 302", "vlan: 342"),
    ])
    out = tmp_path / "out"
    _render(inventory, out)

    def changed(rel: str) -> tuple[set[str], set[str]]:
        before = set((GOLDEN / rel).read_text().splitlines())
        after = set((out / rel).read_text().splitlines())
        return before - after, after - before

    removed, added = changed("mx1/router-junos.conf")
    assert added == {
        'set interfaces xe-0/1/0 unit 142 description "xcast6 return for ge-0/0/1.0"',
        "set interfaces xe-0/1/0 unit 142 vlan-id 142",
        "set interfaces xe-0/1/0 unit 142 family inet6 address 2001:db8:100:f102::1/64",
    }
    assert all("unit 102" in line for line in removed) and len(removed) == 3

    removed, added = changed("xe1/router-iosxe.conf")
    assert "interface TenGigabitEthernet0/1/0.242" in added and " encapsulation dot1Q 242" in added
    assert "interface TenGigabitEthernet0/1/0.202" in removed and " encapsulation dot1Q 202" in removed
    assert len(added) == len(removed) == 2

    removed, added = changed("xr1/router-iosxr.conf")
    assert added == {"interface TenGigE0/0/0/8.342", " encapsulation dot1q 342"}
    assert removed == {"interface TenGigE0/0/0/8.302", " encapsulation dot1q 302"}

    # The engine's own config follows the same data.
    removed, added = changed("engine-mx1/engine.toml")
    assert added == {"vlan = 142"} and removed == {"vlan = 102"}


def test_divert_never_on_engine_trunk() -> None:
    """Returned copies still carry DSCP 23: no filter/policy may sit on a trunk unit."""
    junos = (GOLDEN / "mx1/router-junos.conf").read_text()
    assert not re.search(r"set interfaces xe-0/1/0 unit \d+ family inet6 filter", junos)
    iosxe = (GOLDEN / "xe1/router-iosxe.conf").read_text()
    for block in iosxe.split("!\n"):
        if block.startswith("interface TenGigabitEthernet0/1/0"):
            assert "policy route-map" not in block
    iosxr = (GOLDEN / "xr1/router-iosxr.conf").read_text()
    for block in iosxr.split("!\n"):
        if block.startswith("interface TenGigE0/0/0/8"):
            assert "access-group" not in block


def test_inventory_rejects_divert_on_trunk(tmp_path: Path) -> None:
    inventory = _edited_example(tmp_path, [("mx1", "router_interface: ge-0/0/1.0",
                                            "router_interface: xe-0/1/0.7")])
    res = _render_one(inventory, "mx1", tmp_path / "out")
    assert res.returncode != 0
    assert "is on the engine trunk" in res.stdout


def test_existing_input_filters_are_kept_not_replaced() -> None:
    """A link with existing_input gets the divert added to what it already applies on input."""
    junos = (GOLDEN / "mx1/router-junos.conf").read_text()
    # ae0.0: the divert (without its accept-all term) chained in front of the operator's filters
    assert ("set interfaces ae0 unit 0 family inet6 filter input-list [ XCAST6-DIVERT-CHAIN EDGE-PROTECT "
            "EDGE-COUNT ]") in junos
    assert "delete interfaces ae0 unit 0 family inet6 filter input\n" in junos
    assert "filter XCAST6-DIVERT-CHAIN term other" not in junos
    assert "set interfaces ae0 unit 0 family inet6 filter input XCAST6-DIVERT\n" not in junos
    # the other links still get the single filter (with its accept-all term)
    assert "set interfaces ge-0/0/0 unit 0 family inet6 filter input XCAST6-DIVERT\n" in junos
    iosxe = (GOLDEN / "xe1/router-iosxe.conf").read_text()
    assert "route-map PBR-TRANSIT permit 1\n match ipv6 address XCAST6-DIVERT\n" in iosxe
    assert "interface GigabitEthernet0/0/1\n ipv6 policy route-map" not in iosxe
    assert "interface GigabitEthernet0/0/0\n ipv6 policy route-map XCAST6-DIVERT" in iosxe
    iosxr = (GOLDEN / "xr1/router-iosxr.conf").read_text()
    assert "ipv6 access-list BE1-IN\n 1 permit 41 any any dscp 23 nexthop1 ipv6 " in iosxr
    assert "interface Bundle-Ether1\n ipv6 access-group" not in iosxr


def test_inventory_rejects_a_malformed_existing_input(tmp_path: Path) -> None:
    # IOS-XE applies one policy route-map per interface: a list cannot be what it already has
    inventory = _edited_example(tmp_path, [("xe1", "existing_input: PBR-TRANSIT", "existing_input: [A, B]")])
    res = _render_one(inventory, "xe1", tmp_path / "out")
    assert res.returncode != 0
    assert "existing_input" in res.stdout and "IOS-XE: one" in res.stdout


_UNITS = sorted(str(p.relative_to(GOLDEN)) for p in GOLDEN.glob("engine-*/xcast6-*.service"))
# the role's limit per unit (defaults/main.yml): the engine's, and bfdd's (engine pairs)
_EXPOSURE_LIMIT = {"xcast6-engine.service": "engine_host_max_exposure",
                   "xcast6-bfdd.service": "engine_host_bfdd_max_exposure"}


def test_every_rendered_unit_has_an_exposure_limit() -> None:
    assert {u.split("/")[1] for u in _UNITS} == set(_EXPOSURE_LIMIT)
    assert "engine-mx1/xcast6-bfdd.service" in _UNITS         # the example has an engine pair


@pytest.mark.parametrize("unit", _UNITS)
def test_systemd_unit_exposure_below_threshold(unit: str) -> None:
    """Each unit the role renders scores at most its limit in `systemd-analyze security` (offline:
    the unit file as written, no boot), so a hardening line lost or loosened fails here.  The limit
    is a role variable, on systemd's 0-10 scale; ``--threshold`` takes it x10."""
    import yaml

    defaults = yaml.safe_load((ANSIBLE_DIR / "roles/engine_host/defaults/main.yml").read_text())
    limit = float(defaults[_EXPOSURE_LIMIT[unit.split("/")[1]]])
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--threshold={round(limit * 10)}",
         "--no-pager", str(GOLDEN / unit)],
        capture_output=True, text=True, timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= limit and res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("engine", ["engine-mx1", "engine-xe1", "engine-xr1"])
def test_rendered_engine_config_passes_the_engines_own_check(engine: str, tmp_path: Path) -> None:
    """What the role would install is accepted by `xcast6-engine config check` (secrets from env).

    A NETCONF source names the pinned known_hosts the role installs (the check opens the source,
    which needs the file): it points at the rendered one, or an empty one (first contact), here.
    """
    config = GOLDEN / engine / "engine.toml"
    text = config.read_text()
    if "known_hosts=/etc/xcast6-engine/known_hosts" in text:
        known = tmp_path / "known_hosts"
        rendered = GOLDEN / engine / "known_hosts"
        known.write_text(rendered.read_text() if rendered.exists() else "")
        config = tmp_path / "engine.toml"
        config.write_text(text.replace("/etc/xcast6-engine/known_hosts", str(known)))
    env = {
        **_env(),
        "XCAST6_API_TOKEN": "t" * 32,
        "XCAST6_SNMP_COMMUNITY": "community",
        "XCAST6_SNMP_AUTH_KEY": "auth-key-123",
        "XCAST6_SNMP_PRIV_KEY": "priv-key-123",
        "XCAST6_NETCONF_PASSWORD": "password",
    }
    res = subprocess.run(
        [sys.executable, "-m", "api.main", "config", "check", str(config)],
        cwd=ANSIBLE_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def _syscalls(spec: str) -> set[str]:
    """Expand a SystemCallFilter= value (names and @groups) with systemd's own group tables."""
    out: set[str] = set()
    for item in spec.split():
        if item.startswith("@"):
            res = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", item],
                                 capture_output=True, text=True, timeout=60, check=True)
            for line in res.stdout.splitlines()[1:]:
                name = line.strip()
                if name.startswith("@"):
                    out |= _syscalls(name)
                elif name and not name.startswith("#"):
                    out.add(name)
        else:
            out.add(item)
    return out


def _allowed_syscalls(unit: str) -> set[str]:
    """systemd's rule: the first SystemCallFilter= (an allow list here) sets the list, a later
    '~' line removes from it, a later plain line adds to it."""
    allowed: set[str] | None = None
    for line in unit.splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1]
        if allowed is None:
            assert not value.startswith("~"), "the unit's first SystemCallFilter= must be an allow list"
            allowed = _syscalls(value)
        elif value.startswith("~"):
            allowed -= _syscalls(value[1:])
        else:
            allowed |= _syscalls(value)
    assert allowed is not None
    return allowed


@pytest.mark.parametrize(("engine", "pinned"), [("engine-mx1", True), ("engine-xe1", False)])
def test_unit_allows_what_the_configured_worker_tuning_needs(engine: str, pinned: bool) -> None:
    """engine-mx1 pins its worker (workers.cpus) and limits its CPU's idle states: the unit must let
    the daemon call sched_setaffinity (else the worker runs unpinned), and root must set the /sys
    limit around the run (the daemon may not write /sys: ProtectKernelTunables, non-root user)."""
    unit = (GOLDEN / engine / "xcast6-engine.service").read_text()
    allowed = _allowed_syscalls(unit)
    assert "sched_setaffinity" not in _syscalls("@privileged")    # (sanity of the expansion)
    assert ("sched_setaffinity" in allowed) is pinned
    assert "mount" not in allowed and "reboot" not in allowed and "ptrace" not in allowed
    apply = "ExecStartPre=-+/opt/xcast6-engine/venv/bin/xcast6-engine cpu-idle apply --config "
    restore = "ExecStopPost=-+/opt/xcast6-engine/venv/bin/xcast6-engine cpu-idle restore --config "
    assert (apply in unit and restore in unit) is pinned


def test_prometheus_scrape_example_uses_tls_and_the_read_token(tmp_path: Path) -> None:
    """The example scrape job (issue 20) is a valid Prometheus configuration, scrapes over TLS with
    a bearer token from a file, and targets exactly the engines whose API is on the network."""
    import tomllib

    import yaml

    src = ANSIBLE_DIR / "inventories/example/prometheus-scrape.yml"
    files = tmp_path / "xcast6"
    files.mkdir()
    (files / "ca.pem").write_text((ANSIBLE_DIR / "inventories/example/pki/ca.pem").read_text())
    (files / "read-token").write_text("x" * 43)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(src.read_text().replace("/etc/prometheus/xcast6", str(files)))
    res = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    job = yaml.safe_load(src.read_text())["scrape_configs"][0]
    assert job["scheme"] == "https" and job["tls_config"]["ca_file"].endswith("ca.pem")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/xcast6/read-token"}
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    networked = set()
    for engine in ("engine-mx1", "engine-xe1", "engine-xr1"):
        api = tomllib.loads((GOLDEN / engine / "engine.toml").read_text())["api"]
        if api["listen"] not in ("127.0.0.1", "::1"):
            assert "tls_cert" in api, f"{engine}: API on the network without TLS"
            networked.add(f"[{api['listen']}]:{api['port']}")
    assert targets == networked
    # the role installs the token Prometheus uses with the read role
    assert "role: read, name: prometheus" in (
        ANSIBLE_DIR / "inventories/example/group_vars/xcast6_engines.yml").read_text()


def test_api_on_the_network_without_tls_is_refused(tmp_path: Path) -> None:
    """Turning TLS off for an engine whose API listens on the management address gives an
    engine.toml that the engine's own check (the role's validate step) refuses."""
    inventory = _edited_example(tmp_path, [("engine-mx1", "engine_host_api_tls: true",
                                            "engine_host_api_tls: false")])
    out = tmp_path / "out"
    res = _render_one(inventory, "engine-mx1", out)
    assert res.returncode == 0, res.stdout + res.stderr
    env = {**_env(), "XCAST6_API_TOKEN": "t" * 32, "XCAST6_SNMP_AUTH_KEY": "auth-key-123",
           "XCAST6_SNMP_PRIV_KEY": "priv-key-123"}
    rendered = str(out / "engine-mx1/engine.toml")
    chk = subprocess.run([sys.executable, "-m", "api.main", "config", "check", rendered],
                         cwd=ANSIBLE_DIR.parent, env=env, capture_output=True, text=True, timeout=120)
    said = chk.stdout + chk.stderr
    assert chk.returncode == 2, said
    assert "api.listen: '2001:db8:100::10' is beyond this host and the API has no TLS" in said


def test_upgrade_stops_at_the_first_failed_engine(tmp_path: Path) -> None:
    """upgrade.yml, serial: 1 with max_fail_percentage: 0: the first engine that fails ends the
    play, the next one is never touched.  Both engines of the lab inventory sit behind a chroot that
    does not exist (nothing on this machine is touched): ea fails its first task, eb never runs.
    Control: eb alone is reached (and fails the same way), so its absence above means something.
    The failed *gate* with rollback, then the stop, is the booted pair test's (eb in the play)."""
    inv = tmp_path / "lab"
    shutil.copytree(ANSIBLE_DIR / "inventories/lab", inv)
    for host in ("ea", "eb"):
        path = inv / "host_vars" / f"{host}.yml"
        path.write_text(path.read_text() + "ansible_connection: community.general.chroot\n"
                        f"ansible_host: {tmp_path / 'no-such-root'}\n")
    both = _run(str(BIN / "ansible-playbook"), "-i", str(inv / "hosts.yml"), "upgrade.yml",
                "--limit", "ea,eb")
    assert both.returncode != 0
    assert "fatal: [ea]" in both.stdout and "[eb]" not in both.stdout, both.stdout
    assert re.search(r"^ea\s*:.*failed=1", both.stdout, re.M), both.stdout
    assert re.search(r"^eb\s*:", both.stdout, re.M) is None, both.stdout
    alone = _run(str(BIN / "ansible-playbook"), "-i", str(inv / "hosts.yml"), "upgrade.yml", "--limit", "eb")
    assert alone.returncode != 0 and "fatal: [eb]" in alone.stdout, alone.stdout
