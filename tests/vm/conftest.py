"""Host side of the QEMU harness: run every selected ``vm`` test in ONE guest, replay its results.

On the host, a ``vm``-marked test is not executed here (this kernel has no 802.1Q): the first
such test boots a guest (tests.vm.harness) with the node ids of all selected ``vm`` tests, and
every ``vm`` test then reports the outcome, output and traceback the guest recorded for it.
Inside the guest (``XCAST6_IN_VM=1``) this plugin steps aside and the tests run for real.
"""

from __future__ import annotations

import os
import shutil

import pytest
from _pytest.reports import TestReport

from tests.vm.harness import VmError, VmRun, run_pytest_in_vm

IN_VM = os.environ.get("XCAST6_IN_VM") == "1"
_RUN_KEY = pytest.StashKey["VmRun | VmError"]()
# The whole guest run (every selected vm test in one boot).  Measured on this 2-core host: 225 s
# for the 33 vm tests with the e2e suite on the kernel path only; 485 s for the 56 with both data
# paths (vlan and vlan-python, a lab build of 75-115 s each) while other work loaded the host.
# The default leaves room for a host busier still.
DEFAULT_VM_TIMEOUT_S = 1200.0
# On top of the guest's deadline, for what the host does before booting (apt-get in CI, initramfs).
HOST_SETUP_MARGIN_S = 300.0


def vm_timeout() -> float:
    """Seconds one guest run may take: ``XCAST6_VM_TIMEOUT``, default ``DEFAULT_VM_TIMEOUT_S``."""
    return float(os.environ.get("XCAST6_VM_TIMEOUT", DEFAULT_VM_TIMEOUT_S))


def in_vm() -> bool:
    """True inside the QEMU guest."""
    return IN_VM


def _guest_run(session: pytest.Session) -> VmRun | VmError:
    config = session.config
    if _RUN_KEY not in config.stash:
        # session.items is the final selection (after -k/-m/deselect): boot once for all of it.
        nodeids = [item.nodeid for item in session.items if item.get_closest_marker("vm")]
        try:
            result: VmRun | VmError = run_pytest_in_vm(
                [*nodeids, "-q", "-rfE"], cwd=config.rootpath, timeout_s=vm_timeout()
            )
        except (VmError, OSError) as exc:
            result = exc if isinstance(exc, VmError) else VmError(f"VM harness failed: {exc}")
        config.stash[_RUN_KEY] = result
    return config.stash[_RUN_KEY]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the host, the first ``vm`` test waits for the whole guest run: give ``vm`` tests a
    pytest-timeout above the harness's own deadline, so the per-test default (pyproject) never
    cuts the guest short and the harness reports a hung guest with its console tail."""
    if IN_VM:
        return
    limit = pytest.mark.timeout(vm_timeout() + HOST_SETUP_MARGIN_S)
    for item in items:
        if item.get_closest_marker("vm") is not None:
            item.add_marker(limit)


def _console_tail(run: VmRun, lines: int = 60) -> str:
    return "\n".join(run.console.splitlines()[-lines:])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if IN_VM or item.get_closest_marker("vm") is None:
        return None
    run = _guest_run(item.session)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    keywords = {name: 1 for name in item.keywords}
    records = [] if isinstance(run, VmError) else [r for r in run.reports if r["nodeid"] == item.nodeid]
    if not records:
        if isinstance(run, VmError):
            why = f"QEMU harness error: {run}"
        else:
            why = (
                f"the guest reported nothing for this test (guest pytest exit status {run.exit_status}); "
                f"console tail:\n{_console_tail(run)}"
            )
        records = [{"when": "setup", "outcome": "failed", "longrepr": why, "duration": 0.0, "sections": []}]
    for rec in records:
        outcome = str(rec["outcome"])
        longrepr: object = rec["longrepr"] or None
        if outcome == "skipped":
            # Skips inside the guest are a harness problem (module missing...): make them visible.
            outcome = "failed"
            longrepr = f"skipped inside the VM (not allowed): {rec['longrepr']}"
        sections = [(str(t), str(b)) for t, b in rec.get("sections", [])]  # type: ignore[attr-defined]
        if outcome == "failed" and isinstance(run, VmRun):
            sections.append(("VM console (tail)", _console_tail(run)))
        report = TestReport(
            item.nodeid,
            item.location,
            keywords,
            outcome,
            longrepr,
            str(rec["when"]),  # type: ignore[arg-type]
            sections=sections,
            duration=float(rec["duration"]),  # type: ignore[arg-type]
        )
        item.ihook.pytest_runtest_logreport(report=report)
    # Do pytest's own teardown step for the host: collectors (a package, module fixtures) that the
    # next host item does not share are finalised now, as runtestprotocol would have done.
    item.session._setupstate.teardown_exact(nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    run = config.stash.get(_RUN_KEY, None)
    if isinstance(run, VmRun):
        terminalreporter.write_line(
            f"QEMU 802.1Q harness: one guest, user space after {run.boot_s:.1f}s, "
            f"{run.total_s:.1f}s total, guest pytest exit status {run.exit_status}"
        )
        shutil.rmtree(run.results_dir, ignore_errors=True)
    elif isinstance(run, VmError):
        terminalreporter.write_line(f"QEMU 802.1Q harness failed: {run}")
