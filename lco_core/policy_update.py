"""The policy update of an RL step: `ppo_epochs` passes over `mini_batches` minibatches of
the step's rollouts, one optimiser step each, through the fused chunked loss (`fused.py`).

`RLTrainer.train_step` runs it after the rollouts are graded and their advantages known;
`token_weights` says how much each token counts in its minibatch's loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lco_core import distributed
from lco_core.fused import chunked_loss
from lco_core.losses import TokenData
from lco_core.metrics import grad_norm, grad_norm_of
from lco_core.rollout_batch import Rollouts
from lco_spec.train_config import TrainConfig

if TYPE_CHECKING:
    from lco_core.rl import RLTrainer


def token_weights(
    cfg: TrainConfig, ro: Rollouts, seqs: Tensor, index: Tensor, adv: Tensor
) -> Tensor:
    """Aggregation weights of a minibatch's tokens (their weighted sum is its loss)."""
    n = len(index)
    if cfg.split_pos_neg:
        positive = adv > 0
        n_pos, n_neg = int(positive.sum()), n - int(positive.sum())
        return torch.where(positive, 1.0 / max(n_pos, 1), 1.0 / max(n_neg, 1))
    if cfg.token_aggregation == "sequence_mean":
        per_seq = 1.0 / (ro.lengths[seqs].clamp_min(1).float() * len(seqs))
        return torch.repeat_interleave(per_seq, ro.lengths[seqs])
    if cfg.token_aggregation == "constant":
        return torch.full((n,), 1.0 / (len(seqs) * cfg.max_completion_tokens))
    return torch.full((n,), 1.0 / max(n, 1))


def policy_update(
    trainer: RLTrainer,
    ro: Rollouts,
    old: dict[str, Tensor] | None,
    adv: Tensor,
    returns: Tensor | None,
    ref_logp: Tensor | None,
    *,
    split: bool,
) -> tuple[dict[str, float], Tensor]:
    """`ppo_epochs` passes over `mini_batches` minibatches, one optimiser step each, of
    `trainer`'s policy (and PPO value head) with its optimiser and loss config.

    A minibatch runs as micro-batches of `micro_batch_size` sequences whose gradients
    accumulate (the token weights are the whole minibatch's, so the step is the same as
    one pass; only the peak memory differs). `old` None means pi_old is the policy of
    this forward (one update per batch). With `split`, the gradients of the positive-
    and negative-advantage halves accumulate in two buffers to measure each one's norm
    (a second backward through the trunk and one more gradient-sized buffer).
    Returns the mean statistics and log pi(a) [N] as the first pass saw each token."""
    cfg = trainer.cfg
    distributed.reshard(trainer.model)  # list the parameters the optimiser holds
    policy_params = [p for p in trainer.model.parameters() if p.requires_grad]
    all_params = policy_params + (
        list(trainer.value_head.parameters()) if trainer.value_head else []
    )
    sums: dict[str, float] = {}
    updates = 0
    first_logp = torch.zeros(len(ro.tokens))
    weights = torch.zeros(len(ro.tokens))
    generator = torch.Generator().manual_seed(cfg.seed * 31 + trainer.step)
    # Mean grad norm of each pass over the batch: with a reused batch, how the gradient
    # changes as the policy moves away from pi_old (LCO fits a fixed target, so it shrinks).
    epoch_norms = [0.0] * cfg.ppo_epochs
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(len(ro.lengths), generator=generator)
        for seqs in order.chunk(cfg.mini_batches):
            minibatch = ro.token_index(seqs)
            weights[minibatch] = token_weights(cfg, ro, seqs, minibatch, adv[minibatch])
            neg_grads: list[Tensor | None] = [None] * len(policy_params)
            stats = {"loss": 0.0, "clipped": 0.0, "tokens": 0.0, "value_loss": 0.0}
            # With N ranks each runs 1/N of the minibatch (its weights are the whole one's).
            for micro in distributed.local_share(seqs).split(cfg.micro_batch_size):
                input_ids, attention, rows, cols, index = ro.pack(micro)
                h = trainer.hidden(trainer.base, input_ids, attention)[
                    rows.to(trainer.device), cols.to(trainer.device)
                ]
                data = TokenData(
                    tokens=ro.tokens[index],
                    advantages=adv[index],
                    weights=weights[index],
                    old_logprobs=old["logp"][index] if old else None,
                    old_logits=old["logit"][index] if old else None,
                    topk_ids=old["topk_ids"][index] if old and "topk_ids" in old else None,
                    topk_logprobs=(
                        old["topk_logprobs"][index] if old and "topk_logprobs" in old else None
                    ),
                    ref_logprobs=ref_logp[index] if ref_logp is not None else None,
                    # pi_old is this forward: the loss applies the importance weights.
                    engine_logprobs=(
                        ro.engine_logprobs[index]
                        if old is None and cfg.importance_cap is not None
                        else None
                    ),
                )
                data = data.map(lambda t: t.to(trainer.device))
                res = chunked_loss(
                    h,
                    trainer.head.weight,
                    trainer.head.bias,
                    data,
                    cfg.loss,
                    trainer.loss_cfg,
                    cfg.loss_chunk_size,
                    split=split,
                )
                if trainer.value_head is not None and returns is not None:
                    # Mean squared error over the minibatch's tokens, summed over micro-batches.
                    predicted = trainer.value_head(h.detach().float())[:, 0]
                    errors = (predicted - returns[index].to(trainer.device)).pow(2).sum()
                    value_loss = errors / len(minibatch)
                    (cfg.value_coef * value_loss).backward()
                    stats["value_loss"] += value_loss.item()
                if split:
                    res.pos.backward(retain_graph=True)
                    # Swap in the negative half's accumulator for its backward, then back.
                    for i, p in enumerate(policy_params):
                        p.grad, neg_grads[i] = neg_grads[i], p.grad
                    res.neg.backward()
                    for i, p in enumerate(policy_params):
                        p.grad, neg_grads[i] = neg_grads[i], p.grad
                else:
                    res.loss.backward()
                stats["loss"] += res.loss.item()
                stats["clipped"] += res.clipped
                stats["tokens"] += res.tokens
                if epoch == 0:
                    first_logp[index] = res.logp_a.float().cpu()
                    sums["entropy_sum"] = sums.get("entropy_sum", 0.0) + res.entropy_sum
                    sums["sampled_prob_sum"] = (
                        sums.get("sampled_prob_sum", 0.0) + res.sampled_prob_sum
                    )
            stats = distributed.sum_floats(stats)
            if split:
                norm_pos = grad_norm(policy_params)
                norm_neg = grad_norm_of([g for g in neg_grads if g is not None])
                for p, g in zip(policy_params, neg_grads, strict=True):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad.add_(g)
                sums["grad_norm_pos"] = sums.get("grad_norm_pos", 0.0) + norm_pos
                sums["grad_norm_neg"] = sums.get("grad_norm_neg", 0.0) + norm_neg
            norm = grad_norm(policy_params)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + norm
            epoch_norms[epoch] += norm / cfg.mini_batches
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(all_params, cfg.max_grad_norm)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            updates += 1
            sums["loss"] = sums.get("loss", 0.0) + stats["loss"]
            sums["clip_frac"] = sums.get("clip_frac", 0.0) + stats["clipped"] / max(
                stats["tokens"], 1
            )
            if trainer.value_head is not None:
                sums["value_loss"] = sums.get("value_loss", 0.0) + stats["value_loss"]
    n_tokens = max(len(ro.tokens), 1)
    if distributed.active():
        # Each token's first log pi was filled by the one rank that ran it.
        first_logp = distributed.sum_tensor(first_logp)
        sums.update(
            distributed.sum_floats(
                {k: sums.get(k, 0.0) for k in ("entropy_sum", "sampled_prob_sum")}
            )
        )
    metrics = {
        "entropy": sums.pop("entropy_sum", 0.0) / n_tokens,
        "sampled_prob": sums.pop("sampled_prob_sum", 0.0) / n_tokens,
        **{k: v / updates for k, v in sums.items()},
    }
    if cfg.ppo_epochs > 1:
        metrics["grad_norm_first_epoch"] = epoch_norms[0]
        metrics["grad_norm_last_epoch"] = epoch_norms[-1]
    if cfg.loss not in ("grpo", "ppo_clip"):
        metrics.pop("clip_frac", None)
    return metrics, first_logp
