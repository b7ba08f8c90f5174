"""`/v1/fine_tuning/alpha/graders`: OpenAI's grader endpoints, so a team can try a grader on
one sample before a job spends hours on it (`client.fine_tuning.alpha.graders.validate` and
`.run` in the official SDK).

    validate {grader}                       -> {grader}, or a 400 naming the field
    run {grader, model_sample, item?}       -> {reward, metadata, sub_rewards, ...}

`run` grades exactly as a training step does (`lco_spec.grading`), so it is bounded the
same way: each call has the grader's `timeout_s` (default 2 s) and anything sympy- or
regex-heavy runs in the killable grader workers. A grader error is not an HTTP error, as in
OpenAI's API: the reward is 0 and `metadata.errors` says what went wrong
(`unresponsive_reward_error` for a timeout, `invalid_variable_error` for a template field the
item or the sample lacks, `other_error` otherwise). The model-grader token counts are always
empty: no grader here calls a model.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentKey
from api.openapi import json_body
from jobs.errors import InvalidRequest
from lco_spec.errors import GraderError, GraderTimeout
from lco_spec.grader_specs import parse_grader
from lco_spec.grading import GradeResult, build_grader

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])

_ERROR_FLAGS = (
    "formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
    "model_grader_refusal_error", "model_grader_server_error", "other_error",
    "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
    "truncated_observation_error", "unresponsive_reward_error",
)  # fmt: skip


class GraderValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]


class GraderRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    model_sample: str = Field(max_length=1_000_000)
    item: dict[str, Any] | None = None


def _grader(body: dict[str, Any]) -> dict[str, Any]:
    grader = body.get("grader")
    if not isinstance(grader, dict):
        raise InvalidRequest("grader must be an object", param="grader")
    parse_grader(grader, param="grader")  # SpecError: a 400 naming the field
    return grader


@router.post("/validate", openapi_extra=json_body(GraderValidateRequest, "ValidateGraderRequest"))
async def validate_grader(_: CurrentKey, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    unknown = set(body) - {"grader"}
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
    return {"grader": _grader(body)}


def _flags(outcome: GradeResult | GraderError) -> dict[str, Any]:
    flags: dict[str, Any] = dict.fromkeys(_ERROR_FLAGS, False)
    flags |= {"model_grader_server_error_details": None,
              "python_grader_runtime_error_details": None,
              "python_grader_server_error_type": None}  # fmt: skip
    if isinstance(outcome, GraderTimeout):
        flags["unresponsive_reward_error"] = True
    elif isinstance(outcome, GraderError):
        missing = "has no field" in str(outcome) or "not JSON" in str(outcome)
        flags["invalid_variable_error" if missing else "other_error"] = True
    return flags


@router.post("/run", openapi_extra=json_body(GraderRunRequest, "RunGraderRequest"))
async def run_grader(_: CurrentKey, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    unknown = set(body) - {"grader", "model_sample", "item"}
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
    grader_json = _grader(body)
    sample = body.get("model_sample")
    if not isinstance(sample, str):
        raise InvalidRequest("model_sample must be a string", param="model_sample")
    item = body.get("item") or {}
    if not isinstance(item, dict):
        raise InvalidRequest("item must be an object", param="item")
    grader = build_grader(grader_json)
    started = time.perf_counter()
    (outcome,) = await run_in_threadpool(grader.grade_many, [(sample, item)])
    elapsed = time.perf_counter() - started
    scores: dict[str, Any] = {}
    reward = 0.0
    if isinstance(outcome, GradeResult):
        reward, scores = outcome.score, dict(outcome.sub_scores)
    return {
        "reward": reward,
        "metadata": {
            "name": grader_json.get("name", ""),
            "type": grader_json.get("type", ""),
            "errors": _flags(outcome),
            "execution_time": elapsed,
            "scores": scores,
            "token_usage": None,
            "sampled_model_name": None,
        },
        "sub_rewards": scores,
        "model_grader_token_usage_per_model": {},
    }
