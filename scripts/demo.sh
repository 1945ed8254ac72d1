#!/usr/bin/env bash
# Install everything, then run the main job: the namespace lab demonstration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec xcast6-engine demo "$@"
