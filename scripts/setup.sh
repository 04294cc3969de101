#!/usr/bin/env bash
# Create .venv and install gan-search into it (torch pinned to the build this project is tested with).
#   scripts/setup.sh         the service
#   scripts/setup.sh --dev   plus the test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
else
  .venv/bin/python -m pip install -q -e .
fi
