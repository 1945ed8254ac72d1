"""No tracked file may name a path of a development machine.

Why: a test once read recordings from ``/work/venv/...``, a virtualenv that existed only on the
machine it was written on; CI there was green, and every fresh machine failed.  Paths inside the
checkout are relative, scratch space is under /tmp, and deployment targets (/etc, /opt, /run,
/var/lib) are the appliance's own.  Home directories and the development tree are not.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A development machine's own places: its work tree, any home directory, root's home.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root)(?:/|\b)")

# Legitimate mentions, each (file, a fragment of the line) so a new one must be added here.
ALLOWED: set[tuple[str, str]] = {
    # root's home inside the QEMU guest (the guest's own system path, not this machine's)
    ("tests/vm/harness.py", '"HOME": "/root",'),
    # why snmpsim needs modules preloaded when the interpreter is under a root-only home
    ("lab/snmpd.py", "the interpreter lives under /root (mode 700)"),
}
GUARD = "tests/test_no_machine_paths.py"  # names such paths to test the pattern


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (the guard reads the tracked files)")
    return [name for name in out.decode().split("\0") if name]


def find_machine_paths(files: list[str]) -> list[str]:
    """``file:line: text`` for each line naming a development-machine path not in ALLOWED."""
    found = []
    for name in files:
        path = ROOT / name
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary (pcaps, PNGs) or deleted in the work tree
        for lineno, line in enumerate(text.splitlines(), 1):
            allowed = any(name == file and fragment in line for file, fragment in ALLOWED)
            if MACHINE_PATH.search(line) and not allowed and name != GUARD:
                found.append(f"{name}:{lineno}: {line.strip()}")
    return found


def test_no_tracked_file_names_a_development_machine_path() -> None:
    found = find_machine_paths(_tracked_files())
    hint = "paths of a development machine (use the checkout, /tmp or importlib):\n"
    assert not found, hint + "\n".join(found)


def test_the_guard_catches_the_path_that_broke_ci(tmp_path: Path) -> None:
    line = 'RECORDINGS = Path("/work/venv/lib/python3.11/site-packages/snmpsim_data/data")'
    assert MACHINE_PATH.search(line)
    for bad in ("/home/alice/x.pcap", "open('/root/.ssh/id')", "cd /work && make"):
        assert MACHINE_PATH.search(bad), bad
    for fine in ("/etc/xcast6-engine/engine.toml", "/opt/xcast6-engine/venv", "/tmp/xl-lab",
                 "/run/xcast6-engine", "~/work/x", "engine/dataplane/worker.py", "site/homepage"):
        assert not MACHINE_PATH.search(fine), fine
