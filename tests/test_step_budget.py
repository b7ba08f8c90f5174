"""A step's work is bounded at submission: the hostile tenant's job of every knob at its
maximum is a 400 naming a field and the limit, a model too large for a training process is
refused naming `model`, and the defaults on a real model pass."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.db import make_engine, make_session_factory, transaction
from jobs.models import RegisteredModel
from lco_spec.errors import SpecError
from lco_spec.job import parse_job_spec
from lco_spec.step_budget import ModelShape, check_step
from lco_spec.train_config import resolve_config
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines, sft_body, sft_lines

GIB = 1024**3
HP = "method.reinforcement.hyperparameters"
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
           "max_position_embeddings": 8192, "tie_word_embeddings": True}  # fmt: skip
# Llama-2-70B's sizes.
LLAMA70B = {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
            "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000,
            "max_position_embeddings": 4096}  # fmt: skip
HOSTILE = {"batch_size": 4096, "n_samples": 256, "max_completion_tokens": 65536,
           "ppo_epochs": 64, "mini_batches": 1024, "max_seq_len": 131072}  # fmt: skip


def rl_body(file_id: str, model: str = "lco-tiny", **hp: Any) -> dict[str, Any]:
    return {
        "model": model,
        "training_file": file_id,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": STRING_CHECK, "hyperparameters": hp},
        },
    }


def check(body: dict[str, Any], shape: ModelShape | None, memory: int = 80 * GIB) -> None:
    spec = parse_job_spec(body)
    cfg = resolve_config(spec, n_train=64)
    check_step(cfg, shape, max_step_tokens=4 * 2**20, max_memory_bytes=memory, prefix=HP)


def test_parameter_estimate_is_within_a_tenth_of_a_percent_of_smollm2() -> None:
    # SmolLM2-135M-Instruct has 134,515,008 parameters (norms included).
    assert ModelShape.from_config(SMOLLM2).parameters == pytest.approx(134_515_008, rel=1e-3)


def test_the_hostile_job_is_a_400_naming_a_field_and_the_limit(api: ApiClient) -> None:
    file_id = api.upload(rl_lines()).json()["id"]
    response = api.post("/v1/fine_tuning/jobs", json=rl_body(file_id, **HOSTILE))
    error = response.json()["error"]
    assert response.status_code == 400
    assert error["param"] == f"{HP}.max_completion_tokens"  # furthest above its default
    assert "4194304 tokens per step (setting max_step_tokens)" in error["message"]
    # The team's next, ordinary job goes in; nothing was queued for the refused one.
    ok = api.post("/v1/fine_tuning/jobs", json=rl_body(file_id, max_steps=2))
    assert ok.status_code == 200, ok.text
    assert len(api.get("/v1/fine_tuning/jobs").json()["data"]) == 1


@pytest.mark.parametrize(
    ("hp", "blamed"),
    [
        ({"batch_size": 4096}, "batch_size"),
        ({"n_samples": 256, "max_completion_tokens": 4096}, "max_completion_tokens"),
        ({"ppo_epochs": 64, "batch_size": 64, "max_completion_tokens": 1024}, "ppo_epochs"),
    ],
)
def test_the_field_furthest_above_its_default_is_named(hp: dict[str, Any], blamed: str) -> None:
    with pytest.raises(SpecError) as err:
        check(rl_body("file-1", **{"batch_size": 256, "n_samples": 256, **hp}), None)
    assert err.value.param == f"{HP}.{blamed}"


def test_sft_counts_batch_times_sequence_length(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    body = sft_body(file_id, batch_size=64, max_seq_len=131_072)
    error = api.post("/v1/fine_tuning/jobs", json=body).json()["error"]
    assert error["param"] == "method.supervised.hyperparameters.max_seq_len"


def test_memory_bounds_need_the_models_shape() -> None:
    llama = ModelShape.from_config(LLAMA70B)
    with pytest.raises(SpecError, match="optimizer state") as err:
        check(rl_body("file-1", max_steps=1), llama)
    assert err.value.param == "model"
    smol = ModelShape.from_config(SMOLLM2)
    check(rl_body("file-1", max_steps=1), smol)  # defaults on the real-model fixture fit
    with pytest.raises(SpecError, match="context is 8192") as err:
        check(rl_body("file-1", max_completion_tokens=16384, batch_size=1, n_samples=2), smol)
    assert err.value.param == f"{HP}.max_completion_tokens"
    # 2.2 GB of state fits 4 GiB; 64 sequences of 4096 tokens of activations do not.
    body = rl_body("file-1", max_completion_tokens=4096, batch_size=8, micro_batch_size=64)
    with pytest.raises(SpecError, match="activations") as err:
        check(body, smol, memory=4 * GIB)
    assert err.value.param == f"{HP}.micro_batch_size"


def test_an_imported_models_shape_is_read_at_submission(api: ApiClient) -> None:
    """A registered model's config.json (here a 70B shape, no weights) is what the estimate
    uses: the job is refused naming `model`."""
    entry = api.settings.data_dir / "models" / "big-70b"
    entry.mkdir(parents=True)
    (entry / "config.json").write_text(json.dumps(LLAMA70B))
    sessions = make_session_factory(make_engine(api.settings))
    with transaction(sessions) as session:
        session.add(
            RegisteredModel(id="big-70b", path="models/big-70b", source="x",
                            source_format="hf_dir", source_sha256="0" * 64,
                            architecture="LlamaForCausalLM", model_type="llama",
                            parameters=68_976_648_192, dtype="bfloat16")
        )  # fmt: skip
    file_id = api.upload(rl_lines()).json()["id"]
    response = api.post("/v1/fine_tuning/jobs", json=rl_body(file_id, model="big-70b"))
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "model"
    assert "max_train_memory_bytes" in error["message"]
