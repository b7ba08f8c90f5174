"""The resolved training config: a JobSpec with every "auto" replaced by a concrete value.

`resolve_config(spec, n_train=...)` is the one place defaults live; the trainers read only
`TrainConfig`, never the raw spec. Its `describe()` is logged whole at the start of a run so
a run's log says exactly what it did. Pure Python, so job submission
(`jobs.lifecycle.submit_job`) runs it too: a job the trainer would refuse (a warmup as long
as the run, `importance_cap` on a loss without a ratio, ...) is a 400 at submission, not a
failure on the worker.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict

from lco_spec.errors import SpecError
from lco_spec.job import CommonHyperparameters, JobSpec, ReinforcementHyperparameters

# Learning rates for multiplier 1.0. The paper's reference runs use 1e-5 for LCO and 1e-6
# for PPO/GRPO (LCO's per-token gradient is damped by p(a)(e^{A/beta}-1)/(1+...), so it
# tolerates a larger step). LCO's rates (and its `beta` 2) are the stability study's
# choices (docs/results/stability.md): its tuning on lco-tiny chose 1x the tiny rate at
# beta 2 for all three LCO losses, and the same 1x of 2e-5 is what its SmolLM2 stage ran
# (as did the README's SmolLM2 runs; 1e-4 collapsed there within 8 steps).
#
# A tiny model (lco-tiny) wants larger steps. Which table applies is one rule, by the
# model's size (`lr_table`), however the model is named: lco-tiny, a fine-tuned
# `ft:lco-tiny:...` or a local checkpoint dir of it all take the tiny rates.
TINY_MAX_PARAMETERS = 20_000_000
BASE_LR: dict[str, dict[str, float]] = {
    "default": {
        "sft": 2e-5,
        "lco": 2e-5,
        "grpo": 1e-6,
        "ppo": 1e-6,
        "reinforce": 1e-6,
        "dpo": 5e-6,
    },
    # Measured on lco-tiny (addition): LCO at 1e-3 collapses within 20 steps; 1e-4 and 3e-4
    # raise greedy reward from 0.36 to 0.57-0.59 in 150 steps.
    "tiny": {
        "sft": 1e-3,
        "lco": 1e-4,
        "grpo": 1e-4,
        "ppo": 1e-4,
        "reinforce": 1e-4,
        "dpo": 1e-4,
    },
}

# A LoRA job's auto learning rate is this many times the full fine-tune's: the adapter's
# update starts from B = 0 and moves through a rank-r bottleneck, and the best LoRA rate is
# about 10x the full one across model sizes (Schulman et al., "LoRA Without Regret",
# Thinking Machines 2025; measured again on SmolLM2-135M, README "LoRA").
LORA_LR_FACTOR = 10.0

LOSS_FOR_ALGORITHM = {"grpo": "grpo", "ppo": "ppo_clip", "reinforce": "reinforce"}


class TrainConfig(ReinforcementHyperparameters):
    """A job's hyperparameters with every "auto" resolved, plus what the spec holds elsewhere.

    It *is* the spec's hyperparameter model (`ReinforcementHyperparameters`, which holds
    every common and RL field with its one default and bound): only the fields that can be
    "auto" are re-declared here, narrowed to the concrete type `resolve_config` gives them.
    A new hyperparameter is therefore declared once, in `lco_spec/job.py`, and reaches the
    trainers without touching this file. An SFT config carries the RL fields at their
    defaults; the SFT trainer never reads them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["sft", "rl", "dpo"]
    model: str
    seed: int
    total_steps: int
    # The loss the RL trainer minimises (`lco_kld`, ... or the baseline's); "sft" for SFT,
    # "dpo" for DPO (whose `beta` is DPO's, resolved from its own "auto").
    loss: str = "sft"
    # Resolved from "auto" by `resolve_config`.
    learning_rate: float
    batch_size: int  # SFT: examples per step; RL: prompts per step
    n_epochs: int
    checkpoint_interval: int
    eval_interval: int
    eval_samples: int
    # 0: auto, resolved from the model and the data by `memory.fit_to_model`.
    micro_batch_size: int = 0
    loss_chunk_size: int = 0
    n_samples: int = 1
    max_completion_tokens: int = 64
    advantage: Literal["group", "rloo", "raw", "gae"] = "group"

    @property
    def updates_per_batch(self) -> int:
        return self.ppo_epochs * self.mini_batches

    def diagnose(self, step: int) -> bool:
        """Whether `step` measures the costly diagnostics (see `diagnostic_interval`)."""
        return step == 1 or step % self.diagnostic_interval == 0

    def describe(self) -> dict[str, Any]:
        return self.model_dump()


def lr_table(model: str, n_params: int | None) -> str:
    """The BASE_LR table for a model of `n_params` parameters (from its config.json); when
    the size is not known (the API, for the built-in model), by name: the built-in lco-tiny
    and its fine-tuned models (`ft:lco-tiny:...`) are tiny."""
    if n_params is not None:
        return "tiny" if n_params <= TINY_MAX_PARAMETERS else "default"
    base = model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 1 else model
    return "tiny" if base == "lco-tiny" else "default"


def _auto(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


def _common(
    hp: CommonHyperparameters,
    *,
    n_train: int,
    batch_default: int,
    epochs_default: int,
    key: str,
    model: str,
    n_params: int | None,
    prefix: str,
) -> dict[str, Any]:
    """The hyperparameters SFT and RL share; `prefix` is their path in the job body, for the
    `param` of an error."""
    batch_size = int(_auto(hp.batch_size, min(batch_default, max(1, n_train))))
    n_epochs = int(_auto(hp.n_epochs, epochs_default))
    total = hp.max_steps or max(1, math.ceil(n_train * n_epochs / batch_size))
    if hp.learning_rate is not None:
        lr = hp.learning_rate
    else:
        base = BASE_LR[lr_table(model, n_params)][key]
        lr = base * float(_auto(hp.learning_rate_multiplier, 1.0))
        if hp.lora is not None:
            lr *= LORA_LR_FACTOR
    if hp.warmup_steps >= total and hp.warmup_steps > 0:
        raise SpecError(
            f"must be smaller than the number of steps ({total})",
            param=f"{prefix}.warmup_steps",
        )
    # Only what "auto" or the spec's layout decides; every other field passes through as is.
    return {
        **hp.model_dump(),
        "learning_rate": lr,
        "batch_size": batch_size,
        "n_epochs": n_epochs,
        "total_steps": total,
        "checkpoint_interval": int(_auto(hp.checkpoint_interval, max(1, math.ceil(total / 4)))),
        "eval_interval": int(_auto(hp.eval_interval, max(1, math.ceil(total / 4)))),
        "eval_samples": int(_auto(hp.eval_samples, 64)),
        "micro_batch_size": int(_auto(hp.micro_batch_size, 0)),
        "loss_chunk_size": int(_auto(hp.loss_chunk_size, 0)),
    }


def hyperparameters_path(spec: JobSpec) -> str:
    """Where a normalised spec's hyperparameters are in the job body (an error's `param`)."""
    block = "reinforcement" if spec.method.is_rl else spec.method.type
    return f"method.{block}.hyperparameters"


def resolve_config(spec: JobSpec, *, n_train: int, n_params: int | None = None) -> TrainConfig:
    """Resolve every "auto" of a normalised spec, given the training set size and, when
    known, the model's parameter count (it picks the learning-rate table: `lr_table`)."""
    seed = 0 if spec.seed is None else spec.seed
    if not spec.method.is_rl:
        # SFT and DPO: the common hyperparameters, plus DPO's beta (auto: 0.1).
        dpo = spec.method.type == "dpo"
        hp = spec.method.preference.hyperparameters if dpo else spec.method.sft.hyperparameters
        common = _common(
            hp,
            n_train=n_train,
            batch_default=8,
            epochs_default=3,
            key="dpo" if dpo else "sft",
            model=spec.model,
            n_params=n_params,
            prefix=hyperparameters_path(spec),
        )
        if not dpo:
            return TrainConfig(kind="sft", model=spec.model, seed=seed, **common)
        beta = float(_auto(spec.method.preference.hyperparameters.beta, 0.1))
        return TrainConfig(
            kind="dpo", model=spec.model, seed=seed, **{**common, "beta": beta, "loss": "dpo"}
        )

    rl = spec.method.rl.hyperparameters
    prefix = hyperparameters_path(spec)
    algorithm = rl.algorithm
    n_samples = int(_auto(rl.n_samples, 8 if algorithm != "ppo" else 4))
    advantage = _auto(
        rl.advantage, "gae" if algorithm == "ppo" else ("group" if n_samples > 1 else "raw")
    )
    if advantage in ("group", "rloo") and n_samples < 2:
        raise SpecError(
            f"advantage '{advantage}' needs n_samples >= 2",
            param=f"{prefix}.n_samples",
        )
    if advantage == "gae" and algorithm != "ppo":
        raise SpecError(
            "advantage 'gae' needs a value head: use it with algorithm 'ppo'",
            param=f"{prefix}.advantage",
        )
    if rl.mini_batches > int(_auto(rl.batch_size, 8)) * n_samples:
        raise SpecError(
            "more mini_batches than sequences per step",
            param=f"{prefix}.mini_batches",
        )
    if rl.kl_coef > 0 and algorithm != "grpo":
        # Only GRPO's loss has a KL penalty term; a knob that silently does nothing is a
        # worse answer than a refusal.
        raise SpecError(
            f"kl_coef is the KL penalty of algorithm 'grpo'; algorithm '{algorithm}' has none "
            "(LCO's own regulariser is beta)",
            param=f"{prefix}.kl_coef",
        )
    if rl.importance_cap is not None and algorithm not in ("grpo", "ppo"):
        raise SpecError(
            "importance_cap corrects the probability ratio of grpo and ppo; "
            f"algorithm '{algorithm}' has none",
            param=f"{prefix}.importance_cap",
        )
    common = _common(
        rl,
        n_train=n_train,
        batch_default=8,
        epochs_default=1,
        key=algorithm,
        model=spec.model,
        n_params=n_params,
        prefix=prefix,
    )
    return TrainConfig(
        kind="rl",
        model=spec.model,
        seed=seed,
        **{
            **common,
            "loss": rl.lco_loss if algorithm == "lco" else LOSS_FOR_ALGORITHM[algorithm],
            "n_samples": n_samples,
            "max_completion_tokens": int(_auto(rl.max_completion_tokens, 64)),
            "advantage": advantage,
        },
    )
