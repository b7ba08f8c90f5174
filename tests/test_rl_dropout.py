"""RL trains the policy its rollouts were sampled from: a model with dropout (a 2-layer GPT-2
config, dropout 0.1) has it switched off for the run, so pi_old and the update equal the
sampler's policy at every step (before the fix `logp_mismatch_mean` was 0.0 at step 1, then
about 0.04-0.05)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lco_core.metrics import MetricsLog
from lco_core.models import disable_dropout
from lco_core.runner import run_job
from lco_core.tasks import get_task, write_jsonl
from lco_core.tokenizer import build_byte_tokenizer
from lco_spec.job import parse_job_spec


def dropout_model(path: Path) -> Path:
    tokenizer = build_byte_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=2,
        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_disable_dropout_zeroes_every_dropout() -> None:
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.1, attn_pdrop=0.1)
    model = GPT2LMHeadModel(config).train()
    assert disable_dropout(model) > 0
    ids = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(ids).logits)  # train mode, deterministic


def test_rl_on_a_dropout_model_trains_the_sampled_policy(tmp_path: Path) -> None:
    model = dropout_model(tmp_path / "gpt2-dropout")
    data = write_jsonl(get_task("addition").examples(16, seed=1), tmp_path / "rl.jsonl")
    spec = parse_job_spec(
        {
            "model": str(model),
            "training_file": str(data),
            "seed": 1,
            "method": {
                "type": "lco",
                "lco": {
                    "grader": get_task("addition").grader(),
                    "hyperparameters": {"batch_size": 2, "n_samples": 4, "max_steps": 3,
                                        "max_completion_tokens": 4, "eval_samples": 2,
                                        "rollout_engine": "hf"},
                },
            },
        }
    )  # fmt: skip
    result = run_job(spec, training_file=data, validation_file=None, output_dir=tmp_path / "run")
    assert result.status == "succeeded"
    steps = MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    assert [m["step"] for m in steps] == [1, 2, 3]
    for m in steps:
        assert m["logp_mismatch_mean"] < 1e-5, m
