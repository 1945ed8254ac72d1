"""Pytest plugin loaded inside the guest: one JSON line per test phase for the host to replay."""

from __future__ import annotations

import json
import os

import pytest


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get("XCAST6_VM_REPORT")
    if not path:
        return
    record = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": report.duration,
        "longrepr": report.longreprtext if report.failed or report.skipped else "",
        "sections": [[title, body] for title, body in report.sections],
    }
    # Append + flush per line: if the guest dies mid-run the host still sees what finished.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
