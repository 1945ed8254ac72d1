"""Lab tests: the ``vm``-marked ones (vlan mode) run inside the QEMU harness of tests/vm.

The harness's hooks live in tests/vm/conftest.py, which pytest only loads when it collects
tests/vm; importing them here makes ``pytest tests/lab`` route ``vm`` tests to the guest too.
Without the harness in the tree, the vm tests fail on the host and say why (no 802.1Q).
"""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):
    from tests.vm.conftest import (  # noqa: F401 - re-exported as this directory's hooks
        pytest_collection_modifyitems,
        pytest_runtest_protocol,
    )
