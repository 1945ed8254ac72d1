"""Lab fixtures: the direct-mode lab on the host, the vlan-mode lab inside the QEMU guest.

The ``vm``-marked tests (vlan mode) run inside the QEMU harness of tests/vm.  The harness's hooks
live in tests/vm/conftest.py, which pytest only loads when it collects tests/vm; re-exporting them
here makes ``pytest tests/lab`` route ``vm`` tests to the guest too.  Without the harness in the
tree, the vm tests fail on the host and say why (no 802.1Q).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import build
from lab.topology import Topology
from tests.lab import variants

IN_VM = os.environ.get("XCAST6_IN_VM") == "1"
_ROUTING_HOOKS = ("pytest_runtest_protocol", "pytest_collection_modifyitems")

with contextlib.suppress(ImportError):
    import tests.vm.conftest as _vm

    globals().update({name: getattr(_vm, name) for name in _ROUTING_HOOKS if hasattr(_vm, name)})

    def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        """The harness's summary line (guest time) when only tests/lab was collected; when tests/vm
        was collected too, its conftest prints it (once)."""
        if not config.pluginmanager.is_registered(_vm):
            _vm.pytest_terminal_summary(terminalreporter, config)

# Modules the vlan lab uses; the guest does not autoload modules, so they are loaded up front.
# sch_ingress + cls_bpf: the engines' TC eBPF fast path ([dataplane] mode auto) in the guest too
VLAN_LAB_MODULES = ("8021q", "veth", "nfnetlink", "nf_tables", "nft_chain_nat", "nft_objref", "nft_counter",
                    "sch_ingress", "cls_bpf")


@contextlib.contextmanager
def built_lab(topo: Topology) -> Iterator[Topology]:
    """The lab brought up fresh (anything left by an earlier run removed first), down afterwards."""
    build.down(topo)
    build.up(topo)
    try:
        yield topo
    finally:
        build.down(topo)


def require_8021q(what: str) -> None:
    """Load the vlan lab's kernel modules; fail (never skip) where the kernel has no 802.1Q."""
    for mod in VLAN_LAB_MODULES:
        subprocess.run(["modprobe", mod], check=False, capture_output=True)
    if not Path("/proc/net/vlan").exists():
        pytest.fail(f"this kernel has no 802.1Q (8021q): {what} in the QEMU harness "
                    "(tests/vm, XCAST6_IN_VM=1 inside the guest)")


def _topology(mode: str, dataplane: str) -> Topology:
    # Per-run namespace prefix, one per variant: two test runs on one box (or a demo lab) never
    # share namespaces, nor do two variants of one run.
    tag = {"direct": "t", "vlan": "v"}[mode] + ("" if dataplane == "auto" else dataplane[0])
    prefix = f"xl{tag}{os.getpid() % 10000}-"
    extra: dict[str, float] = {}
    if mode == "vlan":
        require_8021q("vlan-mode lab tests run")
        extra["start_timeout"] = 180     # daemons start slowly under TCG
    return Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab"), poll_interval=0.5, mode=mode,
                    dataplane=dataplane, **extra)


class LabPool:
    """The session's labs, one per variant, each built on first use and taken down at the end.

    ``keep`` bounds how many are up at once: the QEMU guest has one emulated CPU and 1 GiB, and an
    idle lab still polls SNMP twice a second, so there a variant's lab goes down before the next
    one is built (pytest runs the tests of one ``e2e_lab`` variant together).
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep
        self.up: dict[tuple[str, str], Topology] = {}    # in the order they were built
        self.failed: dict[tuple[str, str], BaseException] = {}

    def get(self, mode: str, dataplane: str = "auto") -> Topology:
        """The lab of this variant, built now if it is not up."""
        key = (mode, dataplane)
        if key in self.failed:     # one failed build per variant, not one per test
            raise self.failed[key]
        if key not in self.up:
            while self.keep is not None and self.up and len(self.up) >= self.keep:
                build.down(self.up.pop(next(iter(self.up))))
            topo = _topology(mode, dataplane)
            build.down(topo)     # anything left by an earlier run
            try:
                build.up(topo)
                self.up[key] = topo     # from here on, close() takes it down
                variants.says(topo)     # the data path it asked for, or no test runs on it
            except Exception as exc:
                self.failed[key] = exc
                raise
        return self.up[key]

    def close(self) -> None:
        """Take every lab down."""
        while self.up:
            build.down(self.up.pop(next(iter(self.up))))


@pytest.fixture(scope="session")
def labs() -> Iterator[LabPool]:
    """Every lab variant the session uses (one at a time inside the QEMU guest)."""
    pool = LabPool(keep=1 if IN_VM else None)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def lab(labs: LabPool) -> Topology:
    """The direct-mode lab (data path auto) with both engine daemons ready, shared by the e2e and
    API tests (the host's pool keeps every lab up to the end, so this one stays valid)."""
    return labs.get("direct")


@pytest.fixture(scope="session", params=variants.params())
def lab_variant(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(link mode, data path) of ``e2e_lab`` (tests/lab/variants.py): session-scoped, so pytest
    runs each variant's tests together and the guest builds each vlan lab once.  A module whose
    tests only make sense in one link mode parametrises it (indirect) with ``variants.params(mode)``."""
    variant: tuple[str, str] = request.param
    return variant


@pytest.fixture
def e2e_lab(labs: LabPool, lab_variant: tuple[str, str]) -> Iterator[Topology]:
    """The lab in every variant (``direct``, ``direct-python`` on the host; ``vlan``,
    ``vlan-python`` in the QEMU guest), and after each test the proof of which data path ran it
    (tests/lab/variants.py): a silent fallback to the Python workers, or a TC program at work in
    python mode, fails the test instead of testing the same path twice.

    Resolved per variant, so the guest, which runs only the vlan cases, never builds a direct
    lab, and the host never tries to build a vlan lab.
    """
    topo = labs.get(*lab_variant)
    before = variants.quiet_snapshot(topo)
    yield topo
    variants.check(topo, before)
