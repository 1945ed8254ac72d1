"""Apply the engine_host role for real, twice, to a scratch Debian root (chroot connection).

A minimal Debian 12 root is made with debootstrap (cached as a tarball), the project is built as a
wheel, and engine.yml runs against the root through Ansible's chroot connection: packages, user,
virtualenv with the engine, engine.toml (validated by ``xcast6-engine config check`` inside the root),
secrets file, sysctls, modules-load, the hardened unit. The second run must change nothing.
Runtime-only steps (modprobe, sysctl -w, starting the unit, /readyz) need a booted system and are
switched off with engine_host_runtime=false; there is no systemd running in a chroot.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("XCAST6_CACHE_DIR", "/var/cache/xcast6-engine-tests"))
MIRROR = os.environ.get("XCAST6_DEBIAN_MIRROR", "http://deb.debian.org/debian")

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _sh(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


def _base_tarball() -> Path:
    tarball = CACHE / "debootstrap-bookworm-minbase.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        res = _sh(
            "apt-get",
            "install",
            "-y",
            "-qq",
            "debootstrap",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        assert res.returncode == 0, res.stderr
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / "debootstrap-work"
    shutil.rmtree(work, ignore_errors=True)
    res = _sh(
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-apt",
        "bookworm",
        str(work),
        MIRROR,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = _sh("tar", "-C", str(work), "-cf", str(tarball) + ".part", ".")
    assert res.returncode == 0, res.stderr
    os.replace(str(tarball) + ".part", tarball)
    shutil.rmtree(work, ignore_errors=True)
    return tarball


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("xans-root")
    res = _sh("tar", "-C", str(root), "-xf", str(_base_tarball()))
    assert res.returncode == 0, res.stderr
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    (root / "proc").mkdir(exist_ok=True)
    assert _sh("mount", "-t", "proc", "proc", str(root / "proc")).returncode == 0
    try:
        yield root
    finally:
        _sh("umount", "-l", str(root / "proc"))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The engine's wheel plus wheels of all its dependencies (cached by pyproject digest)."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    deps = CACHE / f"wheelhouse-{digest}"
    if not deps.exists():
        part = CACHE / f"wheelhouse-{digest}.part"
        shutil.rmtree(part, ignore_errors=True)
        res = _sh(str(BIN / "python"), "-m", "pip", "wheel", "-q", "-w", str(part), str(REPO), timeout=1200)
        assert res.returncode == 0, res.stderr[-3000:]
        for old in part.glob("xcast6_engine-*.whl"):
            old.unlink()
        os.replace(part, deps)
    out = tmp_path_factory.mktemp("wheelhouse")
    for whl in deps.iterdir():
        shutil.copy(whl, out / whl.name)
    res = _sh(
        str(BIN / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO), timeout=600
    )
    assert res.returncode == 0, res.stderr
    (engine_whl,) = out.glob("xcast6_engine-*.whl")
    return out, engine_whl


def _inventory(tmp: Path, root: Path, wheels: tuple[Path, Path]) -> Path:
    mx1 = (ANSIBLE_DIR / "inventories/example/host_vars/mx1.yml").read_text()
    inv = tmp / "inventory"
    (inv / "host_vars").mkdir(parents=True)
    (inv / "host_vars" / "mx1.yml").write_text(mx1)
    (inv / "hosts.yml").write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "xcast6_routers": {
                            "children": {"junos": {"hosts": {"mx1": {"xcast6_platform": "junos"}}}}
                        },
                        "xcast6_engines": {
                            "hosts": {
                                "scratch": {
                                    "ansible_connection": "community.general.chroot",
                                    "ansible_host": str(root),
                                    "ansible_become": False,
                                    "xcast6_router": "mx1",
                                    "xcast6_trunk_interface": "eth1",
                                    "engine_host_runtime": False,
                                    "engine_host_package_src": str(wheels[1]),
                                    "engine_host_wheelhouse": str(wheels[0]),
                                    "xcast6_api_token": "scratch-token-0123456789abcdef",
                                    "xcast6_snmp_auth_key": "scratch-auth-key",
                                    "xcast6_snmp_priv_key": "scratch-priv-key",
                                }
                            }
                        },
                    }
                },
            }
        )
    )
    return inv / "hosts.yml"


def _play(inventory: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "engine.yml"],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _recap(out: str) -> dict[str, int]:
    m = re.search(r"^scratch\s*:\s*(.*)$", out, re.M)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def test_engine_host_role_applies_and_is_idempotent(
    scratch_root: Path, wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    inventory = _inventory(tmp_path, scratch_root, wheelhouse)

    first = _play(inventory)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    assert _recap(first.stdout)["changed"] > 0

    second = _play(inventory)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    recap = _recap(second.stdout)
    assert recap["changed"] == 0 and recap["failed"] == 0, second.stdout[-6000:]

    # What the role wrote, as the service will see it.
    conf = scratch_root / "etc/xcast6-engine/engine.toml"
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    env_file = scratch_root / "etc/xcast6-engine/engine.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "scratch-token" not in conf.read_text()  # secrets only in the root-only env file
    assert "8021q" in (scratch_root / "etc/modules-load.d/xcast6-engine.conf").read_text()
    assert (scratch_root / "etc/systemd/system/multi-user.target.wants/xcast6-engine.service").is_symlink()
    assert "xcast6:" in (scratch_root / "etc/passwd").read_text()
    assert "245 xcast6" in (scratch_root / "etc/iproute2/rt_protos.d/xcast6-engine.conf").read_text()

    check = _sh(
        "chroot",
        str(scratch_root),
        "/bin/sh",
        "-c",
        'set -a; . /etc/xcast6-engine/engine.env; exec "$0" config check /etc/xcast6-engine/engine.toml',
        "/opt/xcast6-engine/venv/bin/xcast6-engine",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "valid" in check.stdout
