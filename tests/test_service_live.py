"""End to end through the official `openai` SDK against a live server and a real worker:
upload, SFT job, LCO job from its result (string_check grader on the built-in `addition`
task), pagination, events, checkpoints, cancel; the downloaded checkpoint loads with
transformers. Runs on the embedded default (`lco serve`: SQLite + filesystem broker) and
on PostgreSQL + Redis with separate API, `celery worker` and scheduler processes.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.service_fixtures import (
    LiveService,
    cli_key,
    fast_settings,
    free_port,
    jsonl,
    lco_cli,
    settings_env,
    wait_for_job,
)

pytestmark = pytest.mark.e2e

# Tiny runs: the whole suite must stay well inside CI's time on 2 cores.
SFT_HP = {"max_steps": 3, "batch_size": 4, "checkpoint_interval": 2}
RL_HP = {"max_steps": 2, "batch_size": 2, "n_samples": 2, "max_completion_tokens": 6}


@pytest.fixture
def production(
    tmp_path: Path, tiny_model_path: Path, pg_url: str, redis_url: str
) -> Iterator[tuple[LiveService, str]]:
    settings = fast_settings(tmp_path / "data", database_url=pg_url, broker_url=redis_url)
    port = free_port()
    service = LiveService(f"http://127.0.0.1:{port}/v1", settings)
    lco_cli(settings, "migrate")
    key = cli_key(settings, "live")
    service.start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.app:create_app_from_env",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        tmp_path / "api.log",
    )
    service.start(
        [sys.executable, "-m", "cli.main", "worker", "--pools", "default"], tmp_path / "worker.log"
    )
    service.start([sys.executable, "-m", "cli.main", "scheduler"], tmp_path / "scheduler.log")
    try:
        service.wait_healthy()
        yield service, key
    finally:
        service.stop()


def _drive(service: LiveService, key: str, tmp_path: Path) -> tuple[OpenAI, str]:
    from lco_core.tasks import get_task, split_examples

    task = get_task("addition")
    sft_items, _ = split_examples(task, 32, 4, seed=0, supervised=True)
    rl_items, _ = split_examples(task, 16, 4, seed=1)
    client = OpenAI(base_url=service.base_url, api_key=key, max_retries=0)

    sft_file = client.files.create(file=("sft.jsonl", jsonl(sft_items)), purpose="fine-tune")
    rl_file = client.files.create(file=("rl.jsonl", jsonl(rl_items)), purpose="fine-tune")
    assert sft_file.status == "processed" and rl_file.status == "processed", sft_file.status_details
    assert client.files.retrieve(sft_file.id).bytes == sft_file.bytes

    # 1. SFT on lco-tiny.
    sft = client.fine_tuning.jobs.create(
        model="lco-tiny",
        training_file=sft_file.id,
        suffix="sft",
        method={"type": "supervised", "supervised": {"hyperparameters": SFT_HP}},
    )
    assert sft.status == "queued" and sft.id.startswith("ftjob-")
    sft = wait_for_job(client, sft.id, {"succeeded"}, service)
    assert sft.fine_tuned_model and sft.fine_tuned_model.startswith("ft:lco-tiny:live:sft:")
    assert sft.trained_tokens and sft.finished_at
    assert (sft.model_extra or {})["progress"] == {"step": 3, "total_steps": 3, "percent": 100.0}

    events = list(client.fine_tuning.jobs.list_events(sft.id, limit=5))
    assert events and all(e.object == "fine_tuning.job.event" for e in events)
    assert any(e.message == "The job has successfully completed" for e in events)
    # The real core reports its phases, in order, before the first step.
    phases = [
        (e.data["phase"], e.message)
        for e in reversed(list(client.fine_tuning.jobs.list_events(sft.id, limit=100)))
        if isinstance(e.data, dict) and "phase" in e.data
    ]
    assert [p for p, _ in phases] == [
        "preparing_model",
        "preparing_model",
        "evaluating",
        "training",
    ], phases
    assert phases[1][1] == "loading lco-tiny onto cpu", phases
    checkpoints = client.fine_tuning.jobs.checkpoints.list(sft.id).data
    assert checkpoints and checkpoints[0].id.startswith("ftckpt-")
    assert checkpoints[0].step_number == 3 and checkpoints[0].fine_tuning_job_id == sft.id
    metrics = httpx.get(
        f"{service.base_url}/fine_tuning/jobs/{sft.id}/metrics",
        headers={"Authorization": f"Bearer {key}"},
    ).json()["data"]
    assert [m["step"] for m in metrics] == [1, 2, 3]

    # 2. The downloaded checkpoint is a Hugging Face model dir.
    response = httpx.get(
        f"{service.base_url}/fine_tuning/jobs/{sft.id}/checkpoints/{checkpoints[0].id}/download",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        tar.extractall(tmp_path / "download", filter="data")
    (model_dir,) = (tmp_path / "download").iterdir()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert sum(p.numel() for p in model.parameters()) > 0

    # 3. A long job, cancelled while running.
    long = client.fine_tuning.jobs.create(
        model="lco-tiny",
        training_file=sft_file.id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {**SFT_HP, "max_steps": 10_000}},
        },
    )
    wait_for_job(client, long.id, {"running"}, service, min_step=1)
    client.fine_tuning.jobs.cancel(long.id)
    cancelled = wait_for_job(client, long.id, {"cancelled"}, service, timeout=120)
    assert cancelled.finished_at and cancelled.fine_tuned_model is None

    # 4. LCO from the SFT result, graded by string_check against the item's answer.
    rl = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=rl_file.id,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": task.grader(),
                "hyperparameters": {**RL_HP, "algorithm": "lco"},
            },
        },
    )
    rl = wait_for_job(client, rl.id, {"succeeded"}, service)
    assert rl.method and rl.method.type == "reinforcement"
    assert rl.fine_tuned_model and rl.fine_tuned_model != sft.fine_tuned_model

    # 5. Pagination over all three jobs, newest first.
    page = client.fine_tuning.jobs.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    assert [j.id for j in page] == [rl.id, long.id, sft.id]  # auto-paginates via `after`
    assert {j.status for j in client.fine_tuning.jobs.list()} == {"succeeded", "cancelled"}

    # 6. The CLI client speaks to the same API.
    env = {**settings_env(service.settings), "LCO_BASE_URL": service.base_url, "LCO_API_KEY": key}
    listed = subprocess.run(
        [sys.executable, "-m", "cli.main", "jobs", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert rl.id in listed and long.id in listed
    watched = subprocess.run(
        [sys.executable, "-m", "cli.main", "jobs", "watch", sft.id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert watched.strip().splitlines()[-1] == f"{sft.id}: succeeded -> {sft.fine_tuned_model}"
    return client, sft_file.id


def _preempt_on_worker_sigterm(service: LiveService, client: OpenAI, file_id: str) -> None:
    """SIGTERM to the worker (a warm shutdown, as `docker stop` sends): the running job
    checkpoints and goes back to the queue without spending an attempt."""
    job = client.fine_tuning.jobs.create(
        model="lco-tiny",
        training_file=file_id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {**SFT_HP, "max_steps": 10_000}},
        },
    )
    wait_for_job(client, job.id, {"running"}, service, min_step=1)
    worker = service.procs[1]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0, service.dump_logs()
    preempted = client.fine_tuning.jobs.retrieve(job.id)
    assert preempted.status == "queued", service.dump_logs()
    assert (preempted.model_extra or {})["attempts"] == 0
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Fine-tuning job preempted; requeued" in events
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"


def test_live_embedded_default(embedded: tuple[LiveService, str], tmp_path: Path) -> None:
    _drive(*embedded, tmp_path)


def test_live_postgres_redis_separate_worker(
    production: tuple[LiveService, str], tmp_path: Path
) -> None:
    client, file_id = _drive(*production, tmp_path)
    _preempt_on_worker_sigterm(production[0], client, file_id)
