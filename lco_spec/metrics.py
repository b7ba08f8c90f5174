"""Metric names both sides show: the training core reports them per step, and the CLI, the
demo and `lco train`'s progress bar put these first in a progress line."""

from __future__ import annotations

# In the order a progress line shows them.
HEADLINE_METRICS = ("reward_mean", "eval_reward", "loss", "eval_loss", "entropy", "grad_norm")
