"""Idle-state limit of the worker CPUs: the sysfs file's spelling, apply and restore, failures."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.dataplane.cpuidle import CpuIdleLimit, describe, for_daemon, qos_path, sysfs_value


def _fake_sysfs(root: Path, values: dict[int, str]) -> None:
    for cpu, value in values.items():
        qos_path(cpu, root).parent.mkdir(parents=True)
        qos_path(cpu, root).write_text(value + "\n")


def test_file_spelling() -> None:
    # the kernel file reads/takes "n/a" for a 0 us limit and "0" for no limit at all
    assert sysfs_value(0) == "n/a"
    assert sysfs_value(20) == "20"
    with pytest.raises(ValueError, match="negative"):
        sysfs_value(-1)
    assert describe("n/a\n") == "0 us (idle loop polls)"
    assert describe("0") == "no limit"
    assert describe("20") == "20 us"


def test_apply_then_restore_writes_back_exactly_what_was_there(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path, {1: "0", 2: "50", 3: "0"})
    limit = CpuIdleLimit((1, 2), 0, root=tmp_path)
    assert limit.apply() == []
    assert [qos_path(c, tmp_path).read_text() for c in (1, 2, 3)] == ["n/a", "n/a", "0\n"]
    assert limit.restore() == []
    assert [qos_path(c, tmp_path).read_text().strip() for c in (1, 2, 3)] == ["0", "50", "0"]
    assert limit.restore() == []     # twice is harmless: nothing saved any more


def test_a_cpu_without_the_file_is_reported_and_the_others_still_set(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path, {0: "0"})
    limit = CpuIdleLimit((0, 7), 5, root=tmp_path)
    problems = limit.apply()
    assert len(problems) == 1 and problems[0].startswith("CPU 7: cannot read ")
    assert "cpu7/power/pm_qos_resume_latency_us" in problems[0]
    assert qos_path(0, tmp_path).read_text() == "5"
    assert limit.saved == {0: "0"}      # only what was changed is restored
    limit.restore()
    assert qos_path(0, tmp_path).read_text() == "0"


def test_a_killed_run_is_undone_by_the_next_start(tmp_path: Path) -> None:
    sysfs, state = tmp_path / "sys", tmp_path / "state.json"
    _fake_sysfs(sysfs, {1: "0", 2: "20"})
    killed = CpuIdleLimit((1, 2), 0, root=sysfs, state_file=state)
    assert killed.apply() == []
    assert state.exists()           # the originals are on disk while the limit is set
    # (killed: no restore) -- the next run limits CPU 2 only: CPU 1 gets its original value back,
    # and CPU 2's original is the one the killed run found, not the limit it left
    nxt = CpuIdleLimit((2,), 5, root=sysfs, state_file=state)
    assert nxt.apply() == []
    assert qos_path(1, sysfs).read_text() == "0"
    assert qos_path(2, sysfs).read_text() == "5"
    assert nxt.saved == {2: "20"}
    assert nxt.restore() == []
    assert qos_path(2, sysfs).read_text() == "20"
    assert not state.exists()


def test_with_the_limit_no_longer_configured_a_start_still_undoes_a_killed_run(tmp_path: Path) -> None:
    sysfs, state = tmp_path / "sys", tmp_path / "state.json"
    _fake_sysfs(sysfs, {3: "0"})
    assert CpuIdleLimit((3,), 0, root=sysfs, state_file=state).apply() == []
    assert qos_path(3, sysfs).read_text() == "n/a"
    assert CpuIdleLimit((), 0, root=sysfs, state_file=state).apply() == []
    assert qos_path(3, sysfs).read_text() == "0" and not state.exists()


def test_a_value_that_cannot_be_written_back_stays_recorded(tmp_path: Path) -> None:
    sysfs, state = tmp_path / "sys", tmp_path / "state.json"
    _fake_sysfs(sysfs, {4: "0"})
    limit = CpuIdleLimit((4,), 0, root=sysfs, state_file=state)
    assert limit.apply() == []
    qos_path(4, sysfs).unlink()
    qos_path(4, sysfs).mkdir()      # writing to it now fails
    problems = limit.restore()
    assert len(problems) == 1 and problems[0].startswith("CPU 4: cannot restore ")
    assert state.read_text() == '{"4": "0"}'


def test_an_unreadable_state_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sysfs, state = tmp_path / "sys", tmp_path / "state.json"
    _fake_sysfs(sysfs, {1: "0"})
    state.write_text("not json")
    limit = CpuIdleLimit((1,), 0, root=sysfs, state_file=state)
    assert limit.apply() == [] and limit.saved == {1: "0"}
    assert "ignoring" in caplog.text


def test_a_failed_set_keeps_a_killed_runs_original_recorded(tmp_path: Path) -> None:
    sysfs, state = tmp_path / "sys", tmp_path / "state.json"
    _fake_sysfs(sysfs, {1: "n/a"})
    state.write_text('{"1": "0"}')             # a killed run limited CPU 1, whose original was "0"
    qos_path(1, sysfs).unlink()
    qos_path(1, sysfs).mkdir()                 # readable as nothing, not writable: set fails
    limit = CpuIdleLimit((1,), 0, root=sysfs, state_file=state)
    assert limit.apply()                       # reported ...
    assert state.read_text() == '{"1": "0"}'   # ... and the original is still owed to CPU 1


@pytest.fixture
def readonly_sysfs(tmp_path: Path) -> Iterator[Path]:
    """A fake sysfs that is a read-only bind mount, as /sys is for a systemd unit with
    ProtectKernelTunables=yes (root included)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount")
    sysfs = tmp_path / "sys"
    _fake_sysfs(sysfs, {1: "n/a"})
    subprocess.run(["mount", "--bind", str(sysfs), str(sysfs)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(sysfs)], check=True)
        yield sysfs
    finally:
        subprocess.run(["umount", str(sysfs)], check=True)


def test_daemon_leaves_a_limit_it_may_not_write_to_the_service_manager(
    readonly_sysfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    state = tmp_path / "state.json"
    state.write_text('{"1": "0"}')           # what `cpu-idle apply` (root, ExecStartPre) recorded
    limit = for_daemon((1,), 0, state, root=readonly_sysfs)
    assert "set by the service manager" in caplog.text
    assert limit.restore() == []             # the daemon's stop touches nothing ...
    assert state.read_text() == '{"1": "0"}'     # ... and keeps the record for `cpu-idle restore`
    assert qos_path(1, readonly_sysfs).read_text() == "n/a\n"


def test_daemon_names_the_fix_when_the_limit_is_not_set_and_it_may_not_set_it(
    readonly_sysfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for_daemon((1,), 20, tmp_path / "state.json", root=readonly_sysfs)    # file says n/a, want 20
    assert "xcast6-engine cpu-idle apply --config FILE' as root before the daemon" in caplog.text
    assert not (tmp_path / "state.json").exists()
