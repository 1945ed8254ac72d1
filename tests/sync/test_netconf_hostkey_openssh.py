"""Host-key pinning against a REAL OpenSSH server (Debian's sshd, in a namespace, as nobody).

Routers run full SSH servers that offer several host keys (RSA, ECDSA, Ed25519), unlike the
paramiko-based NETCONF test server.  Here sshd offers Ed25519 and RSA keys and a ``netconf``
subsystem; the engine's NETCONF client (sync/netconf.py) must:

* with the router's key pinned (known_hosts from the engine_host role's filter, or from its
  first-contact tasks after ``confirm_router_host_key``): get past the host key -- the session then
  fails at authentication (no such user here), which is the proof the key was accepted;
* with another key pinned, of a type the server has or of one it lacks: stop with "host key
  MISMATCH" and never send a password; ``xcast6-engine routes fetch`` says the same.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from lab import netns
from lab.procs import stop_process
from sync.netconf import PASSWORD_ENV, NetconfSource
from sync.source import SourceError

pytestmark = [pytest.mark.root, pytest.mark.netns]
ROOT = Path(__file__).resolve().parents[2]
SSHD = Path("/usr/sbin/sshd")  # openssh-server, installed by scripts/bootstrap.sh
PORT = 8830
PASSWORD = "not-the-password-1"


def _hostkeys() -> ModuleType:
    path = ROOT / "ansible" / "roles" / "engine_host" / "filter_plugins" / "xcast6_hostkeys.py"
    spec = importlib.util.spec_from_file_location("xcast6_hostkeys", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hk = _hostkeys()


@dataclass
class Sshd:
    ns: str
    tmp: Path
    keys: dict[str, str]          # type -> "TYPE BASE64" of the server's host keys

    def url(self, known_hosts: Path) -> str:
        return f"netconf://xcast@[::1]:{PORT}?flavor=ietf&timeout=10&known_hosts={known_hosts}"

    def pin(self, name: str, keys: list[str]) -> Path:
        path = self.tmp / name
        path.write_text(hk.known_hosts_lines(keys, "::1", PORT))
        return path


def _keygen(path: Path, kind: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True)
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    assert SSHD.exists(), "openssh-server is installed by scripts/bootstrap.sh"
    # not under pytest's tmp (0700 parents): nobody must reach its config and keys
    tmp = Path(tempfile.mkdtemp(prefix="xhk-"))
    tmp.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    keys = {}
    config = [f"Port {PORT}", "ListenAddress ::1", "PidFile none", "UsePAM no", "StrictModes no",
              "PasswordAuthentication yes", "KbdInteractiveAuthentication no",
              "Subsystem netconf /bin/cat"]
    for kind in ("ed25519", "rsa"):
        key = tmp / f"host_{kind}.key"
        keys[kind] = _keygen(key, kind)
        os.chown(key, nobody.pw_uid, nobody.pw_gid)
        config.append(f"HostKey {key}")
    (tmp / "sshd_config").write_text("\n".join(config) + "\n")
    with netns.temporary("xhk") as (ns,):
        netns.ip(ns, "link", "set", "lo", "up")
        # As nobody: no privilege-separation user or /run/sshd needed, nothing of the host touched.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
             "--clear-groups", str(SSHD), "-D", "-e", "-f", str(tmp / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "sshd.log", "w"))  # noqa: SIM115
        try:
            deadline = time.monotonic() + 10
            while True:
                with netns.in_netns(ns), socket.socket(socket.AF_INET6) as s:
                    if s.connect_ex(("::1", PORT)) == 0:
                        break
                assert proc.poll() is None, (tmp / "sshd.log").read_text()
                assert time.monotonic() < deadline, "sshd did not listen"
                time.sleep(0.05)
            yield Sshd(ns, tmp, keys)
        finally:
            stop_process(proc)
            shutil.rmtree(tmp, ignore_errors=True)


def _fetch(sshd: Sshd, known_hosts: Path) -> None:
    src = NetconfSource.from_url(sshd.url(known_hosts))
    try:
        with netns.in_netns(sshd.ns):
            src.fetch_sync()
    finally:
        src.close()


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_the_pinned_key_is_accepted(sshd: Sshd, kind: str) -> None:
    known = sshd.pin(f"right_{kind}", [sshd.keys[kind]])
    with pytest.raises(SourceError) as err:
        _fetch(sshd, known)
    # past the host key: the server turned the (nonexistent) user down
    assert err.value.kind == SourceError.AUTH and "authentication failed for user 'xcast'" in str(err.value)


@pytest.mark.parametrize(("kind", "says"), [
    ("ed25519", r"host key MISMATCH \(fingerprint [0-9a-f:]+\)"),
    ("rsa", r"host key MISMATCH \(fingerprint [0-9a-f:]+\)"),
    ("ecdsa", r"host key MISMATCH: the router shows no key of the type\(s\) pinned in .* "
              r"\(ecdsa-sha2-nistp256\)"),
])
def test_another_key_stops_the_sync(sshd: Sshd, kind: str, says: str) -> None:
    impostor = _keygen(sshd.tmp / f"impostor_{kind}", kind)
    known = sshd.pin(f"wrong_{kind}", [impostor])
    with pytest.raises(SourceError, match=says + ".*possible man-in-the-middle; refusing to log in") as err:
        _fetch(sshd, known)
    assert err.value.kind != SourceError.AUTH and PASSWORD not in str(err.value)
    # the operator's command, where the engine runs (inside the namespace)
    cli = subprocess.run(["ip", "netns", "exec", sshd.ns, sys.executable, "-m", "api.main", "routes", "fetch",
                          sshd.url(known)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, PASSWORD_ENV: PASSWORD, "PYTHONPATH": str(ROOT)})
    assert cli.returncode != 0 and "host key MISMATCH" in cli.stdout + cli.stderr, cli.stdout + cli.stderr


def test_first_contact_pins_only_the_confirmed_key(sshd: Sshd, tmp_path: Path) -> None:
    """engine_host's first-contact tasks against sshd: ssh-keyscan sees both keys, the operator
    confirms the Ed25519 fingerprint, only that key is pinned, and the client accepts it."""
    from tests.sync.test_netconf_hostkey_pinning import _play

    fingerprint = hk.ssh_fingerprint(sshd.keys["ed25519"])
    # ssh-keyscan runs on the engine host, i.e. in the router's namespace here
    res = _play(tmp_path, PORT, address="::1", netns_name=sshd.ns)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"ssh-ed25519 {fingerprint}" in res.stdout
    assert f"ssh-rsa {hk.ssh_fingerprint(sshd.keys['rsa'])}" in res.stdout
    res = _play(tmp_path, PORT, confirm=fingerprint, address="::1", netns_name=sshd.ns)
    assert res.returncode == 0, res.stdout + res.stderr
    known = tmp_path / "etc" / "known_hosts"
    pinned = [line for line in known.read_text().splitlines() if not line.startswith("#")]
    assert pinned == [f"[::1]:{PORT} {sshd.keys['ed25519']}"]
    with pytest.raises(SourceError, match="authentication failed"):
        _fetch(sshd, known)
