"""The TC eBPF fast path on Debian 12's own kernel (6.1, in the QEMU guest): the verifier accepts
the program, and the differential rules hold there too (tests/engine/test_kernel_path.py), ECMP
sets leave the map with their last route, and failed redirects are egress_errors."""

from __future__ import annotations

import os
import subprocess

import pytest

from engine.dataplane.kernel_path import KernelPath
from tests.engine import test_kernel_path as diff
from tests.engine.kernel_harness import harness

pytestmark = [pytest.mark.vm, pytest.mark.root]


def test_verifier_accepts_on_the_guest_kernel() -> None:
    kp = KernelPath.load()
    try:
        assert kp.prog.prog_fd > 0
        print(f"loaded on {os.uname().release}: maps {kp.prog.memory()}")
    finally:
        kp.prog.close()


def test_differential_rules_on_the_guest_kernel() -> None:
    # The guest's kernel cannot auto-load modules (no usermode modprobe before the chroot): load
    # the clsact qdisc and the BPF classifier the way the harness loads 8021q and veth.
    for mod in ("sch_ingress", "cls_bpf"):
        subprocess.run(["modprobe", mod], check=False)
    kp = KernelPath.load()
    try:
        with harness(kp) as h:
            diff.test_rules(h)
            diff.test_126_destinations(h)
            diff.test_punts(h)
            diff.test_ecmp_member_choice(h)
            diff.test_ecmp_sets_leave_the_map_with_their_last_route(h)
            # Debian's kernel has BTF and trampolines: the redirect watch runs (fexit), so a
            # packet's last copy that cannot leave is in egress_errors there
            assert diff.redirect_failures_are_counted(h), kp.prog.watch_problem
    finally:
        kp.prog.close()
