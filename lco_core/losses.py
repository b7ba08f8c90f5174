"""Policy losses over full-vocabulary logits, computed in token chunks.

Every loss is a per-token function `(logits [n, V], TokenData, LossConfig) -> [n]` in a
registry (`LOSSES`), so LCO and the baselines run through one driver on the same data:

| name          | per-token loss                               | d loss / d logits          |
|---------------|----------------------------------------------|----------------------------|
| `lco_kld`     | KL(pi* || softmax(z)), pi* ∝ pi_old e^{A/β}   | softmax(z) - pi*           |
| `lco_mse`     | (z_a - t)^2, t = z_old,a + A/β                | 2 (z_a - t) on a           |
| `lco_logcosh` | logcosh(z_a - t)                             | tanh(z_a - t) on a         |
| `reinforce`   | -A log pi(a)                                 |                            |
| `grpo`        | clipped ratio surrogate (+ k3 KL to a ref)   |                            |
| `ppo_clip`    | clipped ratio surrogate (GAE advantages)     |                            |
| `sft`         | -log pi(a)                                   | softmax(z) - onehot(a)     |

These autograd definitions are the specification: `fused.py` computes the same values
with closed-form gradients one chunk of tokens at a time (so no B x T x V tensor exists),
and the tests hold the two to each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class TokenData:
    """Per-response-token tensors, flattened over a minibatch (N tokens)."""

    tokens: Tensor  # [N] sampled token ids a
    advantages: Tensor  # [N]
    weights: Tensor  # [N] aggregation weights: sum_i w_i * loss_i is the minibatch loss
    # [N] log pi_old(a) and the raw logit z_old(a) (the MSE/logcosh target base). None in
    # the fused loss means pi_old is the policy of this very forward (one update per batch):
    # they are read off its logits, detached, so no separate forward computes them.
    old_logprobs: Tensor | None  # [N]
    old_logits: Tensor | None  # [N]
    topk_ids: Tensor | None = None  # [N, k] pi_old's top-k ids, when pi_old must be stored
    topk_logprobs: Tensor | None = None  # [N, k]
    ref_logprobs: Tensor | None = None  # [N] log pi_ref(a) for the k3 KL penalty
    # [N] log pi_engine(a), the rollout engine's logprob of the sampled token. With
    # `LossConfig.importance_cap` and pi_old read off this forward, the fused loss weights each
    # token's advantage by min(pi_old(a) / pi_engine(a), cap) (truncated importance sampling).
    engine_logprobs: Tensor | None = None

    def map(self, fn: Callable[[Tensor], Tensor]) -> TokenData:
        """Apply `fn` to every tensor present (slicing, moving to a device)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return TokenData(**{k: None if v is None else fn(v) for k, v in values.items()})  # type: ignore[arg-type]

    def slice(self, start: int, end: int) -> TokenData:
        return self.map(lambda t: t[start:end])


@dataclass(frozen=True)
class LossConfig:
    beta: float = 2.0
    vocab_advantage: Literal["sampled", "estimate"] = "sampled"
    target_base: Literal["old", "current"] = "old"
    # "current": pi_old is the current policy, detached (exact with one update per batch);
    # "topk": rebuilt from stored top-k old logprobs plus the tail mass.
    old_source: Literal["current", "topk"] = "current"
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    kl_coef: float = 0.0
    importance_cap: float | None = None  # see TokenData.engine_logprobs


TokenLoss = Callable[[Tensor, TokenData, LossConfig], Tensor]
LOSSES: dict[str, TokenLoss] = {}


def register(name: str) -> Callable[[TokenLoss], TokenLoss]:
    def add(fn: TokenLoss) -> TokenLoss:
        LOSSES[name] = fn
        return fn

    return add


def get_loss(name: str) -> TokenLoss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}'; known: {', '.join(sorted(LOSSES))}") from None


def _sampled(values: Tensor, tokens: Tensor) -> Tensor:
    return values.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def old_log_distribution(logp: Tensor, data: TokenData, source: str) -> Tensor:
    """log pi_old over the vocabulary for a chunk, [n, V], detached."""
    current = logp.detach()
    if source == "current":
        return current
    if data.topk_ids is None or data.topk_logprobs is None:
        raise ValueError("old_source 'topk' needs stored top-k old logprobs")
    # Known entries: pi_old's top-k plus the sampled token. The tail keeps its stored total
    # mass, spread like the current policy's tail (never -100 logits, which would sharpen
    # the target towards the top-k).
    known = torch.full_like(current, float("-inf"))
    known.scatter_(-1, data.topk_ids, data.topk_logprobs.to(current.dtype))
    assert data.old_logprobs is not None, "the top-k old distribution needs log pi_old(a)"
    known.scatter_(-1, data.tokens.unsqueeze(-1), data.old_logprobs.to(current.dtype).unsqueeze(-1))
    is_known = torch.isfinite(known)
    tail_mass = (1 - known.exp().sum(-1)).clamp_min(1e-12)
    tail_current = current.exp().masked_fill(is_known, 0).sum(-1).clamp_min(1e-12)
    tail = current + (tail_mass.log() - tail_current.log()).unsqueeze(-1)
    return torch.where(is_known, known, tail)


def vocab_advantages(log_old: Tensor, data: TokenData, mode: str) -> Tensor:
    """A(s, v) over the vocabulary, [n, V]: the sampled token's advantage, and for
    `estimate` the unknown entries filled so that E_{pi_old}[A] = 0 (for p(a) < 0.9)."""
    adv = data.advantages.to(log_old.dtype)
    out = torch.zeros_like(log_old)
    if mode == "sampled":
        return out.scatter_(-1, data.tokens.unsqueeze(-1), adv.unsqueeze(-1))
    p = _sampled(log_old, data.tokens).exp()
    known = adv * (1 - p)
    fill = -(p * known) / (1 - p).clamp_min(0.1)
    out += fill.unsqueeze(-1)
    return out.scatter_(-1, data.tokens.unsqueeze(-1), known.unsqueeze(-1))


def lco_target(logp: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    """log pi* = log_softmax(log pi_old + A/β), [n, V], detached."""
    log_old = old_log_distribution(logp, data, cfg.old_source)
    return torch.log_softmax(
        log_old + vocab_advantages(log_old, data, cfg.vocab_advantage) / cfg.beta, -1
    )


@register("lco_kld")
def lco_kld(logits: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    logp = torch.log_softmax(logits, -1)
    log_target = lco_target(logp, data, cfg)
    return (log_target.exp() * (log_target - logp)).sum(-1)


def _logit_target(logits_a: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    if cfg.target_base == "old":
        assert data.old_logits is not None, "target_base 'old' needs z_old(a)"
        base = data.old_logits.to(logits_a.dtype)
    else:
        base = logits_a.detach()
    return base + data.advantages.to(logits_a.dtype) / cfg.beta


@register("lco_mse")
def lco_mse(logits: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    z = _sampled(logits, data.tokens)
    return (z - _logit_target(z, data, cfg)) ** 2


@register("lco_logcosh")
def lco_logcosh(logits: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    z = _sampled(logits, data.tokens)
    x = z - _logit_target(z, data, cfg)
    # logcosh(x) = x + softplus(-2x) - log 2, stable for large |x|.
    return x + F.softplus(-2 * x) - torch.log(torch.tensor(2.0, dtype=x.dtype))


@register("reinforce")
def reinforce(logits: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    logp_a = _sampled(torch.log_softmax(logits, -1), data.tokens)
    return -data.advantages.to(logp_a.dtype) * logp_a


@register("sft")
def sft(logits: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    return -_sampled(torch.log_softmax(logits, -1), data.tokens)


def clipped_surrogate(logp_a: Tensor, data: TokenData, cfg: LossConfig) -> tuple[Tensor, Tensor]:
    """PPO's clipped objective (negated) and which tokens the clip bound."""
    adv = data.advantages.to(logp_a.dtype)
    assert data.old_logprobs is not None, "the ratio needs log pi_old(a)"
    ratio = torch.exp(logp_a - data.old_logprobs.to(logp_a.dtype))
    high = cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high
    clipped = ratio.clamp(1 - cfg.clip_eps, 1 + high)
    unclipped_loss, clipped_loss = -ratio * adv, -clipped * adv
    return torch.maximum(unclipped_loss, clipped_loss), (clipped_loss > unclipped_loss)


@register("ppo_clip")
def ppo_clip(logits: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    logp_a = _sampled(torch.log_softmax(logits, -1), data.tokens)
    return clipped_surrogate(logp_a, data, cfg)[0]


@register("grpo")
def grpo(logits: Tensor, data: TokenData, cfg: LossConfig) -> Tensor:
    logp_a = _sampled(torch.log_softmax(logits, -1), data.tokens)
    loss = clipped_surrogate(logp_a, data, cfg)[0]
    if cfg.kl_coef > 0:
        if data.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs reference logprobs")
        log_r = data.ref_logprobs.to(logp_a.dtype) - logp_a
        loss = loss + cfg.kl_coef * (torch.exp(log_r) - log_r - 1)  # k3, unbiased, >= 0
    return loss
