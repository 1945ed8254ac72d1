"""The guest itself: a real 802.1Q kernel, the host's python, a writable overlay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import netns

pytestmark = [pytest.mark.vm, pytest.mark.root]


def test_guest_kernel_has_8021q_and_veth() -> None:
    modules = Path("/proc/modules").read_text()
    assert "8021q" in modules
    assert "veth" in modules


def test_guest_runs_the_host_interpreter_on_a_writable_overlay(tmp_path: Path) -> None:
    assert Path(sys.executable).exists()
    probe = Path(__file__).with_name("xc-overlay-probe")
    probe.write_text("written in the guest")  # lands in the tmpfs overlay, never on the host
    assert probe.read_text() == "written in the guest"
    probe.unlink()


def test_vlan_subinterface_on_a_veth() -> None:
    with netns.temporary("xcvm-probe") as (ns,):
        sh = ["ip", "-n", ns]
        subprocess.run([*sh, "link", "add", "t0", "type", "veth", "peer", "name", "t1"], check=True)
        subprocess.run(
            [*sh, "link", "add", "link", "t0", "name", "t0.101", "type", "vlan", "id", "101"], check=True
        )
        out = subprocess.run(
            [*sh, "-d", "link", "show", "t0.101"], check=True, capture_output=True, text=True
        )
        assert "vlan protocol 802.1Q id 101" in out.stdout
