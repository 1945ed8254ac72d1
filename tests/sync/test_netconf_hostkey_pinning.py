"""The router's SSH host key pinned by the engine_host role, used by the engine's NETCONF sync.

End to end against the REAL NETCONF/SSH test server (lab/netconf_server):
* first contact: the role's tasks (ansible-playbook, tasks/known_hosts.yml) read the key with
  ssh-keyscan and stop until ``confirm_router_host_key`` names its fingerprint; the confirmed file
  then lets the sync fetch;
* pinned from the inventory (``router_ssh_host_keys``): the right key fetches, another key (the server
  presenting a key different from the pinned one) stops the sync with "host key MISMATCH", in the
  source and in the operator's ``xcast6-engine routes fetch``.
"""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import paramiko
import pytest

from lab.netconf_server.lab import PASSWORD, NetconfLab, ServerProc
from sync.netconf import PASSWORD_ENV, NetconfSource
from sync.source import SourceError

pytestmark = [pytest.mark.root, pytest.mark.netns]
ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
BIN = Path(sys.executable).parent


def _plugin() -> ModuleType:
    path = ANSIBLE_DIR / "roles" / "engine_host" / "filter_plugins" / "xcast6_hostkeys.py"
    spec = importlib.util.spec_from_file_location("xcast6_hostkeys", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hk = _plugin()


@pytest.fixture(scope="module")
def lab() -> Iterator[NetconfLab]:
    lab = NetconfLab("k").up()
    try:
        lab.fill_basic()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def server(lab: NetconfLab) -> ServerProc:
    return lab.start_server()


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def _server_key(lab: NetconfLab) -> str:
    key = paramiko.RSAKey.from_private_key_file(str(lab.host_key))
    return f"{key.get_name()} {key.get_base64()}"


def _play(tmp: Path, port: int, pinned: list[str] | None = None, confirm: str | None = None,
          address: str = "127.0.0.1", netns_name: str | None = None) -> subprocess.CompletedProcess[str]:
    """engine_host's known_hosts.yml for an engine whose router is the SSH server at ``address``
    (the play runs inside ``netns_name`` when given: that is where the engine host is)."""
    conf = tmp / "etc"
    conf.mkdir(exist_ok=True)
    router: dict[str, Any] = {"xcast6_ingress": {"router_address": address},
                              "xcast6_sync": {"method": "netconf", "netconf": {"port": port}}}
    if pinned is not None:
        router["router_ssh_host_keys"] = pinned
    inventory = {"all": {"hosts": {
        "engine": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                   "xcast6_router": "r1", "engine_host_config_dir": str(conf),
                   "engine_host_group": grp.getgrgid(os.getgid()).gr_name, "engine_host_runtime": False},
        "r1": router}}}
    (tmp / "hosts.json").write_text(json.dumps(inventory))
    (tmp / "play.yml").write_text(
        "- hosts: engine\n  gather_facts: false\n  tasks:\n    - ansible.builtin.include_role:\n"
        "        name: engine_host\n        tasks_from: known_hosts.yml\n")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
           "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"), "HOME": str(tmp)}
    args = [str(BIN / "ansible-playbook"), "-i", str(tmp / "hosts.json"), str(tmp / "play.yml")]
    if netns_name is not None:
        args = ["ip", "netns", "exec", netns_name, *args]
    if confirm is not None:
        args += ["-e", f"confirm_router_host_key={confirm}"]
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def _fetch(lab: NetconfLab, server: ServerProc, known_hosts: Path) -> NetconfSource:
    src = NetconfSource.from_url(lab.url(server, "ietf", known_hosts=str(known_hosts)))
    try:
        src.fetch_sync()
    finally:
        src.close()
    return src


def test_first_contact_needs_the_confirmed_fingerprint(lab: NetconfLab, server: ServerProc,
                                                       tmp_path: Path) -> None:
    fingerprint = hk.ssh_fingerprint(_server_key(lab))
    res = _play(tmp_path, server.port)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"first contact with r1's NETCONF server at [127.0.0.1]:{server.port}" in res.stdout
    assert f"ssh-rsa {fingerprint}" in res.stdout and "confirm_router_host_key" in res.stdout
    assert not (tmp_path / "etc" / "known_hosts").exists()

    res = _play(tmp_path, server.port, confirm="SHA256:" + "A" * 43)
    assert res.returncode == 2 and not (tmp_path / "etc" / "known_hosts").exists()

    res = _play(tmp_path, server.port, confirm=fingerprint)
    assert res.returncode == 0, res.stdout + res.stderr
    known = tmp_path / "etc" / "known_hosts"
    assert f"[127.0.0.1]:{server.port} {_server_key(lab)}" in known.read_text()
    assert _fetch(lab, server, known).last_skipped  # a whole fetch went through

    # pinned now: later runs need no confirmation and do not re-read the router's key
    res = _play(tmp_path, server.port)
    assert res.returncode == 0, res.stdout + res.stderr
    scan = res.stdout.split("Read the router's host keys from the engine host (ssh-keyscan)")[1]
    assert scan.split("TASK [")[0].strip().splitlines()[-1].startswith("skipping: [engine]"), res.stdout


@pytest.mark.parametrize(("impostor", "says"), [
    (lambda: paramiko.RSAKey.generate(2048), r"host key MISMATCH \(fingerprint [0-9a-f:]+\)"),
    # the router's key replaced by one of another type: no common host-key algorithm at all
    (lambda: paramiko.ECDSAKey.generate(), r"host key MISMATCH: the router shows no key of the type\(s\) "
                                           r"pinned in .* \(ecdsa-sha2-nistp256\)"),
], ids=["same-type", "other-type"])
def test_inventory_pinned_key_fetches_and_another_key_stops_the_sync(
        lab: NetconfLab, server: ServerProc, tmp_path: Path, impostor: Any, says: str) -> None:
    res = _play(tmp_path, server.port, pinned=[_server_key(lab)])
    assert res.returncode == 0, res.stdout + res.stderr
    known = tmp_path / "etc" / "known_hosts"
    _fetch(lab, server, known)

    other = impostor()
    res = _play(tmp_path, server.port, pinned=[f"{other.get_name()} {other.get_base64()}"])
    assert res.returncode == 0, res.stdout + res.stderr
    with pytest.raises(SourceError, match=says + r".*possible man-in-the-middle; refusing to log in"):
        _fetch(lab, server, known)

    # the operator's command says the same and exits non-zero
    url = lab.url(server, "ietf", known_hosts=str(known))
    cli = subprocess.run([sys.executable, "-m", "api.main", "routes", "fetch", url], cwd=ROOT,
                         env={**os.environ, PASSWORD_ENV: PASSWORD, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode != 0
    assert "host key MISMATCH" in cli.stdout + cli.stderr, cli.stdout + cli.stderr
