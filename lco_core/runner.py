"""Run one fine-tuning job end to end: the single entry point the worker and `lco train` call.

    result = run_job(spec, training_file=Path("train.jsonl"), validation_file=None,
                     output_dir=Path("runs/job-1"), callbacks=Callbacks())

`output_dir` receives `metrics.jsonl` (one JSON object per step) and
`checkpoints/step-N/` (Hugging Face model dirs with a manifest). If `output_dir` already
holds a complete checkpoint, the run resumes from the newest one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from lco_core import distributed
from lco_core.callbacks import Callbacks
from lco_core.checkpoint import latest_checkpoint, load_train_state, prune_temp_dirs
from lco_core.data import load_items
from lco_core.lora import add_adapter, load_adapter, trainer_model
from lco_core.metric_sinks import SinkCallbacks, with_metric_sinks
from lco_core.models import load_model_and_tokenizer, pick_device, resolve_model
from lco_core.result import RunResult
from lco_core.rollout import RolloutEngine
from lco_core.trainer import Trainer
from lco_spec.graders import check_grader_against_item
from lco_spec.job import JobSpec
from lco_spec.step_budget import ModelShape
from lco_spec.train_config import hyperparameters_path, resolve_config

log = logging.getLogger(__name__)

# The reference policy (KL to the initial policy) is a second copy of the model in memory
# (a LoRA job's is free: the same model with the adapter off).
# It is loaded when the loss needs it (kl_coef > 0), and otherwise only for models small
# enough that the copy costs nothing (lco-tiny), to report `kl_init` at the diagnostic
# interval; a real model does not pay for a metric.
KL_INIT_MAX_PARAMS = 20_000_000


def engine_choice(requested: str, *, vllm_installed: bool | None = None) -> tuple[str, bool]:
    """(engine to start, whether HF may stand in if it fails) for a job's `rollout_engine`.

    `auto` means `$LCO_ROLLOUT_ENGINE` when the deployment set it (vllm | hf | auto), else
    vLLM whenever it is installed; only `auto` may fall back to HF. An explicit `vllm` never
    falls back: the job fails with a clear error instead."""
    if requested not in ("auto", "vllm", "hf"):
        raise ValueError(f"unknown rollout engine {requested!r}; use vllm, hf or auto")
    if requested == "auto":
        requested = os.environ.get("LCO_ROLLOUT_ENGINE", "auto")
        if requested not in ("auto", "vllm", "hf"):
            raise ValueError(f"LCO_ROLLOUT_ENGINE must be auto, vllm or hf, not {requested!r}")
    if requested != "auto":
        return requested, False
    if vllm_installed is None:
        vllm_installed = importlib.util.find_spec("vllm") is not None
    return ("vllm", True) if vllm_installed else ("hf", False)


def start_rollout_engine(
    requested: str,
    model: PreTrainedModel,
    tokenizer: Any,
    *,
    seed: int = 0,
    callbacks: Callbacks | None = None,
) -> RolloutEngine:
    """Start the rollout engine a job asked for (see `engine_choice`)."""
    from lco_core.hf_engine import HFEngine

    name, may_fall_back = engine_choice(requested)
    if name == "hf":
        return HFEngine(model, tokenizer)
    if callbacks is not None:
        callbacks.on_phase("starting_engine", "starting the vLLM rollout engine")
    from lco_core.vllm_engine import VLLMEngine, VLLMUnavailableError

    try:
        engine = VLLMEngine.from_model(model, tokenizer, seed=seed)
    except VLLMUnavailableError as exc:
        if not may_fall_back:
            raise
        log.warning("vllm.fallback", extra={"reason": str(exc)})
        if callbacks is not None:
            callbacks.on_event("warn", f"vLLM unavailable, rollouts use HF generate: {exc}")
        return HFEngine(model, tokenizer)
    if callbacks is not None:
        callbacks.on_event(
            "info",
            f"vLLM rollout engine started in {engine.start_s:.1f} s",
            {"rollout_engine": "vllm", "device": engine.device_type, "dtype": engine.dtype},
        )
    return engine


def run_job(
    spec: JobSpec,
    *,
    training_file: Path,
    validation_file: Path | None,
    output_dir: Path,
    callbacks: Callbacks | None = None,
    model_path: str | None = None,
    device: str = "auto",
) -> RunResult:
    """Train `spec` (already validated). `model_path` overrides how `spec.model` is resolved
    (the service passes the checkpoint dir of a fine-tuned model name). Each step's metrics
    also go to the job's metric sinks (TensorBoard under `output_dir`, W&B when asked for
    and configured; lco_core.metric_sinks)."""
    # Under torchrun (several ranks) join the group first: only rank 0 reports and writes.
    device = str(distributed.setup(pick_device(device)))
    main = distributed.is_main()
    sinks = (
        with_metric_sinks(spec, output_dir, callbacks or Callbacks())
        if main
        else SinkCallbacks(Callbacks(), [])
    )
    try:
        trainer = build_trainer(
            spec,
            training_file=training_file,
            validation_file=validation_file,
            output_dir=output_dir,
            callbacks=distributed.rank_callbacks(sinks),
            model_path=model_path,
            device=device,
        )
        return trainer.run()
    finally:
        sinks.close()
        distributed.teardown()


def config_parameters(model_dir: str | Path) -> int | None:
    """The parameter count of the model in `model_dir`, estimated from its config.json
    (`lco_spec.step_budget.ModelShape`); None if it has no readable decoder config."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        return ModelShape.from_config(config).parameters
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_trainer(
    spec: JobSpec,
    *,
    training_file: Path,
    validation_file: Path | None,
    output_dir: Path,
    callbacks: Callbacks,
    model_path: str | None = None,
    device: str = "auto",
) -> Trainer:
    """Validate the data against the spec, load the model (from the newest checkpoint in
    `output_dir` when resuming) and return a ready trainer."""
    kind = "reinforcement" if spec.method.is_rl else spec.method.type
    items = load_items(training_file, kind)
    eval_items = load_items(validation_file, kind) if validation_file else items
    base_path = model_path or resolve_model(spec.model)
    # One learning-rate rule by the model's size, whatever it is called (a local dir too).
    cfg = resolve_config(spec, n_train=len(items), n_params=config_parameters(base_path))
    if spec.method.is_rl:
        check_grader_against_item(
            spec.method.rl.grader, items[0], param_prefix="method.reinforcement.grader"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    callbacks.on_phase("preparing_model", f"preparing the model {spec.model}")
    torch_device = pick_device(device)
    if torch_device.type != "cuda" and cfg.dtype == "bfloat16":
        cfg = cfg.model_copy(update={"dtype": "float32"})
    elif cfg.dtype == "auto":
        bf16 = torch_device.type == "cuda" and torch.cuda.is_bf16_supported()
        cfg = cfg.model_copy(update={"dtype": "bfloat16" if bf16 else "float32"})

    # This run owns the dir now: what an interrupted save left behind is never resumed from
    # (it is not listed) and must not pile up.
    if distributed.is_main():
        prune_temp_dirs(output_dir / "checkpoints")
    distributed.barrier()
    cfg = distributed.check_supported(cfg)
    resume_from = latest_checkpoint(output_dir / "checkpoints")
    # Master weights stay float32; bfloat16 runs under autocast.
    callbacks.on_phase(
        "preparing_model",
        f"loading {'the checkpoint ' + resume_from.name if resume_from else spec.model} "
        f"onto {torch_device}",
    )
    adapter = None
    if cfg.lora is None:
        model, tokenizer = load_model_and_tokenizer(
            str(resume_from or base_path), device=torch_device
        )
    else:
        # LoRA: the base model with a fresh adapter, or the checkpoint's to resume.
        model, tokenizer = load_model_and_tokenizer(str(base_path), device=torch_device)
        if resume_from is not None:
            adapter = load_adapter(model, resume_from, trainable=True)
        else:
            param = f"{hyperparameters_path(spec)}.lora"
            adapter = add_adapter(model, cfg.lora, seed=cfg.seed, param=param)
        model = trainer_model(adapter)
    if distributed.active():
        model = distributed.shard(model)  # type: ignore[assignment]
    trainer: Trainer
    if cfg.kind in ("sft", "dpo"):
        from lco_core.dpo import DPOTrainer
        from lco_core.sft import SFTTrainer

        trainer = (DPOTrainer if cfg.kind == "dpo" else SFTTrainer)(
            cfg,
            model,
            tokenizer,
            items=items,
            eval_items=eval_items,
            output_dir=output_dir,
            callbacks=callbacks,
            device=torch_device,
            adapter=adapter,
        )
    else:
        from lco_core.rl import RLTrainer

        ref_model = None
        n_params = sum(p.numel() for p in model.parameters())
        # A LoRA job's reference is its own model with the adapter off (RLTrainer).
        if adapter is None and (cfg.kl_coef > 0 or n_params <= KL_INIT_MAX_PARAMS):
            ref_model, _ = load_model_and_tokenizer(str(base_path), device=torch_device)
            ref_model.requires_grad_(False).eval()
        trainer = RLTrainer(
            cfg,
            model,
            tokenizer,
            items=items,
            eval_items=eval_items,
            grader_spec=spec.method.rl.grader,
            engine=distributed.shared_rollouts(
                start_rollout_engine(
                    distributed.engine_for(cfg.rollout_engine),
                    model,
                    tokenizer,
                    seed=cfg.seed,
                    callbacks=callbacks,
                )
            ),
            ref_model=ref_model,
            output_dir=output_dir,
            callbacks=callbacks,
            device=torch_device,
            adapter=adapter,
        )
    if not distributed.is_main():
        trainer.metrics_log = distributed.NullMetricsLog()  # type: ignore[assignment]
    if resume_from is not None:
        trainer.load_state_dict(load_train_state(resume_from))
    return trainer
