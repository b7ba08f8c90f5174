#!/usr/bin/env bash
# The main job on a fresh machine: install, start the service on the embedded default,
# run SFT then LCO on lco-tiny through the OpenAI-compatible API, show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export LCO_HOME=${LCO_HOME:-$PWD/.cache/lco}
exec .venv/bin/python scripts/demo.py
