"""The layer contract (pyproject.toml [tool.importlinter]): engine <- sync <- vlan <- api <- lab <- bench.

Run by import-linter over the real tree, and once over a copy with one import pointing up, to show
the contract bites (the back-arrows it replaced: engine.dataplane.worker -> vlan, lab -> api from engine/,
sync.apply -> vlan).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "sync", "vlan", "api", "lab", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: install the test extra (pip install -e '.[test]')")
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_tree_keeps_the_layer_contract() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "upward_import"),
    [
        ("engine/dataplane/worker.py", "from vlan import plan"),
        ("sync/apply.py", "from vlan import reconcile"),
        ("engine/forwarding/fib.py", "from api import config"),
        ("api/app.py", "from lab import build"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, upward_import: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{upward_import}  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode != 0, done.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    _, package, _, name = upward_import.split()
    assert "BROKEN" in done.stdout and f"{importer} -> {package}.{name}" in done.stdout, done.stdout
