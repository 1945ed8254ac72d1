#!/usr/bin/env bash
# Install everything, then run the linters and the whole test suite (unit, property, fuzz,
# namespace, real snmpd/NETCONF and QEMU 802.1Q tests).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";  ruff check .
echo "== mypy";  mypy
echo "== import layers"; lint-imports --no-cache
echo "== pytest"; pytest "$@"
