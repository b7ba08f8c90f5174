"""Advantage estimators: sequence rewards in, per-sequence or per-token advantages out.

- `group`: A = (r - mean of its prompt's group) / (std + eps); `scale="none"` drops the
  std (Dr. GRPO). Default for LCO and GRPO.
- `rloo`: leave-one-out baseline, r_i - mean of the other samples of the same prompt.

A group whose rewards are all equal (max == min) gets exactly 0 from `group` and `rloo`,
whatever the dtype: floating-point means of equal values are not always exact.
- `raw`: the reward itself (the paper's rule-reward setting, one sample per prompt).
- `gae`: per-token generalised advantage estimation with a value head (PPO).

    >>> group_advantages(torch.tensor([1., 0., 1., 1.]), group_size=2, scale="none").tolist()
    [0.5, -0.5, 0.0, 0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor


def equal_groups(grouped: Tensor) -> Tensor:
    """[G] True where every reward of a group (a row of `grouped`, [G, group_size]) is equal.

    Compared exactly (max == min), not as std == 0: the mean of eight 0.35s in float32 is
    not exactly 0.35, so the computed std of an all-equal group is a rounding residue
    (~1e-8), not 0."""
    return grouped.amax(-1) == grouped.amin(-1)


def group_advantages(
    rewards: Tensor, group_size: int, scale: str = "std", eps: float = 1e-6
) -> Tensor:
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(-1, keepdim=True)
    if scale == "std":
        # Population std over the group (unbiased=False).
        centred = centred / (grouped.std(-1, unbiased=False, keepdim=True) + eps)
    # A group of equal rewards carries no signal: exactly 0, not the mean's rounding residue
    # (divided by std + eps that residue is ~0.03 for eight 0.35s in float32).
    centred = centred.masked_fill(equal_groups(grouped).unsqueeze(-1), 0.0)
    return centred.reshape(-1)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    if group_size < 2:
        raise ValueError("rloo needs at least 2 samples per prompt")
    grouped = rewards.view(-1, group_size)
    others = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    # (sum - r) / (n - 1) need not round back to r: equal groups are set to exactly 0.
    advantages = (grouped - others).masked_fill(equal_groups(grouped).unsqueeze(-1), 0.0)
    return advantages.reshape(-1)


def sequence_advantages(
    rewards: Tensor, method: str, group_size: int, scale: str = "std"
) -> Tensor:
    """Per-sequence advantages for the group/rloo/raw estimators."""
    if method == "group":
        return group_advantages(rewards, group_size, scale)
    if method == "rloo":
        return rloo_advantages(rewards, group_size)
    if method == "raw":
        return rewards.clone()
    raise ValueError(f"unknown sequence advantage '{method}'")


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """GAE over response tokens with the sequence reward on the last token.

    rewards [B], values [B, T] (the value of each response position), mask [B, T] (1 on
    response tokens, left-aligned). Returns (advantages, returns), both [B, T], zero off
    the mask.
    """
    values = values * mask
    lengths = mask.sum(-1).long()
    token_rewards = torch.zeros_like(values)
    rows = torch.arange(values.shape[0])
    has_tokens = lengths > 0
    token_rewards[rows[has_tokens], lengths[has_tokens] - 1] = rewards[has_tokens].to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def whiten(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalise masked entries to zero mean and unit variance (PPO's advantage whitening)."""
    n = mask.sum().clamp_min(1)
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / n
    return (values - mean) * torch.rsqrt(var + eps) * mask
