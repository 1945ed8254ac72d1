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


@pytest.fixture(scope="session")
def lab() -> Iterator[Topology]:
    """The direct-mode lab with both engine daemons ready, shared by the e2e and API tests."""
    # Per-run namespace prefix: two test runs on one box (or a demo lab) never share namespaces.
    prefix = f"xlt{os.getpid() % 10000}-"
    with built_lab(Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab"), poll_interval=0.5)) as topo:
        yield topo


@pytest.fixture(scope="session")
def python_lab() -> Iterator[Topology]:
    """The direct-mode lab with ``[dataplane] mode = "python"``: the Python workers alone, the path
    every packet took before the TC program and the one ``auto`` falls back to."""
    prefix = f"xlp{os.getpid() % 10000}-"
    topo = Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab"), poll_interval=0.5,
                    dataplane="python")
    with built_lab(topo):
        yield topo


@pytest.fixture(scope="session")
def vlan_lab() -> Iterator[Topology]:
    """The same lab in ``vlan`` mode (802.1Q subinterfaces on one veth trunk per router).

    Needs a kernel with 8021q: only the QEMU guest has one here, so every test using it carries
    the ``vm`` marker.  Daemons start slowly under TCG, hence the long start timeout.
    """
    for mod in VLAN_LAB_MODULES:
        subprocess.run(["modprobe", mod], check=False, capture_output=True)
    if not Path("/proc/net/vlan").exists():
        pytest.fail("this kernel has no 802.1Q (8021q): vlan-mode lab tests run in the QEMU harness "
                    "(tests/vm, XCAST6_IN_VM=1 inside the guest)")
    topo = Topology(prefix="xlv-", state_dir=Path(f"/tmp/xlv-lab-{os.getpid()}"), mode="vlan",
                    poll_interval=0.5, start_timeout=180)
    with built_lab(topo):
        yield topo


@pytest.fixture(scope="session",
                params=["direct", "direct-python", pytest.param("vlan", marks=pytest.mark.vm)])
def e2e_lab(request: pytest.FixtureRequest) -> Topology:
    """The lab in each link mode: ``direct`` on the host, ``vlan`` inside the QEMU guest, both with
    the default data path (auto: the TC program); ``direct-python`` runs the same tests through the
    Python workers alone ([dataplane] mode = "python").

    Resolved lazily (``getfixturevalue``) so the guest, which runs only the vlan cases, never
    builds the direct lab, and the host never tries to build the vlan lab.
    """
    name = {"direct": "lab", "direct-python": "python_lab", "vlan": "vlan_lab"}[request.param]
    topo: Topology = request.getfixturevalue(name)
    return topo
