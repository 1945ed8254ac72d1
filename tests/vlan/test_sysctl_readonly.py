"""vlan.kernel.set_ipv6_sysctl with /proc/sys read-only, as a systemd unit with
ProtectKernelTunables=yes sees it: a value already right is fine, a needed write names the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import netns

pytestmark = [pytest.mark.root, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys
from vlan.kernel import set_ipv6_sysctl
try:
    set_ipv6_sysctl(sys.argv[1], "lo", "keep_addr_on_down", sys.argv[2])
except OSError as exc:
    print("ERROR", exc)
else:
    print("OK")
"""


def _in_readonly_proc_sys(ns: str, value: str) -> str:
    """Run the call in a private mount namespace where /proc/sys is a read-only bind mount."""
    script = ("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
              f'exec "{sys.executable}" -c "$0" "$1" "$2"')
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, CHILD, ns, value]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_value_already_set_needs_no_write() -> None:
    with netns.temporary("xvl-ro") as (ns,):
        # a fresh namespace's lo starts from the kernel default, 0
        assert _in_readonly_proc_sys(ns, "0") == "OK"


def test_needed_write_on_readonly_proc_sys_names_the_fix() -> None:
    with netns.temporary("xvl-ro") as (ns,):
        out = _in_readonly_proc_sys(ns, "1")
    assert out.startswith("ERROR ")
    assert "Read-only file system" in out
    assert "net.ipv6.conf.default.keep_addr_on_down = 1 at boot" in out
