"""OpenAI's grader endpoints through the official SDK: `graders.validate` answers the grader
or a 400 naming the field, `graders.run` grades one sample as a training step would, bounded
by the grader's time limit, with errors as flags, never as HTTP errors."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.service_fixtures import ApiClient


@pytest.fixture
def client(api: ApiClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=api.key, http_client=api.client,
                  max_retries=0)  # fmt: skip


STRING_CHECK: Any = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                     "reference": "{{item.answer}}", "operation": "eq"}  # fmt: skip
MULTI: Any = {
    "type": "multi",
    "name": "both",
    "graders": {
        "a": STRING_CHECK,
        "b": {"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"},
    },
    "calculate_output": "(a + b ^ 2) / 2",
}  # fmt: skip


def test_validate_answers_the_grader(client: OpenAI) -> None:
    assert client.fine_tuning.alpha.graders.validate(grader=STRING_CHECK).grader is not None


def test_validate_refuses_a_bad_grader_naming_the_field(client: OpenAI) -> None:
    bad = {**STRING_CHECK, "operation": "equals"}
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.validate(grader=bad)
    assert err.value.body["param"] == "grader.operation"  # type: ignore[index]
    literal = {**STRING_CHECK, "reference": "{{item.answers[0] | upper}}"}
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.validate(grader=literal)
    assert err.value.body["param"] == "grader.reference"  # type: ignore[index]


def test_run_grades_one_sample_like_a_training_step(client: OpenAI) -> None:
    right = client.fine_tuning.alpha.graders.run(
        grader=STRING_CHECK, model_sample="5", item={"answer": "5"}
    )
    assert right.reward == 1.0 and right.metadata.name == "exact"
    assert not any(right.metadata.errors.model_dump().values())
    wrong = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="6",
                                                 item={"answer": "5"})  # fmt: skip
    assert wrong.reward == 0.0
    multi = client.fine_tuning.alpha.graders.run(grader=MULTI, model_sample="5",
                                                 item={"answer": "5"})  # fmt: skip
    assert multi.reward == pytest.approx(1.0)  # (1 + 1 ^ 2) / 2
    assert set(multi.sub_rewards) >= {"a", "b"}


def test_run_reports_a_missing_field_and_a_timeout_as_flags(client: OpenAI) -> None:
    missing = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="5",
                                                   item={})  # fmt: skip
    assert missing.reward == 0.0 and missing.metadata.errors.invalid_variable_error
    hostile = {"type": "math_verify", "name": "m", "input": "{{sample.output_text}}",
               "reference": r"$\prod_{k=1}^{10^{9}} k$", "timeout_s": 0.5}  # fmt: skip
    started = time.monotonic()
    out = client.fine_tuning.alpha.graders.run(grader=hostile, model_sample="5")
    assert time.monotonic() - started < 10
    assert out.reward == 0.0 and out.metadata.errors.unresponsive_reward_error


def test_run_refuses_bad_bodies(api: ApiClient) -> None:
    url = "/v1/fine_tuning/alpha/graders/run"
    cases = [
        ({"grader": STRING_CHECK}, "model_sample"),
        ({"grader": STRING_CHECK, "model_sample": 5}, "model_sample"),
        ({"grader": STRING_CHECK, "model_sample": "5", "item": [1]}, "item"),
        ({"grader": "x", "model_sample": "5"}, "grader"),
        ({"grader": STRING_CHECK, "model_sample": "5", "extra": 1}, "extra"),
    ]
    for body, param in cases:
        response = api.post(url, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param
    assert api.post(url, json={"grader": STRING_CHECK, "model_sample": "5"},
                    headers={}).status_code == 401  # fmt: skip
