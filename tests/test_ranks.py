"""What several ranks cannot run yet is refused in one place (`lco_spec/ranks.py`): at
submission as a 400 naming `resources.gpus`, and by the trainer before any work."""

from __future__ import annotations

from typing import Any

import pytest

from lco_spec.errors import SpecError
from lco_spec.job import parse_job_spec
from lco_spec.ranks import check_ranks
from lco_spec.train_config import resolve_config
from tests.test_step_budget import STRING_CHECK


def config(method: str, **hp: Any) -> Any:
    block: dict[str, Any] = {"hyperparameters": hp}
    if method == "reinforcement":
        block["grader"] = STRING_CHECK
    body = {"model": "lco-tiny", "training_file": "f", "method": {"type": method, method: block}}
    return resolve_config(parse_job_spec(body), n_train=64)


@pytest.mark.parametrize(
    ("method", "hp", "message"),
    [
        ("supervised", {"lora": {"r": 4}, "batch_size": 8}, "LoRA jobs run on one rank only"),
        ("dpo", {"batch_size": 8}, "DPO jobs run on one rank only"),
        ("reinforcement", {"algorithm": "ppo", "batch_size": 8}, "PPO (its value head)"),
        ("reinforcement", {"rollout_engine": "vllm", "batch_size": 8}, "vLLM rollouts"),
        ("supervised", {"batch_size": 6}, "batch_size (6) must divide by the number of ranks"),
    ],
)
def test_what_several_ranks_cannot_run_is_refused(
    method: str, hp: dict[str, Any], message: str
) -> None:
    cfg = config(method, **hp)
    check_ranks(cfg, 1)  # one rank runs everything
    with pytest.raises(SpecError) as err:
        check_ranks(cfg, 4)
    assert message in str(err.value) and err.value.param == "resources.gpus"


def test_what_several_ranks_run_passes() -> None:
    check_ranks(config("supervised", batch_size=8), 4)
    check_ranks(config("reinforcement", batch_size=8, n_samples=4), 4)
