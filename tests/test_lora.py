"""LoRA jobs on lco-tiny: exact resume of an adapter run, checkpoints that hold only the
adapter, the reference policy as the same model with the adapter off, the rollout engine's
merged weights, a later job starting from a LoRA model, and the trainer's own checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from jobs.adapters import merge_adapter
from lco_core.lora import add_adapter, merged_state_dict, trainer_model
from lco_core.models import load_model_and_tokenizer, resolve_model
from lco_core.runner import run_job
from lco_core.tasks import get_task, write_jsonl
from lco_core.vllm_weights import engine_state_dict
from lco_spec.errors import SpecError
from lco_spec.job import LoraConfig, parse_job_spec
from tests.test_trainer import StopAt, rl_job


@pytest.fixture(scope="module")
def addition_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "addition.jsonl"
    write_jsonl(get_task("addition").examples(64, seed=1), path)
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def lora_run(
    tiny_model_path: Path, addition_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """4 LCO steps with a rank-8 adapter straight through, and the same run paused after
    step 2 and resumed. The learning rate is high so that the adapter moves the model."""
    root = tmp_path_factory.mktemp("lora")
    body = rl_job(str(addition_file), max_steps=4, learning_rate=0.02, lora={"r": 8})
    spec = parse_job_spec(body)
    kwargs: dict[str, Any] = {"training_file": addition_file, "validation_file": None}
    straight = run_job(spec, output_dir=root / "a", **kwargs)
    first = run_job(spec, output_dir=root / "b", callbacks=StopAt(2), **kwargs)
    resumed = run_job(spec, output_dir=root / "b", **kwargs)
    return {"root": root, "straight": straight, "first": first, "resumed": resumed}


def test_a_resumed_lora_run_matches_an_uninterrupted_one(lora_run: dict[str, Any]) -> None:
    root = lora_run["root"]
    assert lora_run["first"].status == "paused" and lora_run["first"].step == 2
    assert lora_run["straight"].status == lora_run["resumed"].status == "succeeded"
    a, b = lines(root / "a" / "metrics.jsonl"), lines(root / "b" / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for ma, mb in zip(a, b, strict=True):
        for key in ("reward_mean", "loss", "grad_norm", "entropy"):
            assert ma[key] == pytest.approx(mb[key], rel=1e-4, abs=1e-6), (ma["step"], key)
    # The reference is the same model with its adapter off: B starts at 0, so at step 1
    # the policy IS the reference, and a second copy of the base was never loaded.
    assert a[0]["kl_init"] == 0.0


def test_a_lora_checkpoint_holds_the_adapter_not_the_model(lora_run: dict[str, Any]) -> None:
    ckpt = lora_run["straight"].final_checkpoint
    names = {p.name for p in ckpt.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "train_state.pt"} <= names
    assert "model.safetensors" not in names
    base = Path(resolve_model("lco-tiny")) / "model.safetensors"
    assert (ckpt / "adapter_model.safetensors").stat().st_size < base.stat().st_size / 4
    config = json.loads((ckpt / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert Path(config["base_model_name_or_path"]) == Path(resolve_model("lco-tiny"))


def _greedy(model: Any, tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    out = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
        gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


def test_the_adapter_loads_with_peft_and_the_merged_model_answers_alike(
    lora_run: dict[str, Any], tmp_path: Path
) -> None:
    """The download formats (jobs.adapters: numpy, no torch): the adapter loads with
    `PeftModel.from_pretrained` on the base; the merged model gives the same greedy output,
    and so does a later job's loading of the LoRA model by its checkpoint dir."""
    ckpt = lora_run["straight"].final_checkpoint
    base_dir = resolve_model("lco-tiny")
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    base_logits = base(torch.arange(1, 20)[None]).logits
    with_adapter = PeftModel.from_pretrained(base, str(ckpt)).eval()
    merge_adapter(ckpt, tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    later, _ = load_model_and_tokenizer(str(ckpt))
    ids = torch.arange(1, 20)[None]
    with torch.no_grad():
        want = with_adapter(ids).logits
        assert not torch.allclose(want, base_logits, atol=1e-3)  # the adapter does something
        assert torch.allclose(merged(ids).logits, want, atol=1e-4)
        assert torch.allclose(later.eval()(ids).logits, want, atol=1e-4)
    prompts = [f"What is {a} + {b}?" for a, b in ((3, 4), (12, 30), (7, 7), (25, 19))]
    answers = _greedy(with_adapter, tokenizer, prompts)
    assert _greedy(merged, tokenizer, prompts) == answers


def test_the_engine_serves_the_adapter_merged(tiny_model_path: Path) -> None:
    model, _ = load_model_and_tokenizer("lco-tiny")
    adapter = add_adapter(model, LoraConfig(r=4), seed=0, param="p")
    for name, p in adapter.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # B = 0 would make the merge trivial
    served = engine_state_dict(trainer_model(adapter), torch.float32)
    assert served.keys() == merged_state_dict(trainer_model(adapter)).keys() | {"lm_head.weight"}
    want = adapter.merge_and_unload().state_dict()
    for name, tensor in want.items():
        assert torch.allclose(served[name], tensor, atol=1e-6), name


def test_adapter_seed_fixes_its_init_and_leaves_the_global_rng(tiny_model_path: Path) -> None:
    torch.manual_seed(5)
    expected = torch.rand(1)
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        model, _ = load_model_and_tokenizer("lco-tiny")
        adapter = add_adapter(model, LoraConfig(r=4), seed=1, param="p")
        draws.append(next(p for n, p in adapter.named_parameters() if "lora_A" in n).clone())
        assert torch.rand(1) == expected
    assert torch.equal(draws[0], draws[1])


@pytest.mark.parametrize(
    ("lora", "field", "message"),
    [
        ({"r": 64}, "r", "larger than the narrowest layer"),  # lco-tiny's k/v are 64 wide
        ({"target_modules": ["c_attn"]}, "target_modules", "no linear layers named c_attn"),
    ],
)
def test_the_trainer_refuses_targets_the_model_lacks(
    tiny_model_path: Path, lora: dict[str, Any], field: str, message: str
) -> None:
    model, _ = load_model_and_tokenizer("lco-tiny")
    with pytest.raises(SpecError, match=message) as err:
        add_adapter(model, LoraConfig(**{**lora, "r": lora.get("r", 8) + 1}), seed=0, param="p")
    assert err.value.param == f"p.{field}"


def _method_body(kind: str, data: Path) -> dict[str, Any]:
    hp: dict[str, Any] = {"batch_size": 4, "max_steps": 4, "checkpoint_interval": 2,
                          "eval_samples": 1, "learning_rate": 0.01, "lora": {"r": 4}}  # fmt: skip
    if kind in ("grpo", "ppo"):
        body = rl_job(str(data), **hp, algorithm=kind, n_samples=4)
        return body
    return {
        "model": "lco-tiny",
        "training_file": str(data),
        "seed": 2,
        "method": {"type": kind, kind: {"hyperparameters": hp}},
    }


@pytest.mark.parametrize("kind", ["supervised", "dpo", "grpo", "ppo"])
def test_every_method_trains_and_resumes_an_adapter_exactly(
    tiny_model_path: Path, addition_file: Path, tmp_path: Path, kind: str
) -> None:
    """SFT, DPO (its reference logprobs come from the starting model, which is the adapter
    at B = 0) and the RL baselines (PPO: value head beside the adapter) resume exactly."""
    task = get_task("addition")
    data = {
        "supervised": lambda: write_jsonl(task.sft_examples(32, seed=2), tmp_path / "d.jsonl"),
        "dpo": lambda: write_jsonl(task.dpo_examples(32, seed=2), tmp_path / "d.jsonl"),
    }.get(kind, lambda: addition_file)()
    spec = parse_job_spec(_method_body(kind, data))
    kwargs: dict[str, Any] = {"training_file": data, "validation_file": None}
    straight = run_job(spec, output_dir=tmp_path / "a", **kwargs)
    run_job(spec, output_dir=tmp_path / "b", callbacks=StopAt(2), **kwargs)
    resumed = run_job(spec, output_dir=tmp_path / "b", **kwargs)
    a, b = lines(tmp_path / "a" / "metrics.jsonl"), lines(tmp_path / "b" / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    assert [m["loss"] for m in b] == pytest.approx([m["loss"] for m in a], rel=1e-4, abs=1e-6)
    assert straight.final_checkpoint and resumed.final_checkpoint
    assert (resumed.final_checkpoint / "adapter_model.safetensors").is_file()
