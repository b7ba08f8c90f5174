"""A job's results as OpenAI shows them, through the official SDK: a succeeded job lists its
results file in `result_files`; `files.retrieve` and `files.content` give OpenAI's per-step
CSV (`step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`, then our own
metrics) made from the stored step metrics, for the owning team only; checkpoint objects'
`metrics` carry OpenAI's names beside ours.

    .venv/bin/pytest tests/test_result_files.py -q
"""

from __future__ import annotations

import csv
import io
from typing import Any

import openai
import pytest
from openai import OpenAI
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.db import make_engine, make_session_factory, transaction
from jobs.ids import new_id, utcnow
from jobs.models import Checkpoint, Job, JobMetric
from jobs.results import (
    CHECKPOINT_METRICS,
    RESULTS_COLUMNS,
    openai_metrics,
    results_file_id,
    results_job_id,
)
from tests.service_fixtures import ApiClient, sft_lines

# Four steps; evaluation (our eval_loss) at steps 2 and 4, checkpoints there too.
STEPS = {
    1: {"step": 1, "loss": 1.0, "grad_norm": 0.5, "lr": 1e-5},
    2: {"step": 2, "loss": 0.5, "grad_norm": 0.25, "lr": 1e-5, "eval_loss": 1.0},
    3: {"step": 3, "loss": 0.25, "grad_norm": 0.125, "lr": 1e-5},
    4: {"step": 4, "loss": 0.125, "grad_norm": 0.0625, "lr": 1e-5, "eval_loss": 0.5},
}


def _sdk(api: ApiClient, key: str | None = None) -> OpenAI:
    return OpenAI(
        base_url="http://testserver/v1",
        api_key=key or api.key,
        http_client=api.client,
        max_retries=0,
    )


def _sessions(api: ApiClient) -> sessionmaker[Session]:
    return make_session_factory(make_engine(api.settings))


def _create(client: OpenAI, *, validation: bool) -> str:
    train = client.files.create(file=("train.jsonl", sft_lines()), purpose="fine-tune").id
    valid = None
    if validation:
        valid = client.files.create(file=("valid.jsonl", sft_lines(2)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="lco-tiny",
        training_file=train,
        validation_file=valid if valid else openai.NOT_GIVEN,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
    )
    assert job.result_files == []  # nothing until it succeeds
    return job.id


def _train(api: ApiClient, job_id: str, status: str = "succeeded") -> None:
    """What a worker leaves behind: step metrics, checkpoints at steps 2 and 4, the status."""
    with transaction(_sessions(api)) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        for step, metrics in STEPS.items():
            session.add(JobMetric(job_id=job_id, step=step, metrics=metrics))
            if step % 2 == 0:
                session.add(
                    Checkpoint(
                        id=new_id("ftckpt"),
                        job_id=job_id,
                        team_id=job.team_id,
                        step_number=step,
                        metrics=metrics,
                        rel_path=f"checkpoints/step-{step}",
                        fine_tuned_model_checkpoint=f"ft:lco-tiny:{job_id}:ckpt-step-{step}",
                    )
                )
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=status, finished_at=utcnow(), step=4, total_steps=4)
        )


def _rows(text: str) -> tuple[list[str], dict[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), {int(r["step"]): r for r in reader}


def test_a_succeeded_jobs_results_file_through_the_sdk(api: ApiClient) -> None:
    client = _sdk(api)
    job_id = _create(client, validation=True)
    _train(api, job_id)

    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded"
    assert job.result_files == [results_file_id(job_id)]
    (file_id,) = job.result_files
    assert file_id.startswith("file-")

    info = client.files.retrieve(file_id)
    assert (info.id, info.object, info.purpose, info.status) == (
        file_id,
        "file",
        "fine-tune-results",
        "processed",
    )
    assert info.filename == "step_metrics.csv"
    content = client.files.content(file_id)
    body = content.read()
    assert info.bytes == len(body)
    assert content.response.headers["content-type"].startswith("text/csv")

    header, rows = _rows(body.decode())
    assert header[:5] == list(RESULTS_COLUMNS)
    assert header[:5] == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    ]
    assert {"loss", "eval_loss", "grad_norm", "lr"} <= set(header[5:])  # ours after
    assert sorted(rows) == [1, 2, 3, 4]
    assert [float(rows[s]["train_loss"]) for s in (1, 2, 3, 4)] == [1.0, 0.5, 0.25, 0.125]
    # Validation values where an evaluation ran, empty cells elsewhere; no token accuracy
    # is measured, so that column is empty.
    assert [rows[s]["valid_loss"] for s in (1, 2, 3, 4)] == ["", "1.0", "", "0.5"]
    assert {rows[s]["train_accuracy"] for s in rows} == {""}
    assert float(rows[3]["grad_norm"]) == 0.125


def test_without_a_validation_file_valid_columns_stay_empty(api: ApiClient) -> None:
    client = _sdk(api)
    job_id = _create(client, validation=False)
    _train(api, job_id)
    _, rows = _rows(client.files.content(results_file_id(job_id)).read().decode())
    # Our eval_loss was measured on training items: kept under our name only.
    assert [rows[s]["valid_loss"] for s in (2, 4)] == ["", ""]
    assert [rows[s]["eval_loss"] for s in (2, 4)] == ["1.0", "0.5"]
    (checkpoint, *_) = client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert checkpoint.metrics.valid_loss is None
    assert checkpoint.metrics.train_loss == 0.125


def test_results_files_are_the_owning_teams_and_only_of_succeeded_jobs(api: ApiClient) -> None:
    client, other = _sdk(api), _sdk(api, api.other_key)
    done, failed = _create(client, validation=False), _create(client, validation=False)
    _train(api, done)
    _train(api, failed, status="failed")
    assert client.fine_tuning.jobs.retrieve(failed).result_files == []

    for file_id, sdk in [(results_file_id(done), other), (results_file_id(failed), client)]:
        with pytest.raises(openai.NotFoundError):
            sdk.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            sdk.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-results-nosuchjob")
    # It goes with its job: not deletable alone (and another team's is missing).
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.delete(results_file_id(done))
    assert refused.value.code == "file_not_deletable"
    with pytest.raises(openai.NotFoundError):
        other.files.delete(results_file_id(done))
    assert client.files.retrieve(results_file_id(done)).purpose == "fine-tune-results"


def test_checkpoint_metrics_have_openais_names_beside_ours(api: ApiClient) -> None:
    client = _sdk(api)
    job_id = _create(client, validation=True)
    _train(api, job_id)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id).data
    by_step = {c.step_number: c for c in checkpoints}
    assert sorted(by_step) == [2, 4]
    metrics = by_step[4].metrics
    assert (metrics.step, metrics.train_loss, metrics.valid_loss) == (4, 0.125, 0.5)
    # No value of that meaning: null, as OpenAI leaves a metric it did not measure.
    assert metrics.train_mean_token_accuracy is None
    assert metrics.full_valid_loss is None
    dumped: dict[str, Any] = metrics.model_dump()
    assert set(CHECKPOINT_METRICS) <= set(dumped)
    assert {k: dumped[k] for k in ("loss", "eval_loss", "grad_norm")} == {
        "loss": 0.125,
        "eval_loss": 0.5,
        "grad_norm": 0.0625,
    }


def test_openai_metric_names_from_ours() -> None:
    ours = {"step": 7, "loss": 0.3, "eval_loss": 0.4, "mean_token_accuracy": 0.9}
    assert openai_metrics(ours, validated=True) == {
        "step": 7,
        "train_loss": 0.3,
        "train_mean_token_accuracy": 0.9,
        "valid_loss": 0.4,
        "valid_mean_token_accuracy": None,
        "full_valid_loss": None,
        "full_valid_mean_token_accuracy": None,
    }
    # eval_* on training items (no validation file) is no validation metric.
    assert openai_metrics(ours, validated=False)["valid_loss"] is None
    # An OpenAI name the trainer reports itself wins; non-numbers and NaN are no value.
    named = openai_metrics(
        {"loss": 1.0, "train_loss": 2.0, "eval_loss": float("nan")}, validated=True
    )
    assert (named["train_loss"], named["valid_loss"]) == (2.0, None)
    assert results_job_id(results_file_id("ftjob-abc")) == "ftjob-abc"
    assert results_job_id("file-abc") is None and results_job_id("file-results-") is None
