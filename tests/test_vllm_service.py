"""vLLM rollouts in real jobs: the engine a job gets, and an LCO job through the service.

- `rollout_engine` resolution: `auto` is vLLM whenever it is installed (or what the
  deployment set in LCO_ROLLOUT_ENGINE), only `auto` falls back to HF, and an explicit
  `vllm` that cannot start fails the job with a clear error instead of hanging.
- An LCO job with `rollout_engine: vllm` on lco-tiny through `lco serve` (openai SDK, real
  worker): it succeeds, greedy reward rises as it does with HF rollouts
  (tests/test_rl_e2e.py runs the same 60-step recipe with HF), vLLM and trainer logprobs
  agree on every step, and the engine serves a new weights version after every update.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from lco_core.callbacks import Callbacks, Level, Phase
from lco_core.runner import engine_choice, start_rollout_engine
from tests.service_fixtures import jsonl, wait_for_job
from tests.vllm_fixtures import build_qwen2, require_vllm

STEPS = 60


@pytest.mark.parametrize(
    ("requested", "env", "installed", "expected"),
    [
        ("auto", None, True, ("vllm", True)),
        ("auto", None, False, ("hf", False)),
        ("auto", "hf", True, ("hf", False)),
        ("auto", "vllm", False, ("vllm", False)),
        ("vllm", "hf", True, ("vllm", False)),
        ("hf", None, True, ("hf", False)),
    ],
)
def test_engine_choice(
    requested: str,
    env: str | None,
    installed: bool,
    expected: tuple[str, bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env is None:
        monkeypatch.delenv("LCO_ROLLOUT_ENGINE", raising=False)
    else:
        monkeypatch.setenv("LCO_ROLLOUT_ENGINE", env)
    assert engine_choice(requested, vllm_installed=installed) == expected


def test_engine_choice_refuses_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown rollout engine"):
        engine_choice("sglang")
    monkeypatch.setenv("LCO_ROLLOUT_ENGINE", "fast")
    with pytest.raises(ValueError, match="LCO_ROLLOUT_ENGINE"):
        engine_choice("auto")


class _Events(Callbacks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        self.seen.append((level, message))

    def on_phase(self, phase: Phase, message: str) -> None:
        self.seen.append((phase, message))


def test_vllm_that_cannot_start_fails_unless_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model vLLM's CPU kernels cannot serve (head size 16): `vllm` raises at once with
    the reason; `auto` says so in a warning event and rolls out with HF."""
    require_vllm()
    from lco_core.hf_engine import HFEngine
    from lco_core.vllm_engine import VLLMUnavailableError

    monkeypatch.delenv("LCO_ROLLOUT_ENGINE", raising=False)
    model, tokenizer = build_qwen2(tied=False, num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(VLLMUnavailableError, match="head size"):
        start_rollout_engine("vllm", model, tokenizer)
    events = _Events()
    engine = start_rollout_engine("auto", model, tokenizer, callbacks=events)
    assert isinstance(engine, HFEngine)
    # It said it was starting vLLM, then why it could not.
    assert events.seen[0] == ("starting_engine", "starting the vLLM rollout engine"), events.seen
    assert events.seen[1][0] == "warn" and "head size" in events.seen[1][1], events.seen


@pytest.fixture
def addition_files(embedded: tuple[Any, str]) -> Iterator[tuple[OpenAI, str, str]]:
    from lco_core.tasks import get_task

    service, key = embedded
    task = get_task("addition")
    client = OpenAI(base_url=service.base_url, api_key=key, max_retries=0)
    train = client.files.create(
        file=("train.jsonl", jsonl(task.examples(512, seed=1))), purpose="fine-tune"
    )
    val = client.files.create(
        file=("val.jsonl", jsonl(task.examples(128, seed=99))), purpose="fine-tune"
    )
    yield client, train.id, val.id


@pytest.mark.e2e
def test_lco_job_with_vllm_rollouts_raises_reward(
    embedded: tuple[Any, str], addition_files: tuple[OpenAI, str, str], tmp_path: Path
) -> None:
    require_vllm()
    from lco_core.tasks import get_task

    service, key = embedded
    client, train_id, val_id = addition_files
    job = client.fine_tuning.jobs.create(
        model="lco-tiny",
        training_file=train_id,
        validation_file=val_id,
        seed=1,
        method={  # type: ignore[typeddict-unknown-key]
            "type": "lco",
            "lco": {
                "grader": get_task("addition").grader(),
                "hyperparameters": {
                    "rollout_engine": "vllm",
                    "batch_size": 8,
                    "n_samples": 8,
                    "max_completion_tokens": 6,
                    "max_steps": STEPS,
                    "eval_samples": 128,
                    "eval_interval": STEPS,
                    "checkpoint_interval": STEPS,
                    "beta": 2.0,
                },
            },
        },
    )
    done = wait_for_job(client, job.id, {"succeeded"}, service, timeout=900)
    assert done.fine_tuned_model

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert any(e.message.startswith("vLLM rollout engine started") for e in events)
    evals = [
        e.data["eval_reward"]
        for e in reversed(events)
        if isinstance(e.data, dict) and "eval_reward" in e.data
    ]
    before, after = evals[0], evals[-1]
    print(f"vLLM rollouts, {STEPS} steps: greedy eval reward {before:.3f} -> {after:.3f}")
    assert after >= before + 0.05, (before, after)

    metrics = [
        point["metrics"]
        for point in httpx.get(
            f"{service.base_url}/fine_tuning/jobs/{job.id}/metrics",
            headers={"Authorization": f"Bearer {key}"},
        ).json()["data"]
    ]
    assert len(metrics) == STEPS
    # Every step sampled from the weights of the step before: one new version per update,
    # and vLLM's logprobs of the sampled tokens equal the trainer's float32 ones.
    assert [m["weights_version"] for m in metrics] == [float(s) for s in range(1, STEPS + 1)]
    assert max(m["logp_mismatch_max"] for m in metrics) < 1e-3
    assert max(m["sync_probe_max_diff"] for m in metrics) < 1e-3
