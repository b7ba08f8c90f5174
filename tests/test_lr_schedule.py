"""The learning-rate schedule (`lco_core.trainer.lr_scheduler`, transformers' schedules run
one step ahead) gives every step the lr the trainer's own LambdaLR gave before it, and a
resumed run continues it.

    pytest tests/test_lr_schedule.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from lco_core.trainer import lr_scheduler

BASE_LR = 1e-3


def old_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """The multiplier the trainer used before (its own `lr_lambda`), kept as the reference."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=BASE_LR)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize(("warmup_steps", "total_steps"), [(0, 1), (0, 10), (3, 10), (9, 10)])
def test_every_step_gets_the_lr_of_the_old_schedule(
    schedule: str, warmup_steps: int, total_steps: int
) -> None:
    optimizer = _optimizer()
    scheduler = lr_scheduler(optimizer, schedule, warmup_steps, total_steps)
    # The lr after `done` steps is the one step done + 1 trains with (and the one logged).
    for done in range(total_steps + 1):
        expected = BASE_LR * old_factor(done, schedule, warmup_steps, total_steps)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-18)
        optimizer.step()
        scheduler.step()


def test_a_resumed_schedule_continues_where_it_stopped() -> None:
    first = _optimizer()
    scheduler = lr_scheduler(first, "cosine", 2, 8)
    for _ in range(4):
        first.step()
        scheduler.step()
    second = _optimizer()
    resumed = lr_scheduler(second, "cosine", 2, 8)
    second.load_state_dict(first.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    for done in range(4, 8):
        assert second.param_groups[0]["lr"] == pytest.approx(
            BASE_LR * old_factor(done, "cosine", 2, 8), rel=1e-12
        )
        second.step()
        resumed.step()


def test_no_warning_from_the_step_ahead(recwarn: pytest.WarningsRecorder) -> None:
    lr_scheduler(_optimizer(), "linear", 2, 5)
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]
