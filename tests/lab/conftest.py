"""Lab tests: the ``vm``-marked ones (vlan mode) run inside the QEMU harness of tests/vm.

The harness's hooks live in tests/vm/conftest.py, which pytest only loads when it collects
tests/vm; re-exporting them here makes ``pytest tests/lab`` route ``vm`` tests to the guest too.
Without the harness in the tree, the vm tests fail on the host and say why (no 802.1Q).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.lab import build
from engine.lab.topology import Topology

_ROUTING_HOOKS = ("pytest_runtest_protocol", "pytest_collection_modifyitems")

with contextlib.suppress(ImportError):
    import tests.vm.conftest as _vm

    globals().update({name: getattr(_vm, name) for name in _ROUTING_HOOKS if hasattr(_vm, name)})


@pytest.fixture(scope="session")
def lab() -> Iterator[Topology]:
    """The direct-mode lab with both engine daemons ready, shared by the e2e and API tests."""
    # Per-run namespace prefix: two test runs on one box (or a demo lab) never share namespaces.
    prefix = f"xlt{os.getpid() % 10000}-"
    topo = Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab"), poll_interval=0.5)
    build.down(topo)
    build.up(topo)
    try:
        yield topo
    finally:
        build.down(topo)
