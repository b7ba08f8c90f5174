"""A hostile grader cannot hold the pool: a job whose grader runs past its time limit on
every sample of a step fails with `grader_timeout` (at once, no retries), and another
team's job then runs to completion, with real training processes on lco-tiny."""

from __future__ import annotations

import time

from tests.invariants import check_invariants
from tests.service_fixtures import ApiClient, jsonl, sft_body, sft_lines
from worker.context import WorkerContext
from worker.tasks import run_job

# sympy would take days on this product; the grader's input ignores the sample, so every
# sample's call runs into the limit.
HOSTILE_GRADER = {
    "type": "math_verify",
    "name": "hostile",
    "input": "{{item.guess}}",
    "reference": "{{item.answer}}",
    "timeout_s": 0.5,
}


def test_a_grader_that_always_times_out_fails_its_job_and_the_next_team_runs(
    api: ApiClient,
) -> None:
    items = [
        {"messages": [{"role": "user", "content": f"{i}+1="}], "guess": "5",
         "answer": r"$\prod_{k=1}^{10^{9}} k$"}
        for i in range(4)
    ]  # fmt: skip
    file_id = api.upload(jsonl(items)).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {
            "type": "lco",
            "lco": {
                "grader": HOSTILE_GRADER,
                "hyperparameters": {"batch_size": 2, "n_samples": 2, "max_steps": 3,
                                    "max_completion_tokens": 4, "eval_samples": 2},
            },
        },
    }  # fmt: skip
    hostile = api.post("/v1/fine_tuning/jobs", json=body)
    assert hostile.status_code == 200, hostile.text
    other_file = api.upload(sft_lines(), headers=api.other_headers).json()["id"]
    other = api.post("/v1/fine_tuning/jobs", json=sft_body(other_file), headers=api.other_headers)
    assert other.status_code == 200, other.text

    ctx = WorkerContext(api.settings)
    started = time.monotonic()
    assert run_job(ctx, hostile.json()["id"]) is True
    elapsed = time.monotonic() - started
    job = api.get(f"/v1/fine_tuning/jobs/{hostile.json()['id']}").json()
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "grader_timeout"
    assert job["error"]["param"] == "method.reinforcement.grader"
    assert "time limit on all 2 samples" in job["error"]["message"]
    assert job["attempts"] == 1  # the grader's fault: no retry
    assert elapsed < 120, elapsed  # the training process's start, then one limit per sample

    assert run_job(ctx, other.json()["id"]) is True
    done = api.get(f"/v1/fine_tuning/jobs/{other.json()['id']}", headers=api.other_headers)
    assert done.json()["status"] == "succeeded", done.json()
    check_invariants(api.settings)
