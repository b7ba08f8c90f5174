"""The auto micro-batch and loss-chunk sizes (`lco_core.memory`) for real model shapes, on
CPU and on a CUDA device with a given amount of free memory (no GPU needed: the free figure
is passed in)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lco_core.memory import (
    CUDA_ACTIVATION_SHARE,
    MICRO_BATCH_ACTIVATION_BYTES,
    activation_bytes_per_token,
    budgets,
    fit_to_model,
)
from lco_spec.train_config import TrainConfig

# SmolLM2-135M's and Qwen2.5-0.5B's shapes, as their config.json give them.
SMOLLM2 = SimpleNamespace(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, vocab_size=49_152
)
QWEN05 = SimpleNamespace(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, vocab_size=151_936
)
GIB = 1024**3


def auto(micro_batch_size: int = 0, loss_chunk_size: int = 0) -> TrainConfig:
    """A TrainConfig whose sizes are auto (0) unless given."""
    return TrainConfig(
        kind="rl", model="m", seed=0, learning_rate=1e-5, batch_size=16, total_steps=1,
        n_epochs=1, lr_schedule="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, checkpoint_interval=0, eval_interval=0, eval_samples=0,
        max_seq_len=512, dtype="float32", micro_batch_size=micro_batch_size,
        loss_chunk_size=loss_chunk_size,
    )  # fmt: skip


def test_smollm2_activations_per_token_match_the_documented_figure() -> None:
    # memory.py's docstring: 1.15 MB per token over 30 layers in float32.
    assert activation_bytes_per_token(SMOLLM2) / 1e6 == pytest.approx(1.15, abs=0.01)


def test_cpu_budgets_do_not_depend_on_free_memory() -> None:
    assert budgets("cpu") == budgets("cpu", free_bytes=100 * GIB)
    cfg = fit_to_model(auto(), SMOLLM2, 200, "cpu")
    # 256 MB over 1.15 MB x 200 tokens: one sequence per micro-batch.
    assert cfg.micro_batch_size == 1
    assert cfg.loss_chunk_size == 170  # 32 MiB of float32 logits over a 49,152 vocabulary


def test_cuda_budgets_grow_with_free_memory_and_never_fall_below_cpu() -> None:
    big = fit_to_model(auto(), SMOLLM2, 200, "cuda", free_bytes=130 * GIB)
    per_seq = activation_bytes_per_token(SMOLLM2) * 200
    assert big.micro_batch_size == int(130 * GIB * CUDA_ACTIVATION_SHARE) // per_seq
    assert big.micro_batch_size >= 128  # a 16 x 8 rollout batch in one pass on an H200
    assert big.loss_chunk_size == 4096  # capped: 1 GiB would hold 5,461 tokens
    qwen = fit_to_model(auto(), QWEN05, 200, "cuda", free_bytes=130 * GIB)
    assert qwen.loss_chunk_size == GIB // (4 * 151_936)
    # Almost nothing free: the CPU budget, not zero and not an error.
    small = fit_to_model(auto(), SMOLLM2, 200, "cuda", free_bytes=1)
    assert budgets("cuda", free_bytes=1)[0] == MICRO_BATCH_ACTIVATION_BYTES
    assert small.micro_batch_size == 1


def test_explicit_sizes_win_over_auto() -> None:
    cfg = auto(micro_batch_size=3, loss_chunk_size=64)
    fitted = fit_to_model(cfg, SMOLLM2, 200, "cuda", free_bytes=130 * GIB)
    assert (fitted.micro_batch_size, fitted.loss_chunk_size) == (3, 64)
