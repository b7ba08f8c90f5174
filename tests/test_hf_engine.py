"""HFEngine on lco-tiny: shapes, raw logprobs, eos handling, seeds, greedy, model mode."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lco_core.hf_engine import HFEngine
from lco_core.rollout import Completion, SamplingParams
from lco_core.tasks import get_task
from lco_core.tiny_model import prompt_ids
from lco_core.tokenizer import IM_END_ID


@pytest.fixture
def engine(tiny_model_and_tokenizer: tuple[Any, Any]) -> HFEngine:
    model, tokenizer = tiny_model_and_tokenizer
    return HFEngine(model, tokenizer, micro_batch_size=5)


def prompts(tokenizer: Any, n: int = 3, task: str = "addition") -> list[list[int]]:
    return [prompt_ids(tokenizer, item["messages"]) for item in get_task(task).examples(n, seed=9)]


def recomputed_logprobs(model: Any, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """The trainer's view: one full float32 forward over prompt + completion."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logp.gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def token_lists(outs: list[list[Completion]]) -> list[list[list[int]]]:
    return [[c.token_ids for c in group] for group in outs]


def test_n_completions_per_prompt_with_aligned_logprobs(engine: HFEngine) -> None:
    ps = prompts(engine.tokenizer, 4) + prompts(engine.tokenizer, 3, "reverse")
    outs = engine.generate(ps, SamplingParams(n=3, max_tokens=6, seed=0))
    assert [len(group) for group in outs] == [3] * 7  # 21 rows over micro-batches of 5
    for group in outs:
        for c in group:
            assert 1 <= len(c.token_ids) <= 6
            assert len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 0.0 for lp in c.logprobs)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=1),
        # Logprobs stay those of the raw distribution whatever temperature/top-p sample.
        SamplingParams(n=2, temperature=0.6, top_p=0.8, max_tokens=12, seed=2),
        SamplingParams(n=1, max_tokens=12, greedy=True),
    ],
)
def test_logprobs_are_the_raw_model_distribution(engine: HFEngine, params: SamplingParams) -> None:
    ps = [*prompts(engine.tokenizer, 3), engine.tokenizer.encode("x", add_special_tokens=False)]
    outs = engine.generate(ps, params)
    for prompt, group in zip(ps, outs, strict=True):
        for c in group:
            ref = recomputed_logprobs(engine.model, prompt, c.token_ids)
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4, rtol=0)


def test_eos_ends_a_completion_and_is_its_last_token(engine: HFEngine) -> None:
    outs = engine.generate(prompts(engine.tokenizer, 6), SamplingParams(n=2, max_tokens=16, seed=3))
    for c in (c for group in outs for c in group):
        # lco-tiny learned to end its answers, so every completion stops well before 16.
        assert c.finish_reason == "stop"
        assert c.token_ids[-1] == IM_END_ID and IM_END_ID not in c.token_ids[:-1]
        assert c.text == engine.tokenizer.decode(c.token_ids[:-1])
        assert "<|im_end|>" not in c.text


def test_max_tokens_cuts_with_finish_reason_length(engine: HFEngine) -> None:
    outs = engine.generate(prompts(engine.tokenizer, 2), SamplingParams(n=2, max_tokens=1, seed=0))
    for c in (c for group in outs for c in group):
        # The first token of an addition answer is a digit, never the eos.
        assert c.finish_reason == "length"
        assert len(c.token_ids) == 1 and c.token_ids[0] != IM_END_ID


def test_same_seed_same_samples_and_caller_rng_untouched(engine: HFEngine) -> None:
    ps = prompts(engine.tokenizer, 4, "reverse")
    params = SamplingParams(n=4, max_tokens=10, seed=123)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    first = engine.generate(ps, params)
    assert torch.equal(torch.get_rng_state(), before)
    second = engine.generate(ps, params)
    assert token_lists(first) == token_lists(second)
    assert [[c.logprobs for c in g] for g in first] == [[c.logprobs for c in g] for g in second]
    other = engine.generate(ps, SamplingParams(n=4, max_tokens=10, seed=124))
    assert token_lists(other) != token_lists(first)


def test_greedy_takes_the_argmax_and_ignores_temperature(engine: HFEngine) -> None:
    ps = prompts(engine.tokenizer, 3)
    outs = engine.generate(ps, SamplingParams(n=3, greedy=True, temperature=0.3, max_tokens=8))
    for prompt, group in zip(ps, outs, strict=True):
        assert all(c.token_ids == group[0].token_ids for c in group)
        with torch.no_grad():
            logits = engine.model(input_ids=torch.tensor([prompt + group[0].token_ids])).logits[0]
        argmax = logits[len(prompt) - 1 : -1].argmax(-1).tolist()
        assert group[0].token_ids == argmax


def test_left_padding_does_not_change_results(tiny_model_and_tokenizer: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model_and_tokenizer
    # Prompts of different lengths: in one batch the short ones are padded on the left.
    ps = prompts(tokenizer, 3) + prompts(tokenizer, 3, "reverse")
    params = SamplingParams(n=1, greedy=True, max_tokens=8)
    one_by_one = HFEngine(model, tokenizer, micro_batch_size=1).generate(ps, params)
    batched = HFEngine(model, tokenizer, micro_batch_size=64).generate(ps, params)
    assert token_lists(one_by_one) == token_lists(batched)
    for a, b in zip(one_by_one, batched, strict=True):
        assert torch.allclose(torch.tensor(a[0].logprobs), torch.tensor(b[0].logprobs), atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored(engine: HFEngine, training: bool) -> None:
    assert engine.model is not None
    engine.model.train(training)
    engine.generate(prompts(engine.tokenizer, 1), SamplingParams(max_tokens=2, seed=0))
    assert engine.model.training is training


def test_generation_config_of_the_model_is_left_alone(engine: HFEngine) -> None:
    assert engine.model is not None
    engine.model.generation_config.top_k = 1  # would make sampling greedy if it leaked in
    saved = engine.model.generation_config
    outs = engine.generate(prompts(engine.tokenizer, 1), SamplingParams(n=16, max_tokens=8, seed=0))
    assert engine.model.generation_config is saved
    assert len({tuple(c.token_ids) for c in outs[0]}) > 1


def test_sync_close_and_bad_params(engine: HFEngine) -> None:
    model = engine.model
    assert model is not None
    engine.sync_weights(model)
    assert engine.weights_version == 1 and engine.model is model
    with pytest.raises(ValueError):
        engine.generate([[]], SamplingParams())
    with pytest.raises(ValueError):
        engine.generate(prompts(engine.tokenizer, 1), SamplingParams(n=0))
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate(prompts(engine.tokenizer, 1), SamplingParams())
