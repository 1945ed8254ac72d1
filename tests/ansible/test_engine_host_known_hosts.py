"""engine_host's router host-key pinning, pure part (filter_plugins/xcast6_hostkeys.py).

The fingerprints are checked against OpenSSH's own ``ssh-keygen -lf`` and the known_hosts lines
against paramiko's loader (what sync/netconf.py uses); the tasks run against a real SSH server in
tests/sync/test_netconf_hostkey_pinning.py.
"""

from __future__ import annotations

import base64
import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import paramiko
import pytest
from hypothesis import given
from hypothesis import strategies as st

PLUGIN = (Path(__file__).resolve().parents[2] / "ansible" / "roles" / "engine_host" / "filter_plugins"
          / "xcast6_hostkeys.py")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("xcast6_hostkeys", PLUGIN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hk = _load()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Real keys made by ssh-keygen: type -> (public key line, ssh-keygen -lf fingerprint)."""
    out = {}
    tmp = tmp_path_factory.mktemp("keys")
    for kind, extra in [("ed25519", []), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"])]:
        path = tmp / kind
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", "router@console", "-f",
                        str(path)], check=True)
        pub = (tmp / f"{kind}.pub").read_text().strip()
        fp = subprocess.run(["ssh-keygen", "-lf", str(tmp / f"{kind}.pub")], check=True, capture_output=True,
                            text=True).stdout.split()[1]
        out[kind] = (pub, fp)
    return out


def test_fingerprints_equal_ssh_keygen(keys: dict[str, tuple[str, str]]) -> None:
    for pub, fp in keys.values():
        assert hk.ssh_fingerprint(pub) == fp


def test_known_hosts_lines_load_in_paramiko_under_the_urls_name(
        keys: dict[str, tuple[str, str]], tmp_path: Path) -> None:
    pubs = [pub for pub, _ in keys.values()]
    text = hk.known_hosts_lines(pubs, "2001:DB8:200:F200:0::1", 830)
    path = tmp_path / "known_hosts"
    path.write_text(text)
    loaded = paramiko.HostKeys(str(path))
    # the engine's URL host, as urlsplit gives it: compressed and lower case
    entry = loaded.lookup("[2001:db8:200:f200::1]:830")
    assert entry is not None and sorted(entry.keys()) == sorted(p.split()[0] for p in pubs)
    assert hk.known_hosts_lines(pubs[:1], "router1.example.net", 22).startswith("router1.example.net ssh-")


def test_keyscan_output_is_read_and_comments_skipped(keys: dict[str, tuple[str, str]]) -> None:
    pub = keys["ed25519"][0]
    scan = f"# 127.0.0.1:830 SSH-2.0-paramiko_3.4.0\n[127.0.0.1]:830 {pub.rsplit(' ', 1)[0]}\n\n"
    assert hk.keyscan_keys(scan) == [pub.rsplit(" ", 1)[0]]
    assert hk.keyscan_keys("") == []


def test_a_key_labelled_with_another_type_is_refused(keys: dict[str, tuple[str, str]]) -> None:
    b64 = keys["ed25519"][0].split()[1]
    with pytest.raises(ValueError, match="says it is 'ssh-ed25519', not 'ssh-rsa'"):
        hk.known_hosts_lines([f"ssh-rsa {b64}"], "::1", 830)


@pytest.mark.parametrize(("keys_value", "needle"), [
    ("ssh-ed25519 AAAA", "non-empty list"),
    ([], "non-empty list"),
    (["ssh-dss AAAAB3NzaC1kc3M="], "key type must be one of"),
    (["ssh-ed25519 not*base64"], r"router_ssh_host_keys\[0\]: the key is not base64"),
    (["ssh-ed25519"], "key type must be one of"),
    ([42], "expected 'TYPE BASE64'"),
])
def test_bad_inventory_keys_are_named(keys_value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        hk.known_hosts_lines(keys_value, "::1", 830)


def test_bad_port_is_named(keys: dict[str, tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match=r"not in 1\.\.65535"):
        hk.known_hosts_lines([keys["ed25519"][0]], "::1", 0)


@given(st.binary(min_size=1, max_size=64))
def test_fingerprint_is_the_unpadded_sha256_of_the_blob(payload: bytes) -> None:
    import hashlib
    import struct

    blob = struct.pack(">I", 11) + b"ssh-ed25519" + payload
    b64 = base64.b64encode(blob).decode()
    want = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert hk.ssh_fingerprint(f"ssh-ed25519 {b64}") == want
    assert "=" not in want


