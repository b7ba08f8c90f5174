"""Bad input never gives a 500 or a stack trace: every case answers OpenAI's error envelope
with the right status and, where one field is at fault, its `param`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines, sft_body, sft_lines


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    return dict(body["error"])


def _file(api: ApiClient, data: bytes | None = None) -> str:
    return str(api.upload(data or sft_lines()).json()["id"])


def test_malformed_json(api: ApiClient) -> None:
    response = api.post(
        "/v1/fine_tuning/jobs",
        content=b'{"model": "lco-tiny", "training_file": ',
        headers={**api.headers, "content-type": "application/json"},
    )
    assert _error(response, 400)["code"] == "invalid_json"


def test_body_that_is_not_an_object(api: ApiClient) -> None:
    _error(api.post("/v1/fine_tuning/jobs", json=[1, 2]), 400)


def test_unknown_top_level_field(api: ApiClient) -> None:
    body = {**sft_body(_file(api)), "learning_rate": 0.1}
    assert _error(api.post("/v1/fine_tuning/jobs", json=body), 400)["param"] == "learning_rate"


def test_unknown_hyperparameter(api: ApiClient) -> None:
    body = sft_body(_file(api), warp_speed=9)
    err = _error(api.post("/v1/fine_tuning/jobs", json=body), 400)
    assert err["param"] == "method.supervised.hyperparameters.warp_speed"


@pytest.mark.parametrize(
    ("name", "value"), [("batch_size", 0), ("n_epochs", "many"), ("learning_rate", -1.0)]
)
def test_invalid_hyperparameter(api: ApiClient, name: str, value: Any) -> None:
    body = sft_body(_file(api), **{name: value})
    err = _error(api.post("/v1/fine_tuning/jobs", json=body), 400)
    assert err["param"] is not None
    assert err["param"].startswith(f"method.supervised.hyperparameters.{name}")


def test_unknown_model(api: ApiClient) -> None:
    body = {**sft_body(_file(api)), "model": "gpt-17"}
    err = _error(api.post("/v1/fine_tuning/jobs", json=body), 400)
    assert (err["param"], err["code"]) == ("model", "model_not_found")


def test_unknown_fine_tuned_model(api: ApiClient) -> None:
    body = {**sft_body(_file(api)), "model": "ft:lco-tiny:team-a::ftjob-nope"}
    assert _error(api.post("/v1/fine_tuning/jobs", json=body), 400)["param"] == "model"


def test_unknown_training_file(api: ApiClient) -> None:
    err = _error(api.post("/v1/fine_tuning/jobs", json=sft_body("file-doesnotexist")), 400)
    assert (err["param"], err["code"]) == ("training_file", "file_not_found")


def test_unknown_validation_file(api: ApiClient) -> None:
    body = {**sft_body(_file(api)), "validation_file": "file-nope"}
    assert _error(api.post("/v1/fine_tuning/jobs", json=body), 400)["param"] == "validation_file"


def test_unknown_ids_in_paths_are_404(api: ApiClient) -> None:
    for path in (
        "/v1/files/file-nope",
        "/v1/files/file-nope/content",
        "/v1/fine_tuning/jobs/ftjob-nope",
        "/v1/fine_tuning/jobs/ftjob-nope/events",
        "/v1/fine_tuning/jobs/ftjob-nope/checkpoints",
        "/v1/fine_tuning/jobs/ftjob-nope/metrics",
        "/v1/fine_tuning/jobs/ftjob-nope/checkpoints/ftckpt-nope/download",
        "/v1/no/such/route",
    ):
        _error(api.get(path), 404)
    _error(api.post("/v1/fine_tuning/jobs/ftjob-nope/cancel"), 404)
    _error(api.delete("/v1/files/file-nope"), 404)


def test_invalid_jsonl_gives_file_error_with_line_numbers(api: ApiClient) -> None:
    data = sft_lines(2) + b"not json\n" + b'{"messages": [{"role": "bot", "content": "x"}]}\n'
    file = api.upload(data).json()
    assert file["status"] == "error"
    assert "line 3" in file["status_details"] and "line 4" in file["status_details"]
    err = _error(api.post("/v1/fine_tuning/jobs", json=sft_body(file["id"])), 400)
    assert (err["param"], err["code"]) == ("training_file", "invalid_file")


def test_dataset_kind_must_match_method(api: ApiClient) -> None:
    rl_file = _file(api, rl_lines())
    err = _error(api.post("/v1/fine_tuning/jobs", json=sft_body(rl_file)), 400)
    assert err["param"] == "training_file"


def test_grader_fields_must_exist_in_the_data(api: ApiClient) -> None:
    body = {
        "model": "lco-tiny",
        "training_file": _file(api, rl_lines()),
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": {**STRING_CHECK, "reference": "{{item.solution}}"}},
        },
    }
    err = _error(api.post("/v1/fine_tuning/jobs", json=body), 400)
    assert err["param"] is not None and err["param"].startswith("method.reinforcement.grader")


def test_oversized_upload_is_413(api: ApiClient) -> None:
    limit = 2048
    settings = api.settings.model_copy(update={"max_upload_bytes": limit})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/files",
            headers=api.headers,
            files={"file": ("big.jsonl", sft_lines(2000))},
            data={"purpose": "fine-tune"},
        )
        _error(response, 413)
        assert client.get("/v1/files", headers=api.headers).json()["data"] == []


def test_oversized_json_body_is_413(api: ApiClient) -> None:
    body = {**sft_body("file-x"), "metadata": {"k": "v" * (2 * 1024 * 1024)}}
    _error(api.post("/v1/fine_tuning/jobs", json=body), 413)


def test_streamed_body_over_the_limit_is_413(api: ApiClient) -> None:
    chunks = (b"x" * 65536 for _ in range(64))  # no Content-Length: counted as it arrives
    response = api.post(
        "/v1/fine_tuning/jobs",
        content=chunks,
        headers={**api.headers, "content-type": "application/json"},
    )
    _error(response, 413)


def test_bad_purpose_and_missing_file_field(api: ApiClient) -> None:
    response = api.post(
        "/v1/files", files={"file": ("t.jsonl", sft_lines())}, data={"purpose": "assistants"}
    )
    assert _error(response, 400)["param"] == "purpose"
    assert _error(api.post("/v1/files", data={"purpose": "fine-tune"}), 400)["param"] == "file"


def test_bad_query_parameters(api: ApiClient) -> None:
    assert _error(api.get("/v1/fine_tuning/jobs?limit=0"), 400)["param"] == "limit"
    assert _error(api.get("/v1/fine_tuning/jobs?limit=abc"), 400)["param"] == "limit"
    assert _error(api.get("/v1/fine_tuning/jobs?after=ftjob-nope"), 404)


def test_missing_or_wrong_api_key_is_401(api: ApiClient) -> None:
    assert _error(api.get("/v1/files", headers={}), 401)["code"] == "invalid_api_key"
    _error(api.get("/v1/files", headers={"Authorization": "Bearer lco-" + "x" * 48}), 401)
    _error(api.get("/v1/files", headers={"Authorization": "Basic abc"}), 401)


def test_cancel_of_finished_job_is_409(api: ApiClient) -> None:
    job = api.post("/v1/fine_tuning/jobs", json=sft_body(_file(api))).json()
    assert api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    err = _error(api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel"), 409)
    assert err["code"] == "invalid_state_transition"
    _error(api.post(f"/v1/fine_tuning/jobs/{job['id']}/resume"), 409)
    _error(api.post(f"/v1/fine_tuning/jobs/{job['id']}/pause"), 409)


def test_wrong_method_is_405(api: ApiClient) -> None:
    _error(api.client.put("/v1/files", headers=api.headers), 405)
