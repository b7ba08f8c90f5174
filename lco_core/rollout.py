"""The rollout-engine interface: prompts in, sampled completions with token logprobs out.

Implementations: `hf_engine.HFEngine` (transformers `generate`) and the vLLM engine. The
trainer only sees this interface, so engines are swappable per job (`rollout_engine`).
Logprobs are those of the raw model distribution (before temperature/top-p), so they are
comparable with the trainer's recomputed logprobs (the mismatch metric).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int | None = None
    greedy: bool = False


def check_request(prompts: Sequence[list[int]], params: SamplingParams) -> None:
    """Raise ValueError for a request no engine can serve (both engines call it first, so
    they refuse exactly the same requests with the same messages)."""
    if params.n < 1 or params.max_tokens < 1:
        raise ValueError("n and max_tokens must be >= 1")
    if not params.greedy and not (params.temperature > 0 and 0 < params.top_p <= 1):
        raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: Literal["stop", "length"]


class RolloutEngine(Protocol):
    name: str

    def generate(
        self, prompts: Sequence[list[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """For each prompt (token ids), `params.n` completions (EOS not included in token_ids
        unless it was sampled: then it is the last id and finish_reason is "stop")."""
        ...

    def sync_weights(self, model: PreTrainedModel) -> None:
        """Make the engine sample from `model`'s current weights."""
        ...

    def close(self) -> None: ...
