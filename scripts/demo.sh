#!/usr/bin/env bash
# The main job on a fresh machine: install, start the service on the embedded default,
# run SFT then LCO on lco-tiny through the OpenAI-compatible API, show the result.
#   bash scripts/demo.sh [--keep]    (--keep: leave the service running at the end)
#   bash scripts/demo.sh --model smollm2-135m-instruct [--steps N]
#     (a real model, imported from the packaged GGUF; --steps: N steps per job)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python scripts/demo.py "$@"
