"""Shared warm vLLM engines for the vLLM tests (start-up costs ~25-40 s on CPU, so one per
model per session), plus a tiny Qwen2 builder and the trainer-side logprob recomputation.

    (loaded by tests/conftest.py)
    def test_x(vllm_untied): engine, model, tokenizer = vllm_untied

The engines are shared: a test that changes the model's weights must sync them into the
engine before it finishes, so every test starts from an engine that matches its model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from lco_core.tokenizer import IM_END_ID, PAD_TOKEN_ID, VOCAB_SIZE, build_byte_tokenizer

# vLLM's CPU attention kernels support head sizes 32, 64, 80, ... (not 16): 64 wide, 2 heads.
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=512,
)


def build_qwen2(*, tied: bool, seed: int = 0, **overrides: Any) -> tuple[Any, Any]:
    """A random-init float32 Qwen2 over the byte tokenizer (259 tokens, eos <|im_end|>)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        tie_word_embeddings=tied,
        eos_token_id=IM_END_ID,
        pad_token_id=PAD_TOKEN_ID,
        bos_token_id=None,
        **{**TINY, **overrides},
    )
    model = Qwen2ForCausalLM(config).float()
    model.generation_config.eos_token_id = IM_END_ID
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    return model, build_byte_tokenizer()


def trainer_logprobs(
    model: torch.nn.Module, prompt: list[int], completion: list[int]
) -> torch.Tensor:
    """log p(completion[t] | prompt + completion[:t]) by a float32 forward of the trainer's model."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logp.gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def require_vllm() -> None:
    """Skip without vLLM, unless the run must cover it (`scripts/test.sh` sets
    LCO_REQUIRE_VLLM=1 when it installed vLLM): then a missing vLLM fails the test."""
    if os.environ.get("LCO_REQUIRE_VLLM") == "1":
        import vllm  # noqa: F401
    else:
        pytest.importorskip("vllm")


def _engine(tied: bool) -> Iterator[tuple[Any, Any, Any]]:
    require_vllm()
    from lco_core.vllm_engine import VLLMEngine

    model, tokenizer = build_qwen2(tied=tied)
    engine = VLLMEngine.from_model(model, tokenizer, seed=0)
    try:
        yield engine, model, tokenizer
    finally:
        engine.close()


@pytest.fixture(scope="session")
def vllm_untied() -> Iterator[tuple[Any, Any, Any]]:
    yield from _engine(tied=False)


@pytest.fixture(scope="session")
def vllm_tied() -> Iterator[tuple[Any, Any, Any]]:
    yield from _engine(tied=True)
