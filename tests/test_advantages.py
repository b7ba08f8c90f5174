"""Advantage estimators on groups of equal rewards: exactly zero, in any float dtype."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lco_core.advantages import equal_groups, group_advantages, rloo_advantages
from lco_core.callbacks import Callbacks, Level


def estimators() -> list[tuple[str, object]]:
    return [
        ("group-std", lambda r, n: group_advantages(r, n, scale="std")),
        ("group-none", lambda r, n: group_advantages(r, n, scale="none")),
        ("rloo", rloo_advantages),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.35, 0.1, 1 / 3, 0.7, 1e-3, 123.456])
@pytest.mark.parametrize("size", [2, 3, 7, 8, 16])
def test_a_group_of_equal_rewards_gets_exactly_zero(
    dtype: torch.dtype, value: float, size: int
) -> None:
    rewards = torch.full((size,), value, dtype=dtype)
    # The bug this guards: float32's mean of eight 0.35s is not 0.35, and the residue
    # divided by (std + eps) gave every sample ~0.029.
    for name, estimate in estimators():
        adv = estimate(rewards, size)  # type: ignore[operator]
        assert torch.equal(adv, torch.zeros_like(adv)), (name, adv)
    assert equal_groups(rewards.view(1, size)).tolist() == [True]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_mixed_batch_zeroes_only_its_equal_groups(dtype: torch.dtype) -> None:
    unequal = [[0.35, 0.1, 0.35, 1.0], [0.0, 1.0, 1.0, 1.0]]
    rows = [[0.35] * 4, unequal[0], [1 / 3] * 4, unequal[1], [0.1] * 4]
    rewards = torch.tensor(rows, dtype=dtype).reshape(-1)
    assert equal_groups(rewards.view(-1, 4)).tolist() == [True, False, True, False, True]
    for name, estimate in estimators():
        adv = estimate(rewards, 4).view(-1, 4)  # type: ignore[operator]
        alone = estimate(torch.tensor(unequal, dtype=dtype).reshape(-1), 4).view(-1, 4)  # type: ignore[operator]
        for row in (0, 2, 4):
            assert torch.equal(adv[row], torch.zeros(4, dtype=dtype)), (name, row)
        # The unequal groups are exactly what they are without their neighbours.
        assert torch.equal(adv[1], alone[0]) and torch.equal(adv[3], alone[1]), name
        assert adv[1].abs().sum() > 0 and adv[3].abs().sum() > 0, name


def test_unequal_groups_keep_their_values() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert torch.allclose(
        group_advantages(r, 4, scale="none"), torch.tensor([0.75, -0.25, -0.25, -0.25])
    )
    assert torch.allclose(rloo_advantages(r, 4), torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    std = r.std(unbiased=False)
    assert torch.allclose(group_advantages(r, 4), (r - r.mean()) / (std + 1e-6))


def test_an_rl_step_with_equal_non_zero_rewards_has_no_signal(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """Every sample scored 0.35 (not 0 or 1): zero_std_group_frac is 1, the advantages are
    exactly 0 and the no-signal warning fires."""
    from lco_core.runner import build_trainer
    from lco_core.tasks import get_task, write_jsonl
    from lco_spec.job import parse_job_spec

    data = tmp_path / "addition.jsonl"
    write_jsonl(get_task("addition").examples(8, seed=1), data)
    hp = {"batch_size": 2, "n_samples": 8, "max_completion_tokens": 4, "max_steps": 2}
    spec = parse_job_spec(
        {
            "model": "lco-tiny",
            "training_file": str(data),
            "method": {
                "type": "reinforcement",
                "reinforcement": {"grader": get_task("addition").grader(), "hyperparameters": hp},
            },
        }
    )
    warnings: list[str] = []

    class Warnings(Callbacks):
        def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
            if level == "warn":
                warnings.append(message)

    trainer: Any = build_trainer(
        spec,
        training_file=data,
        validation_file=None,
        output_dir=tmp_path / "run",
        callbacks=Warnings(),
    )
    real = trainer.grade

    def constant(items: Any, groups: Any) -> tuple[torch.Tensor, dict[str, float]]:
        rewards, stats = real(items, groups)
        return torch.full_like(rewards, 0.35, dtype=torch.float32), stats

    trainer.grade = constant
    metrics = trainer.train_step(1)
    assert metrics["zero_std_group_frac"] == 1.0
    assert metrics["advantage_abs_mean"] == 0.0
    assert any(w.startswith("step 1 had no learning signal") for w in warnings), warnings
