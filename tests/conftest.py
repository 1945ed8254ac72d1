"""Shared test configuration.

Tests that build namespaces or use raw sockets carry the ``root`` marker; they fail loudly
(not skip) when not root, except on a developer box that sets XCAST6_ALLOW_SKIP_ROOT=1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.snmpd import SnmpdLab


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0 or os.environ.get("XCAST6_ALLOW_SKIP_ROOT") != "1":
        return
    skip = pytest.mark.skip(reason="needs root (XCAST6_ALLOW_SKIP_ROOT=1 set)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def snmpd_lab() -> Iterator[SnmpdLab]:
    """A fresh namespace with three router links and snmpd not yet started."""
    lab = SnmpdLab()
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()
