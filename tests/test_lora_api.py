"""LoRA jobs through the API: bad LoRA settings are 400s naming the field, the job object and
`/v1/models` say the model is an adapter and on which base, and a LoRA checkpoint downloads
as the adapter (which `peft` loads on the base) or merged (which transformers loads, with
the same greedy output)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from sqlalchemy import select
from transformers import AutoModelForCausalLM, AutoTokenizer

from jobs.db import make_engine, make_session_factory, transaction
from jobs.ids import utcnow
from jobs.leases import claim, fenced, record_checkpoint
from jobs.models import Job, RegisteredModel
from jobs.storage import Storage
from lco_core.models import resolve_model
from lco_core.runner import run_job
from lco_core.tasks import get_task, write_jsonl
from lco_spec.job import parse_job_spec
from tests.service_fixtures import ApiClient, rl_lines, sft_body, sft_lines
from tests.test_step_budget import HP, SMOLLM2, rl_body


def register_smollm2_shape(api: ApiClient) -> None:
    """An imported model with SmolLM2-135M's config.json (no weights: submission reads only
    the config)."""
    entry = api.settings.data_dir / "models" / "smol"
    entry.mkdir(parents=True)
    (entry / "config.json").write_text(json.dumps({**SMOLLM2, "model_type": "llama"}))
    sessions = make_session_factory(make_engine(api.settings))
    with transaction(sessions) as session:
        session.add(
            RegisteredModel(id="smol", path="models/smol", source="x", source_format="hf_dir",
                            source_sha256="0" * 64, architecture="LlamaForCausalLM",
                            model_type="llama", parameters=134_515_008, dtype="float32")
        )  # fmt: skip


@pytest.mark.parametrize(
    ("lora", "field", "message"),
    [
        # SmolLM2's k_proj and v_proj are 576 x 192.
        ({"r": 256}, "r", "larger than the layer width it adapts (k_proj: 576 x 192)"),
        ({"target_modules": ["q_proj", "c_attn"]}, "target_modules", "no linear layers named"),
        ({"r": 0}, "r", "greater than or equal to 1"),
        ({"dropout": 1.0}, "dropout", "less than 1"),
        ({"rank": 8}, "rank", "Extra inputs"),
    ],
)
def test_bad_lora_settings_are_400s_naming_the_field(
    api: ApiClient, lora: dict[str, Any], field: str, message: str
) -> None:
    register_smollm2_shape(api)
    file_id = api.upload(rl_lines()).json()["id"]
    response = api.post("/v1/fine_tuning/jobs", json=rl_body(file_id, model="smol", lora=lora))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == f"{HP}.lora.{field}"
    assert message in error["message"]


def test_a_lora_job_on_several_gpus_is_a_400_at_submission(api: ApiClient) -> None:
    """LoRA runs on one rank for now: refused when submitted, not after waiting for GPUs."""
    file_id = api.upload(rl_lines()).json()["id"]
    body = rl_body(file_id, lora={"r": 4}) | {"resources": {"gpus": 2}}
    response = api.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "resources.gpus"
    assert "LoRA jobs run on one rank only" in error["message"]


def test_a_lora_job_says_it_trains_an_adapter_on_its_model(api: ApiClient) -> None:
    register_smollm2_shape(api)
    file_id = api.upload(rl_lines()).json()["id"]
    body = rl_body(file_id, model="smol", lora={"r": 16}, max_steps=2)
    job = api.post("/v1/fine_tuning/jobs", json=body).json()
    assert job["adapter"] == {"type": "lora", "base_model": "smol"}
    assert job["method"]["reinforcement"]["hyperparameters"]["lora"]["r"] == 16
    full = api.post("/v1/fine_tuning/jobs", json=rl_body(file_id, model="smol", max_steps=2))
    assert full.json()["adapter"] is None


@pytest.fixture(scope="module")
def lora_checkpoint(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA SFT checkpoint on lco-tiny (2 steps at a high rate, so it differs)."""
    root = tmp_path_factory.mktemp("lora-sft")
    data = root / "sft.jsonl"
    write_jsonl(get_task("addition").sft_examples(16, seed=2), data)
    hp = {"batch_size": 4, "max_steps": 2, "learning_rate": 0.01, "lora": {"r": 8}}
    spec = parse_job_spec(
        {"model": "lco-tiny", "training_file": str(data), "seed": 1,
         "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}
    )  # fmt: skip
    result = run_job(spec, training_file=data, validation_file=None, output_dir=root / "run")
    assert result.final_checkpoint is not None
    return result.final_checkpoint


def finished_lora_job(api: ApiClient, checkpoint: Path, *, lora: bool = True) -> tuple[str, str]:
    """A succeeded job of the team with `checkpoint`'s files as its step-2 checkpoint."""
    file_id = api.upload(sft_lines()).json()["id"]
    body = sft_body(file_id)
    if lora:
        body["method"]["supervised"]["hyperparameters"]["lora"] = {"r": 8}
    job_id = api.post("/v1/fine_tuning/jobs", json=body).json()["id"]
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        lease = claim(session, job_id, owner="test", ttl_s=60)
        team_id = session.scalar(select(Job.team_id).where(Job.id == job_id))
    assert lease is not None and team_id is not None
    dest = Storage(api.settings).job_dir(team_id, job_id) / "checkpoints" / "step-2"
    shutil.copytree(checkpoint, dest)
    name = f"ft:lco-tiny:team-a::{job_id}"
    with fenced(sessions, lease) as session:
        ckpt = record_checkpoint(
            session, lease, team_id=team_id, step=2, rel_path="checkpoints/step-2",
            metrics={"loss": 0.5}, model_name=name,
        )  # fmt: skip
        row = session.scalar(select(Job).where(Job.id == job_id))
        assert row is not None
        row.status, row.fine_tuned_model, row.finished_at = "succeeded", name, utcnow()
        row.final_checkpoint_id = ckpt.id
        ckpt_id = ckpt.id
    return job_id, ckpt_id


def untar(content: bytes, dest: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


def test_a_lora_checkpoint_downloads_as_adapter_or_merged(
    api: ApiClient, lora_checkpoint: Path, tmp_path: Path
) -> None:
    job_id, ckpt_id = finished_lora_job(api, lora_checkpoint)
    url = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/download"
    models = {m["id"]: m for m in api.get("/v1/models").json()["data"]}
    assert models[f"ft:lco-tiny:team-a::{job_id}"]["adapter"] == {
        "type": "lora",
        "base_model": "lco-tiny",
    }
    assert models["lco-tiny"]["adapter"] is None

    adapter_dir = untar(api.get(url, params={"format": "adapter"}).content, tmp_path / "a")
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    merged = api.get(url, params={"format": "merged"})
    assert merged.status_code == 200, merged.text
    merged_dir = untar(merged.content, tmp_path / "m")
    assert merged_dir.name.endswith("-merged")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {
        p.name for p in merged_dir.iterdir()
    }
    # The temp dir the merge was written to is gone once the stream ended.
    job_dir = next((api.settings.data_dir / "teams").glob(f"*/jobs/{job_id}"), None)
    assert job_dir is None or not list(job_dir.glob(".merged-*"))

    base = AutoModelForCausalLM.from_pretrained(resolve_model("lco-tiny")).eval()
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    full = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    for prompt in ("What is 12 + 30?", "What is 7 + 5?", "What is 40 + 41?"):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        with torch.no_grad():
            want = peft_model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
            got = full.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert got.tolist() == want.tolist()


def test_a_full_checkpoint_has_no_adapter_to_download(
    api: ApiClient, tiny_model_path: Path
) -> None:
    job_id, ckpt_id = finished_lora_job(api, tiny_model_path, lora=False)
    url = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/download"
    response = api.get(url, params={"format": "adapter"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "format"
    assert api.get(url, params={"format": "merged"}).status_code == 200
    assert api.get(url, params={"format": "zip"}).status_code == 400
