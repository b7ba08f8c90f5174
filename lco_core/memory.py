"""Where the memory of a training step goes, and the sizes that keep it bounded.

A step of full fine-tuning holds, besides the process itself:

* the weights, their gradients and AdamW's two moments: 4 copies of the parameters
  (SmolLM2-135M in float32: 4 x 0.54 GB = 2.15 GB), all alive for the whole run;
* the activations autograd keeps for one forward/backward: per token and per decoder layer
  about the inputs of every matmul and norm, `6 * hidden + 4 * intermediate` floats
  (SmolLM2: 1.15 MB per token over 30 layers, so 64 sequences of 110 tokens would be
  8 GB). They are bounded by splitting the rollout batch into micro-batches of
  `micro_batch_size` sequences whose gradients accumulate (same update, smaller peak),
  and cut to the layer boundaries by `gradient_checkpointing` (one more forward);
* one chunk of LM-head logits in the fused loss (`fused.py`), a few copies of
  `loss_chunk_size x vocab` floats, plus one head-sized gradient buffer per loss half;
* the rollout engine: HF generate's KV cache (2 x layers x kv_heads x head_dim floats per
  token, 46 KB on SmolLM2), or vLLM's own copy of the weights and its KV cache.

`fit_to_model` turns the "auto" sizes (stored as 0 in `TrainConfig`) into numbers from
the model's config, so a 2-layer toy still trains its whole batch in one pass while a real
model trains in micro-batches that fit the budgets below. On CPU the budgets are fixed and
small (host memory is shared with the rollout engine and the rest of the machine, and a
bigger micro-batch is no faster there); on CUDA they are a share of the device memory still
free once the model (and a vLLM engine on the same device) is loaded, because a GPU is only
fast on big micro-batches. `scripts/bench_real.py` measures the resulting peak RSS and
`scripts/gpu_check.sh` the GPU figures.
"""

from __future__ import annotations

from typing import Any

import torch

from lco_spec.step_budget import activation_bytes_per_token
from lco_spec.train_config import TrainConfig

__all__ = [
    "activation_bytes_per_token",
    "auto_loss_chunk_size",
    "auto_micro_batch_size",
    "budgets",
    "fit_to_model",
]

# CPU: activation budget of one micro-batch, and of one chunk of logits (float32 bytes).
MICRO_BATCH_ACTIVATION_BYTES = 256 * 1024**2
LOGITS_CHUNK_BYTES = 32 * 1024**2
MAX_LOSS_CHUNK_TOKENS = 4096
# CUDA: a quarter of the free device memory for one micro-batch's activations (the rest
# holds the optimizer state created at the first step, the loss chunk, the allocator's
# fragmentation and HF generate's KV cache), and 1 GiB for a chunk of logits.
CUDA_ACTIVATION_SHARE = 0.25
CUDA_LOGITS_CHUNK_BYTES = 1024**3


def budgets(
    device: torch.device | str | None = None, free_bytes: int | None = None
) -> tuple[int, int]:
    """(activation bytes of one micro-batch, bytes of one chunk of float32 logits) on
    `device`. On CUDA `free_bytes` defaults to `torch.cuda.mem_get_info`'s free figure;
    never below the CPU budgets."""
    dev = torch.device(device or "cpu")
    if dev.type != "cuda":
        return MICRO_BATCH_ACTIVATION_BYTES, LOGITS_CHUNK_BYTES
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(dev)[0]
    activations = max(MICRO_BATCH_ACTIVATION_BYTES, int(free_bytes * CUDA_ACTIVATION_SHARE))
    return activations, CUDA_LOGITS_CHUNK_BYTES


def auto_micro_batch_size(
    config: Any,
    seq_len: int,
    *,
    checkpointing: bool = False,
    budget_bytes: int = MICRO_BATCH_ACTIVATION_BYTES,
) -> int:
    """Sequences per forward/backward so that one micro-batch's activations stay within
    `budget_bytes` (with checkpointing only the layer inputs are kept)."""
    per_token = activation_bytes_per_token(config)
    if checkpointing:
        # Every layer's input (hidden floats) stays, plus one layer's recomputed activations.
        layers = int(config.num_hidden_layers)
        per_token = layers * int(config.hidden_size) * 4 + per_token // layers
    return max(1, budget_bytes // max(1, per_token * seq_len))


def auto_loss_chunk_size(vocab_size: int, budget_bytes: int = LOGITS_CHUNK_BYTES) -> int:
    """Tokens per chunk of the fused LM-head loss: one chunk's float32 logits within
    `budget_bytes` (the loss keeps about three such buffers at once)."""
    return max(16, min(MAX_LOSS_CHUNK_TOKENS, budget_bytes // (4 * vocab_size)))


def fit_to_model(
    cfg: TrainConfig,
    model_config: Any,
    seq_len: int,
    device: torch.device | str | None = None,
    *,
    free_bytes: int | None = None,
) -> TrainConfig:
    """`cfg` with `micro_batch_size` and `loss_chunk_size` resolved if they were auto (0),
    for sequences of up to `seq_len` tokens (the trainer knows its data's longest) on
    `device` (see `budgets`; `free_bytes` overrides the free CUDA memory, for tests)."""
    activations, logits = budgets(device, free_bytes)
    micro = cfg.micro_batch_size or auto_micro_batch_size(
        model_config, seq_len, checkpointing=cfg.gradient_checkpointing, budget_bytes=activations
    )
    chunk = cfg.loss_chunk_size or auto_loss_chunk_size(int(model_config.vocab_size), logits)
    return cfg.model_copy(update={"micro_batch_size": micro, "loss_chunk_size": chunk})
