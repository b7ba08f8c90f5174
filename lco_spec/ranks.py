"""What a job run as several ranks (FSDP2, `resources.gpus` > 1 or `lco train --nproc N`)
cannot do yet, in one place: the API refuses it at submission (400 naming
`resources.gpus`) and the trainer again before any work, for `lco train`.

    check_ranks(cfg, 4)      # SpecError for LoRA, DPO, PPO, explicit vLLM, uneven shares
"""

from __future__ import annotations

from lco_spec.errors import SpecError
from lco_spec.train_config import TrainConfig


def check_ranks(cfg: TrainConfig, n: int, *, param: str | None = "resources.gpus") -> None:
    """Raise SpecError if `n` ranks cannot run `cfg`: what is not built for several ranks
    yet, and batches that do not split into equal shares (unequal shares would run unequal
    numbers of forwards: a hang)."""
    if n <= 1:
        return
    refused = (
        "LoRA jobs" if cfg.lora is not None
        else "DPO jobs" if cfg.kind == "dpo"
        else "PPO (its value head)" if cfg.kind == "rl" and cfg.algorithm == "ppo"
        else "vLLM rollouts" if cfg.kind == "rl" and cfg.rollout_engine == "vllm"
        else None
    )  # fmt: skip
    if refused is not None:
        hint = "; use rollout_engine hf or auto" if refused == "vLLM rollouts" else ""
        raise SpecError(f"{refused} run on one rank only for now{hint}", param=param)
    if cfg.kind == "sft":
        share, what = cfg.batch_size, "batch_size"
    else:
        share, what = cfg.batch_size * cfg.n_samples // cfg.mini_batches, "minibatch sequences"
    if share % n:
        raise SpecError(f"{what} ({share}) must divide by the number of ranks ({n})", param=param)
