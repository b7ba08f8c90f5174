"""The fused LM-head + policy-loss step: hidden states in, loss out, gradients precomputed.

For each chunk of tokens this projects the hidden states through the LM head, evaluates
the loss and its closed-form gradient with respect to the logits (`GRADS`), and turns
that into gradients for the hidden states and the head right away, then drops the
chunk's logits. Backward only scales those stored gradients. So no B x T x V tensor ever
exists, nothing of size V is kept per token, and no chunk is recomputed: peak memory is
one chunk's logits and time is three matmuls per chunk, for every loss alike.

The closed forms are those of the method doc (LCO-KLD: softmax(z) - pi*; LCO-MSE:
2(z - t); logcosh: tanh(z - t); ratio losses: the policy gradient through log pi(a));
`tests/test_losses.py` checks each against autograd over the definitions in `losses.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lco_core.losses import LOSSES, LossConfig, TokenData, _logit_target, lco_target


@dataclass
class ChunkOut:
    loss: Tensor  # [n] per-token loss
    dlogits: Tensor  # [n, V] d loss_i / d logits_i (may reuse the logits' storage)
    entropy: Tensor  # [n]
    logp_a: Tensor  # [n] log pi(a)
    clipped: Tensor | None = None  # [n] bool, ratio losses only


GradFn = Callable[[Tensor, TokenData, LossConfig], ChunkOut]
GRADS: dict[str, GradFn] = {}


def register(name: str) -> Callable[[GradFn], GradFn]:
    def add(fn: GradFn) -> GradFn:
        GRADS[name] = fn
        return fn

    return add


def _softmax(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(log p, p, entropy, log p(a)) for a chunk; `logits` is consumed."""
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    entropy = -torch.einsum("nv,nv->n", p, logp)
    return logp, p, entropy, logp.gather(-1, tokens[:, None])[:, 0]


def _through_logp_a(p: Tensor, tokens: Tensor, g: Tensor) -> Tensor:
    """d/dz of a loss whose gradient w.r.t. log p(a) is g: g * (onehot(a) - p), in p's storage."""
    d = p.mul_(-g[:, None])
    return d.scatter_add_(-1, tokens[:, None], g[:, None])


@register("lco_kld")
def _lco_kld(logits: Tensor, data: TokenData, cfg: LossConfig) -> ChunkOut:
    logp, p, entropy, logp_a = _softmax(logits, data.tokens)
    adv = data.advantages.to(logp.dtype)
    if cfg.old_source == "current" and cfg.vocab_advantage == "sampled":
        # pi_old = p and only a's logit moves by A/beta: pi* = p / Z except
        # pi*(a) = c p(a) / Z, with c = e^{A/beta}, Z = 1 + p(a)(c - 1). Scalars per token.
        c = torch.exp(adv / cfg.beta)
        p_a = logp_a.exp()
        z = 1 + p_a * (c - 1)
        loss = -torch.log(z) + (c * p_a / z) * (adv / cfg.beta)
        d = p.mul_((1 - 1 / z)[:, None])
        d.scatter_(-1, data.tokens[:, None], (p_a - c * p_a / z)[:, None])
        return ChunkOut(loss, d, entropy, logp_a)
    log_target = lco_target(logp, data, cfg)
    target = log_target.exp()
    loss = torch.einsum("nv,nv->n", target, log_target) - torch.einsum("nv,nv->n", target, logp)
    return ChunkOut(loss, p.sub_(target), entropy, logp_a)


def _sampled_logit_loss(
    logits: Tensor,
    data: TokenData,
    cfg: LossConfig,
    value_and_slope: Callable[[Tensor], tuple[Tensor, Tensor]],
) -> ChunkOut:
    z_a = logits.gather(-1, data.tokens[:, None])[:, 0]
    loss, slope = value_and_slope(z_a - _logit_target(z_a, data, cfg))
    _logp, p, entropy, logp_a = _softmax(logits, data.tokens)
    d = p.zero_().scatter_(-1, data.tokens[:, None], slope[:, None])
    return ChunkOut(loss, d, entropy, logp_a)


@register("lco_mse")
def _lco_mse(logits: Tensor, data: TokenData, cfg: LossConfig) -> ChunkOut:
    return _sampled_logit_loss(logits, data, cfg, lambda x: (x * x, 2 * x))


@register("lco_logcosh")
def _lco_logcosh(logits: Tensor, data: TokenData, cfg: LossConfig) -> ChunkOut:
    log2 = torch.log(torch.tensor(2.0, dtype=logits.dtype))
    return _sampled_logit_loss(
        logits, data, cfg, lambda x: (x + F.softplus(-2 * x) - log2, torch.tanh(x))
    )


@register("sft")
def _sft(logits: Tensor, data: TokenData, cfg: LossConfig) -> ChunkOut:
    _logp, p, entropy, logp_a = _softmax(logits, data.tokens)
    return ChunkOut(
        -logp_a, _through_logp_a(p, data.tokens, -torch.ones_like(logp_a)), entropy, logp_a
    )


@register("reinforce")
def _reinforce(logits: Tensor, data: TokenData, cfg: LossConfig) -> ChunkOut:
    logp, p, entropy, logp_a = _softmax(logits, data.tokens)
    adv = data.advantages.to(logp.dtype)
    return ChunkOut(-adv * logp_a, _through_logp_a(p, data.tokens, -adv), entropy, logp_a)


def _ratio_loss(logits: Tensor, data: TokenData, cfg: LossConfig, kl_coef: float) -> ChunkOut:
    logp, p, entropy, logp_a = _softmax(logits, data.tokens)
    adv = data.advantages.to(logp.dtype)
    assert data.old_logprobs is not None  # filled from the chunk's logits when None
    ratio = torch.exp(logp_a - data.old_logprobs.to(logp.dtype))
    high = cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high
    unclipped, clipped = -ratio * adv, -ratio.clamp(1 - cfg.clip_eps, 1 + high) * adv
    bound = clipped > unclipped  # the clipped branch is the max only when the clip binds
    loss = torch.maximum(unclipped, clipped)
    g = torch.where(bound, torch.zeros_like(ratio), -adv * ratio)
    if kl_coef > 0:
        if data.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs reference logprobs")
        log_r = data.ref_logprobs.to(logp.dtype) - logp_a
        loss = loss + kl_coef * (torch.exp(log_r) - log_r - 1)
        g = g + kl_coef * (1 - torch.exp(log_r))
    return ChunkOut(loss, _through_logp_a(p, data.tokens, g), entropy, logp_a, bound)


@register("ppo_clip")
def _ppo_clip(logits: Tensor, data: TokenData, cfg: LossConfig) -> ChunkOut:
    return _ratio_loss(logits, data, cfg, 0.0)


@register("grpo")
def _grpo(logits: Tensor, data: TokenData, cfg: LossConfig) -> ChunkOut:
    return _ratio_loss(logits, data, cfg, cfg.kl_coef)


assert set(GRADS) == set(LOSSES), "every loss needs its closed-form gradient"


@dataclass
class LossResult:
    """The minibatch loss, also split by the sign of the advantage (loss = pos + neg), so
    the caller can backward each half to measure its gradient norm; plus token statistics."""

    loss: Tensor
    pos: Tensor
    neg: Tensor
    entropy_sum: float
    sampled_prob_sum: float
    clipped: int
    tokens: int
    logp_a: Tensor  # [N] log pi(a) under the forward's policy, detached


class _FusedHeadLoss(torch.autograd.Function):
    """(hidden [N, H], head weight [V, H], bias) -> (loss on A > 0 tokens, loss on the rest)."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        data: TokenData,
        name: str,
        cfg: LossConfig,
        chunk_size: int,
        split: bool,
        stats: dict[str, Any],
    ) -> tuple[Tensor, Tensor]:
        grad_fn = GRADS[name]
        # At least float32 for the softmax and the target (bf16 is too coarse over a large
        # vocabulary); float64 inputs stay float64.
        acc = torch.promote_types(hidden.dtype, torch.float32)
        halves = 2 if split else 1
        d_hidden = [torch.zeros_like(hidden) for _ in range(halves)]
        # A frozen head (LoRA, or a head left out of training) needs no [V, H] gradient:
        # skipping it saves a matmul per chunk and a head-sized buffer (113 MB on SmolLM2).
        train_head = ctx.needs_input_grad[1]
        d_weight = (
            [torch.zeros_like(weight, dtype=acc) for _ in range(halves)] if train_head else []
        )
        d_bias = (
            [torch.zeros_like(bias, dtype=acc) for _ in range(halves)]
            if bias is not None and ctx.needs_input_grad[2]
            else None
        )
        totals = torch.zeros(2, dtype=torch.float64, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(start + chunk_size, hidden.shape[0])
            h, part = hidden[start:end], data.slice(start, end)
            logits = F.linear(h, weight.to(h.dtype), bias).to(acc)
            if part.old_logprobs is None:
                z_a = logits.gather(-1, part.tokens[:, None])[:, 0]
                old_logp = z_a - logits.logsumexp(-1)
                part = replace(part, old_logprobs=old_logp, old_logits=z_a)
                if cfg.importance_cap is not None and part.engine_logprobs is not None:
                    # Truncated importance sampling with this forward as pi_old: no separate pass.
                    tis = (old_logp - part.engine_logprobs.to(acc)).exp()
                    tis = tis.clamp(max=cfg.importance_cap)
                    part = replace(part, advantages=part.advantages * tis.to(part.advantages.dtype))
            out = grad_fn(logits, part, cfg)
            w = part.weights.to(out.loss.dtype)
            positive = part.advantages > 0
            weighted = out.loss * w
            totals[0] += weighted[positive].sum()
            totals[1] += weighted[~positive].sum()
            d = out.dlogits.mul_(w[:, None])
            masks = [positive, ~positive] if split else [None]
            for i, mask in enumerate(masks):
                rows = d if mask is None else d[mask]
                hs = h if mask is None else h[mask]
                dh = rows.to(h.dtype) @ weight.to(h.dtype)
                if mask is None:
                    d_hidden[i][start:end] = dh
                else:
                    d_hidden[i][start:end][mask] = dh
                if d_weight:
                    d_weight[i] += rows.T @ hs.to(acc)
                if d_bias is not None:
                    d_bias[i] += rows.sum(0)
            stats["entropy_sum"] += float(out.entropy.sum())
            stats["sampled_prob_sum"] += float(out.logp_a.exp().sum())
            stats["clipped"] += int(out.clipped.sum()) if out.clipped is not None else 0
            stats["logp_a"].append(out.logp_a.detach())
        ctx.split = split
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.has_weight = bool(d_weight)
        ctx.has_bias = d_bias is not None
        ctx.save_for_backward(*d_hidden, *d_weight, *(d_bias or []))
        return totals[0].float(), totals[1].float()

    @staticmethod
    def backward(ctx: Any, g_pos: Tensor, g_neg: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        halves = 2 if ctx.split else 1
        d_hidden = saved[:halves]
        d_weight = saved[halves : 2 * halves] if ctx.has_weight else None
        d_bias = saved[halves + len(d_weight or ()) :] if ctx.has_bias else None
        if not ctx.split and not torch.equal(g_pos, g_neg):
            raise RuntimeError("backward the halves separately only with split=True")
        scales = [g_pos, g_neg] if ctx.split else [g_pos]

        def combine(parts: tuple[Tensor, ...], dtype: torch.dtype) -> Tensor:
            # One temporary per half (no zeros buffer): these can be head-sized.
            out = scales[0].to(parts[0].dtype) * parts[0]
            for s, p in zip(scales[1:], parts[1:], strict=True):
                out.add_(s.to(p.dtype) * p)
            return out.to(dtype)

        return (
            combine(d_hidden, d_hidden[0].dtype),
            combine(d_weight, ctx.weight_dtype) if d_weight else None,
            combine(d_bias, ctx.bias_dtype) if d_bias else None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def chunked_loss(
    hidden: Tensor,
    head_weight: Tensor,
    head_bias: Tensor | None,
    data: TokenData,
    name: str,
    cfg: LossConfig,
    chunk_size: int = 1024,
    split: bool = False,
) -> LossResult:
    """Sum over N tokens of `weights * loss(name)`, from hidden states [N, H].

    With `split`, `pos` and `neg` can be backpropagated separately (two gradient buffers);
    otherwise backward `loss` only."""
    if name not in GRADS:
        raise ValueError(f"unknown loss '{name}'; known: {', '.join(sorted(GRADS))}")
    stats: dict[str, Any] = {
        "entropy_sum": 0.0,
        "sampled_prob_sum": 0.0,
        "clipped": 0.0,
        "logp_a": [],
    }
    pos, neg = _FusedHeadLoss.apply(
        hidden, head_weight, head_bias, data, name, cfg, chunk_size, split, stats
    )
    logp_a = stats["logp_a"]
    return LossResult(
        pos + neg,
        pos,
        neg,
        stats["entropy_sum"],
        stats["sampled_prob_sum"],
        int(stats["clipped"]),
        hidden.shape[0],
        torch.cat(logp_a) if logp_a else hidden.new_zeros(0),
    )
