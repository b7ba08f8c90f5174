"""The training skeleton shared by the RL and SFT loops: optimiser, LR schedule, the step
loop with callbacks, evaluation, checkpoints and exact resume.

A subclass supplies `prepare_data() -> longest sequence`, `train_step(step) -> metrics` and
`evaluate() -> metrics`; everything else (the constructor: data, trunk and head, micro-batch
sizes, optimiser; when to evaluate, checkpoint, stop; how to save and restore training
state) lives here once. Steps are numbered from 1; a checkpoint `step-N` holds the state after
step N, and resuming from it runs step N+1 next with the same data and sampling seeds.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import torch
from torch import Tensor
from transformers import PreTrainedModel, get_scheduler

from lco_core import distributed
from lco_core.callbacks import Callbacks
from lco_core.checkpoint import save_checkpoint
from lco_core.memory import fit_to_model
from lco_core.metrics import MetricsLog, grad_norm
from lco_core.result import STATUS_FOR_STOP, RunResult, RunStatus
from lco_spec.train_config import TrainConfig

log = logging.getLogger(__name__)


def trunk_and_head(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """A causal LM's decoder stack (it returns hidden states) and its LM head, so that the
    losses can project hidden states through the head one chunk of tokens at a time."""
    trunk: torch.nn.Module = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"{type(model).__name__} has no linear LM head")
    if distributed.is_sharded(model):
        # FSDP2 gathers the head with the root: the trunk must be reached through it.
        return distributed.RootTrunk(model, trunk), head
    return trunk, head


def lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """transformers' `constant` / `linear` / `cosine` schedule (with linear warm-up), one
    step ahead: the optimiser step numbered s (from 1) runs at the schedule's step s.

    transformers warms up from lr 0 (step 0 of W), so a job's first update would not move
    the weights; here warm-up lasts W + 1 schedule steps and the run T + 1, which makes step
    s's factor s / (W + 1) during warm-up and leaves the decay after it what W and T say.
    The scheduler's `last_epoch` is therefore the trainer's step + 1."""
    name = {"constant": "constant_with_warmup" if warmup_steps else "constant"}.get(
        schedule, schedule
    )
    scheduler = get_scheduler(
        name, optimizer, num_warmup_steps=warmup_steps + 1, num_training_steps=total_steps + 1
    )
    with warnings.catch_warnings():
        # The step ahead is taken before any optimiser step, which torch warns about.
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
        scheduler.step()
    return scheduler


class TrainerInputs(TypedDict):
    """What every trainer is given besides its config, model and tokenizer (a subclass that
    takes more names its own arguments and passes these on as they came)."""

    items: list[dict[str, Any]]
    eval_items: list[dict[str, Any]]
    output_dir: Path
    callbacks: Callbacks
    device: torch.device
    # A LoRA job's `peft` wrapper of `model` (lco_core.lora): it saves the checkpoints
    # (the adapter only) and can switch the adapter off (the base model).
    adapter: NotRequired[Any]


class Trainer:
    """One run of one job. Subclasses: `rl.RLTrainer`, `sft.SFTTrainer`, `dpo.DPOTrainer`."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        items: list[dict[str, Any]],
        eval_items: list[dict[str, Any]],
        output_dir: Path,
        callbacks: Callbacks,
        device: torch.device,
        extra_params: list[torch.nn.Parameter] | None = None,
        adapter: Any = None,
    ) -> None:
        self.cfg = cfg
        self.adapter = adapter
        self.model = model
        self.tokenizer = tokenizer
        self.items = items
        self.eval_items = eval_items[: cfg.eval_samples]
        self.output_dir = output_dir
        self.checkpoint_dir = output_dir / "checkpoints"
        self.callbacks = callbacks
        self.device = device
        self.step = 0
        self.trained_tokens = 0
        self.metrics_log = MetricsLog(output_dir / "metrics.jsonl")
        # Micro-batch and loss-chunk sizes for this model and the longest sequence of a step.
        self.cfg = cfg = fit_to_model(cfg, model.config, self.prepare_data(), device)
        self.base, self.head = trunk_and_head(model)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.autocast = cfg.dtype == "bfloat16"
        if cfg.gradient_checkpointing:
            # Each decoder layer's activations are recomputed in backward (lco_core.memory).
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
        # The fused kernel (CPU and CUDA): on SmolLM2-135M on 2 CPU cores a step takes 0.55 s
        # instead of 3.4 s for the per-tensor loop, and makes no parameter-sized temporaries.
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True
        )
        self.scheduler = lr_scheduler(
            self.optimizer, cfg.lr_schedule, cfg.warmup_steps, cfg.total_steps
        )
        self.last_metrics: dict[str, float] = {}
        self.summary: dict[str, float] = {}

    # -- subclass hooks -------------------------------------------------------------
    def prepare_data(self) -> int:
        """Ready `items` and `eval_items` for training (encode them, check them); return the
        longest sequence, in tokens, that a step will run (it sizes the micro-batches)."""
        raise NotImplementedError

    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` saved."""

    def close(self) -> None:
        """Release engines and other resources."""

    def apply_gradients(self) -> float:
        """One optimiser step on the accumulated gradients, clipped to `max_grad_norm` when
        set; returns their norm before clipping."""
        distributed.reshard(self.model)  # list the parameters the optimiser holds
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = grad_norm(params)
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def hidden(self, model_base: torch.nn.Module, input_ids: Tensor, attention: Tensor) -> Tensor:
        """`model_base`'s last hidden states for a right-padded batch, on the device."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = model_base(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            )
        return out.last_hidden_state

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "trained_tokens": self.trained_tokens,
            "optimizer": (
                distributed.full_optimizer_state(self.model, self.optimizer)
                if distributed.is_sharded(self.model)
                else self.optimizer.state_dict()
            ),
            "scheduler": self.scheduler.state_dict(),
            "summary": dict(self.summary),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.trained_tokens = int(state.get("trained_tokens", 0))
        if distributed.is_sharded(self.model):
            distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # Checkpoints written while the schedule was a LambdaLR of our own hold the step
        # itself; `lr_scheduler` runs one ahead. The lr the optimiser resumes with is the
        # same either way.
        self.scheduler.last_epoch = self.step + 1
        self.summary = dict(state.get("summary", {}))
        self.load_extra_state(state.get("extra", {}))
        dropped = self.metrics_log.truncate_after(self.step)
        message = f"resumed from checkpoint at step {self.step}"
        if dropped:
            message += f"; {dropped} later step(s) will be redone"
        self.callbacks.on_event(
            "warn" if dropped else "info", message, {"step": self.step, "redone_steps": dropped}
        )

    def save(self) -> Path:
        if distributed.is_sharded(self.model):
            path = distributed.save_sharded(self)
        else:
            path = save_checkpoint(
                self.checkpoint_dir,
                self.step,
                self.adapter if self.adapter is not None else self.model,
                self.tokenizer,
                self.state_dict(),
            )
        self.callbacks.on_checkpoint(path, self.step, self.last_metrics)
        return path

    # -- the loop -----------------------------------------------------------------------
    def _eval_into(self, metrics: dict[str, float], label: str) -> None:
        if self.cfg.eval_samples <= 0:
            return
        result = self.evaluate()
        if not result:
            return
        metrics.update(result)
        self.callbacks.on_event(
            "info",
            f"evaluation {label}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()),
            {"step": self.step, **result},
        )

    def run(self) -> RunResult:
        cfg = self.cfg
        self.callbacks.on_event(
            "info",
            f"training {cfg.kind} ({cfg.loss}) for {cfg.total_steps} steps",
            {"config": cfg.describe()},
        )
        log.info("config %s", cfg.describe())
        if self.step == 0:
            # A run that stopped before its first checkpoint left steps but nothing to resume
            # from: they are redone, and must not stand twice in metrics.jsonl.
            dropped = self.metrics_log.truncate_after(0)
            if dropped:
                self.callbacks.on_event(
                    "warn",
                    f"no checkpoint to resume from: starting at step 0; the {dropped} step(s) "
                    "an earlier run logged are dropped from metrics.jsonl",
                    {"step": 0, "redone_steps": dropped},
                )
            initial: dict[str, float] = {}
            if cfg.eval_samples > 0:
                self.callbacks.on_phase("evaluating", "evaluating the model before training")
            self._eval_into(initial, "before training")
            self.summary.update({f"initial_{k}": v for k, v in initial.items()})
        last_saved = self.step
        self.callbacks.on_phase("training", f"training from step {self.step} of {cfg.total_steps}")
        try:
            while self.step < cfg.total_steps:
                reason = self.callbacks.should_stop()
                if reason is not None:
                    checkpoint = None
                    if reason != "cancel" and self.step > last_saved:
                        checkpoint = self.save()
                    elif self.step > 0:
                        checkpoint = self.checkpoint_dir / f"step-{self.step}"
                    self.callbacks.on_event("info", f"stopped at step {self.step}: {reason}")
                    return self._result(STATUS_FOR_STOP[reason], checkpoint)
                started = time.perf_counter()
                torch.manual_seed(cfg.seed * 7919 + self.step + 1)
                metrics = self.train_step(self.step + 1)
                self.step += 1
                self.scheduler.step()
                if self.step % cfg.eval_interval == 0 or self.step == cfg.total_steps:
                    self._eval_into(metrics, f"at step {self.step}")
                metrics.update(
                    step=self.step,
                    lr=self.optimizer.param_groups[0]["lr"],
                    time_step=time.perf_counter() - started,
                    trained_tokens=self.trained_tokens,
                    world_size=distributed.world_size(),
                )
                self.last_metrics = metrics
                self.metrics_log.append(metrics)
                self.callbacks.on_metrics(self.step, metrics)
                if self.step % cfg.checkpoint_interval == 0 or self.step == cfg.total_steps:
                    self.save()
                    last_saved = self.step
        finally:
            self.close()
        final = {k: v for k, v in self.last_metrics.items() if k.startswith("eval_")}
        self.summary.update({f"final_{k}": v for k, v in final.items()})
        checkpoint = self.checkpoint_dir / f"step-{self.step}"
        return self._result("succeeded", checkpoint if checkpoint.exists() else None)

    def _result(self, status: RunStatus, checkpoint: Path | None) -> RunResult:
        return RunResult(
            status=status,
            step=self.step,
            total_steps=self.cfg.total_steps,
            final_checkpoint=checkpoint,
            trained_tokens=self.trained_tokens,
            summary=dict(self.summary),
        )
