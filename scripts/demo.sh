#!/usr/bin/env bash
# Install everything, then run the main job: the namespace lab (a sender, two Linux core routers with
# the XCAST6 divert and snmpd, two engines syncing over SNMP, five receivers), one XCAST6 demonstration
# with its delivery matrix and the engines' counters, and the lab torn down again.
# Extra arguments go to `lab up` (e.g. --workers 2).  Keep the lab running with XCAST6_KEEP_LAB=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
if [ "${XCAST6_KEEP_LAB:-0}" != "1" ]; then
  trap 'xcast6-engine lab down >/dev/null 2>&1 || true' EXIT
fi
xcast6-engine lab down >/dev/null 2>&1 || true   # a lab left over from an interrupted run
xcast6-engine lab up "$@"
xcast6-engine lab demo
