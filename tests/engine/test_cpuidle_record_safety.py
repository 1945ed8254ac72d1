"""Root's record of the CPUs' original idle limits is never written through a link, and a
forged record is refused before anything reaches /sys (issue 15).

Before: ``cpu-idle apply`` (root, via the unit's ``ExecStartPre=-+``) wrote
``<state_dir>/cpu-idle-saved.tmp`` with a plain open() in a directory the service user owns,
so a symlink planted there made root overwrite any file; the record's values went to /sys
unchecked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.dataplane.cpuidle import CpuIdleLimit, qos_path, recorded, state_file

VICTIM_TEXT = "root's file, not to be touched\n"


def _fake_sysfs(root: Path, values: dict[int, str]) -> None:
    for cpu, value in values.items():
        qos_path(cpu, root).parent.mkdir(parents=True)
        qos_path(cpu, root).write_text(value + "\n")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    sysfs, state, victim = tmp_path / "sys", tmp_path / "state", tmp_path / "victim"
    _fake_sysfs(sysfs, {0: "0", 1: "0"})
    state.mkdir()
    victim.write_text(VICTIM_TEXT)
    return sysfs, state, victim


def test_symlinks_planted_in_the_state_directory_are_not_followed(setup: tuple[Path, Path, Path]) -> None:
    sysfs, state, victim = setup
    # where the service user can plant: the old record paths and the new record directory
    for name in ("cpu-idle-saved.tmp", "cpu-idle-saved.json"):
        (state / name).symlink_to(victim)
    (state / "cpu-idle").symlink_to(victim.parent)  # the record directory itself, as a link
    limit = CpuIdleLimit((1,), 0, root=sysfs, state_file=state_file(state))
    problems = limit.apply()
    assert victim.read_text() == VICTIM_TEXT
    assert not (victim.parent / "saved.json").exists() and not (victim.parent / "saved.json.tmp").exists()
    # not recorded -> not touched: a limit whose original could be lost is not set
    assert problems and "cannot be recorded" in problems[0]
    assert qos_path(1, sysfs).read_text() == "0\n"


def _private_record(state: Path) -> Path:
    """A record path in a directory private to this user (as ``cpu-idle apply`` makes it)."""
    (state / "private").mkdir(mode=0o700)
    return state / "private" / "saved.json"


@pytest.mark.parametrize("link", ["saved.json.tmp", "saved.tmp", "saved.json"])
def test_links_inside_the_private_directory_are_not_followed(
    setup: tuple[Path, Path, Path], link: str
) -> None:
    sysfs, state, victim = setup
    record = _private_record(state)
    (record.parent / link).symlink_to(victim)
    limit = CpuIdleLimit((1,), 0, root=sysfs, state_file=record)
    assert limit.apply() == []
    assert victim.read_text() == VICTIM_TEXT
    assert not record.is_symlink() and json.loads(record.read_text()) == {"1": "0"}
    assert limit.restore() == [] and not record.exists() and victim.read_text() == VICTIM_TEXT


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("unsafe", ["other-owner", "group-writable"])
def test_a_record_directory_not_private_to_root_is_refused(
    setup: tuple[Path, Path, Path], unsafe: str
) -> None:
    sysfs, state, _victim = setup
    record = state_file(state)
    record.parent.mkdir(mode=0o700)
    if unsafe == "other-owner":  # made by the service user before root's first run
        os.chown(record.parent, 4242, 4242)
    else:
        record.parent.chmod(0o770)
    (record.parent / "saved.json").write_text('{"0": "n/a"}')  # planted "originals"
    limit = CpuIdleLimit((1,), 0, root=sysfs, state_file=record)
    problems = limit.apply()
    assert problems and "cannot be recorded" in problems[0]
    assert qos_path(0, sysfs).read_text() == "0\n" and qos_path(1, sysfs).read_text() == "0\n"
    assert recorded(record, root=sysfs) == {}


@pytest.mark.parametrize(
    "forged",
    [
        {"1": "garbage"},
        {"1": "5; reboot"},
        {"1": "-1"},
        {"1": "99999999999"},
        {"1": ""},
        {"7": "0"},  # a CPU that does not exist
        {"x": "0"},
        {"1": 5},
        ["1", "0"],
        {"0": "0", "1": "n/a\nn/a"},
    ],
)
def test_a_forged_record_with_garbage_values_is_refused(
    setup: tuple[Path, Path, Path], forged: object, caplog: pytest.LogCaptureFixture
) -> None:
    sysfs, state, _ = setup
    record = _private_record(state)
    record.write_text(json.dumps(forged))
    qos_path(1, sysfs).write_text("n/a")  # what a limit left
    assert CpuIdleLimit((), 0, root=sysfs, state_file=record).apply() == []
    # nothing from the record reached sysfs: CPU 1 keeps its current value
    assert qos_path(1, sysfs).read_text() == "n/a" and qos_path(0, sysfs).read_text() == "0\n"
    assert "ignoring" in caplog.text
    assert recorded(record, root=sysfs) == {}


def test_a_genuine_record_is_still_written_back(setup: tuple[Path, Path, Path]) -> None:
    sysfs, state, _ = setup
    record = state_file(state)
    assert CpuIdleLimit((0, 1), 20, root=sysfs, state_file=record).apply() == []  # then killed
    assert (record.parent.stat().st_mode & 0o777) == 0o700 and record.parent.stat().st_uid == os.geteuid()
    assert recorded(record, root=sysfs) == {0: "0", 1: "0"}
    assert CpuIdleLimit((), 0, root=sysfs, state_file=record).apply() == []
    assert [qos_path(c, sysfs).read_text() for c in (0, 1)] == ["0", "0"] and not record.exists()
