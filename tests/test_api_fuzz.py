"""Schemathesis against the app's own OpenAPI schema, in-process: every operation gets a
fixed budget of generated requests, valid and invalid (derandomized, so a run is
reproducible), sent with a valid key. No response may be a server error, and every
response must match the schema (error bodies included: every route declares OpenAI's
envelope for its 4xx). Then the Idempotency-Key property: a retried POST creates one job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from jobs.settings import Settings
from tests.service_fixtures import new_key, register_worker, sft_body, sft_lines

# Requests per operation and mode: about 30 operations x 2 modes x 12 keeps the whole run
# well under two minutes on a loaded 2-core machine.
EXAMPLES = 12
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture
def fuzz_app(sqlite_settings: Settings) -> Iterator[tuple[Any, dict[str, str]]]:
    # The fuzzer is one busy client: no rate limit in its way.
    settings = sqlite_settings.model_copy(
        update={"rate_limit_per_minute": 10**6, "rate_limit_burst": 10**6}
    )
    register_worker(settings, gpus=1, hours=24)
    key = new_key(settings, "fuzz")
    app = create_app(settings)
    with TestClient(app):  # runs the lifespan
        yield app, {"Authorization": f"Bearer {key}"}


def test_generated_requests_get_no_server_error_and_schema_conforming_responses(
    fuzz_app: tuple[Any, dict[str, str]],
) -> None:
    app, auth = fuzz_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/fine_tuning/jobs/{job_id}/stream":
            continue  # a live stream: generated ids only ever reach its 404 (checked below)
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                headers = {**(case.headers or {}), **auth}
                response = case.call(headers=headers)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                run()
            except Unsatisfiable:
                pass  # no invalid request exists (e.g. a lone free-form path id)
            except Exception as exc:  # collect every operation's failure, then report all
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    assert operations >= 25
    assert not failures, "\n\n".join(failures)


def test_stream_of_an_unknown_job_is_a_404_envelope(
    fuzz_app: tuple[Any, dict[str, str]],
) -> None:
    app, auth = fuzz_app
    with TestClient(app) as client:
        response = client.get("/v1/fine_tuning/jobs/ftjob-nope/stream", headers=auth)
    assert response.status_code == 404 and set(response.json()) == {"error"}


def test_retrying_a_post_with_the_same_idempotency_key_creates_one_job(
    fuzz_app: tuple[Any, dict[str, str]],
) -> None:
    app, auth = fuzz_app
    with TestClient(app) as client:
        file_id = client.post(
            "/v1/files",
            files={"file": ("t.jsonl", sft_lines())},
            data={"purpose": "fine-tune"},
            headers=auth,
        ).json()["id"]
        headers = {**auth, "Idempotency-Key": "retry-me"}
        answers = [
            client.post("/v1/fine_tuning/jobs", json=sft_body(file_id), headers=headers)
            for _ in range(3)
        ]
        jobs = client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.json()["id"] for a in answers}) == 1
    assert [j["id"] for j in jobs] == [answers[0].json()["id"]]
