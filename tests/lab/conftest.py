"""Lab tests: the ``vm``-marked ones (vlan mode) run inside the QEMU harness of tests/vm.

The harness's hooks live in tests/vm/conftest.py, which pytest only loads when it collects
tests/vm; re-exporting them here makes ``pytest tests/lab`` route ``vm`` tests to the guest too.
Without the harness in the tree, the vm tests fail on the host and say why (no 802.1Q).
"""

from __future__ import annotations

import contextlib

_ROUTING_HOOKS = ("pytest_runtest_protocol", "pytest_collection_modifyitems")

with contextlib.suppress(ImportError):
    import tests.vm.conftest as _vm

    globals().update({name: getattr(_vm, name) for name in _ROUTING_HOOKS if hasattr(_vm, name)})
