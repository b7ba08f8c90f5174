#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test tools.
# torch is pinned to 2.13.0, the CPU build these machines carry (any other version
# would download a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# compat mode: a .pth with the project root, so every top-level package is importable.
.venv/bin/python -m pip install -q -e ".[dev]" --config-settings editable_mode=compat
