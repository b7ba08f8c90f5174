"""Job submission (`jobs.lifecycle.submit_job`) through the API, in-process: what it checks
before a job is queued, and that it holds the team's row lock only for the quota check and
the insert, not while it reads and validates files."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

import jobs.lifecycle as lifecycle
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines, sft_body, sft_lines


def test_files_are_read_and_checked_before_the_team_row_is_locked(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = api.upload(sft_lines()).json()["id"]
    val = api.upload(sft_lines(2)).json()["id"]
    order: list[str] = []
    check_file = lifecycle._check_file

    def spy_check_file(*args: Any, **kwargs: Any) -> bytes:
        order.append("file")
        return check_file(*args, **kwargs)

    get = Session.get

    def spy_get(self: Session, entity: Any, ident: Any, **kwargs: Any) -> Any:
        if kwargs.get("with_for_update"):
            order.append("lock")
        return get(self, entity, ident, **kwargs)

    monkeypatch.setattr(lifecycle, "_check_file", spy_check_file)
    monkeypatch.setattr(Session, "get", spy_get)
    response = api.post(
        "/v1/fine_tuning/jobs",
        json={**sft_body(train), "validation_file": val},
        headers=api.headers,
    )
    assert response.status_code == 200, response.text
    assert order == ["file", "file", "lock"]


RL = "method.reinforcement.hyperparameters"


@pytest.mark.parametrize(
    ("method", "hyperparameters", "param"),
    [
        # 4 rows, batch 2, 1 epoch: 2 steps, so a warmup of 2 never ends.
        ("supervised", {"max_steps": None, "batch_size": 2, "n_epochs": 1, "warmup_steps": 2},
         "method.supervised.hyperparameters.warmup_steps"),
        ("lco", {"importance_cap": 2.0}, f"{RL}.importance_cap"),
        ("reinforcement", {"algorithm": "grpo", "n_samples": 1, "advantage": "group"},
         f"{RL}.n_samples"),
        ("reinforcement", {"algorithm": "grpo", "advantage": "gae"}, f"{RL}.advantage"),
        ("reinforcement", {"batch_size": 1, "n_samples": 2, "mini_batches": 3},
         f"{RL}.mini_batches"),
    ],
)  # fmt: skip
def test_what_the_trainer_would_refuse_is_a_400_at_submission(
    api: ApiClient, method: str, hyperparameters: dict[str, Any], param: str
) -> None:
    """The checks the trainer makes when it resolves its config (`resolve_config`) run at
    submission too: a 400 naming the field, and no job queued to fail on a worker."""
    if method == "supervised":
        body = sft_body(api.upload(sft_lines()).json()["id"])
        hp = body["method"]["supervised"]["hyperparameters"]
        hp.update({k: v for k, v in hyperparameters.items() if v is not None})
        hp.pop("max_steps") if hyperparameters.get("max_steps", 0) is None else None
    else:
        block = {"grader": STRING_CHECK, "hyperparameters": {"max_steps": 2, **hyperparameters}}
        body = {
            "model": "lco-tiny",
            "training_file": api.upload(rl_lines()).json()["id"],
            "method": {"type": method, method: block},
        }
    before = api.get("/v1/fine_tuning/jobs", headers=api.headers).json()["data"]
    response = api.post("/v1/fine_tuning/jobs", json=body, headers=api.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert api.get("/v1/fine_tuning/jobs", headers=api.headers).json()["data"] == before


def test_a_raw_cr_between_json_tokens_is_one_line_at_upload_and_at_submission(
    api: ApiClient,
) -> None:
    """One line rule for a dataset everywhere: a raw CR between JSON tokens (whitespace to
    JSON, a line break to `bytes.splitlines`) is part of its line at upload, at job
    creation's grader check and in the trainer's parser (`lco_spec.datasets.jsonl_lines`)."""
    from lco_spec.datasets import parse_dataset

    rows = rl_lines().decode().splitlines()
    rows[0] = rows[0].replace(', "answer"', ',\r"answer"')
    data = ("\n".join(rows) + "\n").encode()
    assert b"\r" in data
    uploaded = api.upload(data).json()
    assert uploaded["status"] == "processed", uploaded
    assert len(parse_dataset(data, "reinforcement")) == 4
    body = {
        "model": "lco-tiny",
        "training_file": uploaded["id"],
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    response = api.post("/v1/fine_tuning/jobs", json=body, headers=api.headers)
    assert response.status_code == 200, response.text
