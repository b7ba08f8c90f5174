"""A step's rollouts as tensors (`Rollouts`, from the engine's completions by
`build_rollouts`), and the few of them a step shows people (`rollout_samples`).

`Rollouts.pack` cuts minibatches of sequences out of it for the trainer's forwards, and
`token_index` finds their response tokens in the flat per-token tensors (logprobs,
advantages, weights) that the RL step keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lco_core.rollout import Completion


@dataclass
class Rollouts:
    """S = prompts x samples sequences, right-padded, and their N response tokens
    flattened in sequence order (sequence s owns tokens offsets[s]:offsets[s+1])."""

    input_ids: Tensor  # [S, T]
    attention_mask: Tensor  # [S, T]
    prompt_lens: Tensor  # [S]
    lengths: Tensor  # [S] response tokens per sequence
    offsets: Tensor  # [S + 1]
    tokens: Tensor  # [N]
    engine_logprobs: Tensor  # [N]

    def seq_of_token(self) -> Tensor:
        return torch.repeat_interleave(torch.arange(len(self.lengths)), self.lengths)

    def _within(self, seqs: Tensor) -> tuple[Tensor, Tensor]:
        """(lengths of `seqs`, each of their response tokens' position within its sequence)."""
        lengths = self.lengths[seqs]
        within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        return lengths, within

    def token_index(self, seqs: Tensor) -> Tensor:
        """The flat indices of the response tokens of sequences `seqs`, in their order."""
        lengths, within = self._within(seqs)
        return torch.repeat_interleave(self.offsets[seqs], lengths) + within

    def pack(self, seqs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """A minibatch of sequences: (input_ids, attention_mask, rows, cols, token_index),
        where hidden[rows, cols] are the states that predict tokens[token_index]."""
        lengths, within = self._within(seqs)
        width = int((self.prompt_lens[seqs] + lengths).max())
        rows = torch.repeat_interleave(torch.arange(len(seqs)), lengths)
        cols = torch.repeat_interleave(self.prompt_lens[seqs] - 1, lengths) + within
        return (
            self.input_ids[seqs, :width],
            self.attention_mask[seqs, :width],
            rows,
            cols,
            torch.repeat_interleave(self.offsets[seqs], lengths) + within,
        )


def build_rollouts(
    prompts: list[list[int]], groups: list[list[Completion]], pad_id: int
) -> Rollouts:
    seqs = [(p, c) for p, group in zip(prompts, groups, strict=True) for c in group]
    width = max(len(p) + len(c.token_ids) for p, c in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, c) in enumerate(seqs):
        ids = p + c.token_ids
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
    lengths = torch.tensor([len(c.token_ids) for _, c in seqs])
    return Rollouts(
        input_ids=input_ids,
        attention_mask=attention,
        prompt_lens=torch.tensor([len(p) for p, _ in seqs]),
        lengths=lengths,
        offsets=torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)]),
        tokens=torch.tensor([t for _, c in seqs for t in c.token_ids], dtype=torch.long),
        engine_logprobs=torch.tensor(
            [lp for _, c in seqs for lp in c.logprobs], dtype=torch.float32
        ),
    )


# Rollouts per step shown to people (dashboard, `.../samples`): the first completion of the
# first few prompts, cut to a readable length.
SAMPLES_PER_STEP = 4
SAMPLE_CHARS = 2000


def rollout_samples(
    items: list[dict[str, Any]], groups: list[list[Completion]], rewards: Tensor
) -> list[dict[str, Any]]:
    """`{"prompt", "completion", "reward"}` for the first completion of the first prompts."""
    n_samples = len(groups[0]) if groups else 1
    out = []
    for i, (item, group) in enumerate(zip(items[:SAMPLES_PER_STEP], groups, strict=False)):
        prompt = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in item["messages"])
        out.append(
            {
                "prompt": prompt[:SAMPLE_CHARS],
                "completion": group[0].text[:SAMPLE_CHARS],
                "reward": float(rewards[i * n_samples]),
            }
        )
    return out
