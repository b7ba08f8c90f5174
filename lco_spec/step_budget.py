"""What one training step asks for, estimated at submission from the config and the model's
shape, so a job that no worker could run is a 400 naming the field instead of a worker held
at step 0. Pure Python (the API runs it; `lco_core.memory` shares the activation formula).

    check_step(cfg, shape, max_step_tokens=4 * 2**20, max_memory_bytes=80 * 2**30,
               prefix="method.reinforcement.hyperparameters")

Two bounds:

* **tokens per step** (`max_step_tokens`): RL generates and trains
  `batch_size x n_samples x max_completion_tokens` tokens, `ppo_epochs` times over; SFT
  trains `batch_size x max_seq_len`. The prompt tokens of RL are not counted (the API has no
  tokenizer), so the bound is on the part the job's own knobs choose.
* **memory of one device** (`max_memory_bytes`): float32 weights, gradients and AdamW's two
  moments (16 bytes per parameter) plus the activations of one micro-batch of the longest
  sequence (`activation_bytes_per_token`; one sequence when `micro_batch_size` is auto,
  since auto picks what fits). Checked when the model's shape is known (an imported model's
  `config.json`); the built-in 2-layer `lco-tiny` always fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lco_spec.errors import SpecError
from lco_spec.job import LORA_LINEAR_MODULES, LoraConfig
from lco_spec.train_config import TrainConfig

# The defaults a knob's size is compared with, to name the field most responsible.
_TYPICAL = {"batch_size": 8, "n_samples": 8, "max_completion_tokens": 64, "ppo_epochs": 1,
            "max_seq_len": 512}  # fmt: skip
# float32 weights + gradients + AdamW's exp_avg and exp_avg_sq.
STATE_BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that set its memory (a HF `config.json`)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    # HF's `model_type` ("llama", "qwen2", ...): names the linear layers LoRA may target.
    model_type: str = ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a parsed `config.json`; KeyError/ValueError if a size is missing."""
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        return cls(
            hidden_size=hidden,
            intermediate_size=int(config.get("intermediate_size") or 4 * hidden),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            vocab_size=int(config["vocab_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings") or 2**31),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            model_type=str(config.get("model_type") or ""),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of a block of a Llama-style model."""
        h, i = self.hidden_size, self.intermediate_size
        kv = h * self.num_key_value_heads // self.num_attention_heads
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip

    @property
    def parameters(self) -> int:
        """Embeddings (and an untied head) plus per layer: q and o (hidden^2 each), k and v
        (hidden x kv width each) and the gated MLP's three matrices. Norms and biases are
        left out (under 0.1% of a real model)."""
        kv = self.hidden_size * self.num_key_value_heads // self.num_attention_heads
        layer = 2 * self.hidden_size**2 + 2 * self.hidden_size * kv
        layer += 3 * self.hidden_size * self.intermediate_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * layer


def activation_bytes_per_token(config: Any, *, dtype_bytes: int = 4) -> int:
    """Autograd's saved activations per token for one forward of a decoder-only model
    (`6 * hidden + 4 * intermediate` values per layer: the matmul and norm inputs of the
    attention and MLP blocks; attention scores are not stored by SDPA's fused kernels).
    `config` is anything with the HF config's attribute names (a `PretrainedConfig`, a
    `ModelShape`)."""
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    layers = int(config.num_hidden_layers)
    return layers * (6 * hidden + 4 * intermediate) * dtype_bytes


def lora_parameters(lora: LoraConfig, shape: ModelShape, *, prefix: str) -> int:
    """The adapter's parameter count, after checking it against the model: the targeted
    modules must exist in its blocks, and `r` may not exceed any targeted layer's smaller
    side (a rank beyond it adds nothing a full-rank update would not). A model family this
    table does not know is left to the trainer, which sees the real modules."""
    names = LORA_LINEAR_MODULES.get(shape.model_type)
    if names is None:
        return 0
    targets = list(names) if lora.target_modules == "all-linear" else lora.target_modules
    unknown = sorted(set(targets) - set(names))
    if unknown:
        raise SpecError(
            f"the model ({shape.model_type}) has no linear layers named {', '.join(unknown)} "
            f"in its blocks; LoRA can target: {', '.join(names)} (or all-linear)",
            param=f"{prefix}.target_modules",
        )
    shapes = shape.linear_shapes()
    narrowest = min(targets, key=lambda name: min(shapes[name]))
    width = min(shapes[narrowest])
    if lora.r > width:
        raise SpecError(
            f"r = {lora.r} is larger than the layer width it adapts ({narrowest}: "
            f"{shapes[narrowest][0]} x {shapes[narrowest][1]}); use r <= {width}",
            param=f"{prefix}.r",
        )
    per_layer = sum(lora.r * (shapes[name][0] + shapes[name][1]) for name in targets)
    return per_layer * shape.num_hidden_layers


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_step(
    cfg: TrainConfig,
    shape: ModelShape | None,
    *,
    max_step_tokens: int,
    max_memory_bytes: int,
    prefix: str,
) -> None:
    """Raise SpecError (400) naming the hyperparameter at `prefix` most responsible when a
    step would exceed either bound (see the module docstring); `param` is `model` when the
    model alone does not fit."""
    if cfg.kind == "rl":
        seq_field, seq = "max_completion_tokens", cfg.max_completion_tokens
        work = {"batch_size": cfg.batch_size, "n_samples": cfg.n_samples, seq_field: seq,
                "ppo_epochs": cfg.ppo_epochs}  # fmt: skip
    else:
        seq_field, seq = "max_seq_len", cfg.max_seq_len
        work = {"batch_size": cfg.batch_size, seq_field: seq}
    tokens = math.prod(work.values())
    if tokens > max_step_tokens:
        culprit = max(work, key=lambda name: work[name] / _TYPICAL[name])
        product = " x ".join(f"{name} {value}" for name, value in work.items())
        raise SpecError(
            f"one step would process {product} = {tokens} tokens; the limit is "
            f"{max_step_tokens} tokens per step (setting max_step_tokens)",
            param=f"{prefix}.{culprit}",
        )
    if shape is None:
        return
    if seq > shape.max_position_embeddings:
        raise SpecError(
            f"{seq} tokens per sequence; the model's context is "
            f"{shape.max_position_embeddings} tokens",
            param=f"{prefix}.{seq_field}",
        )
    state = STATE_BYTES_PER_PARAMETER * shape.parameters
    if cfg.lora is not None:
        # Frozen float32 weights; only the adapter has gradients and AdamW moments.
        adapter = lora_parameters(cfg.lora, shape, prefix=f"{prefix}.lora")
        state = 4 * shape.parameters + STATE_BYTES_PER_PARAMETER * adapter
    if state > max_memory_bytes:
        raise SpecError(
            f"{'LoRA' if cfg.lora else 'full'} fine-tuning this model needs about {_gib(state)} for its weights, "
            f"gradients and optimizer state; a training process may use "
            f"{_gib(max_memory_bytes)} (setting max_train_memory_bytes)",
            param="model",
        )
    micro = cfg.micro_batch_size or 1
    activations = activation_bytes_per_token(shape) * seq * micro
    if state + activations > max_memory_bytes:
        blame = "micro_batch_size" if micro > 1 else seq_field
        raise SpecError(
            f"one micro-batch of {micro} sequence(s) of {seq} tokens needs about "
            f"{_gib(activations)} of activations on top of {_gib(state)} of model state; "
            f"a training process may use {_gib(max_memory_bytes)} "
            "(setting max_train_memory_bytes)",
            param=f"{prefix}.{blame}",
        )
