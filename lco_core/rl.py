"""The RL loop: rollout -> grade -> advantages -> policy update -> metrics, one step at a time.

Read `RLTrainer.train_step` top to bottom to see a whole step. LCO and the baselines share
everything here; they differ only in the per-token loss (`losses.py`) and the advantage
estimator (`advantages.py`). With one update per rollout batch, pi_old is the current
policy (detached). With several (`ppo_epochs` or `mini_batches` > 1), pi_old's top-k
logprobs plus its tail mass are stored before the first update, so LCO's target stays
the one the rollouts were drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from lco_core.advantages import equal_groups, gae_advantages, sequence_advantages, whiten
from lco_core.data import encode_prompt, example_indices
from lco_core.fused import chunked_loss
from lco_core.losses import LossConfig, TokenData
from lco_core.metrics import PhaseTimer, grad_norm, grad_norm_of, peak_memory_mb
from lco_core.rollout import Completion, RolloutEngine, SamplingParams
from lco_core.trainer import Trainer, TrainerInputs, trunk_and_head
from lco_spec.graders import GraderError, build_grader
from lco_spec.train_config import TrainConfig


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


def k3(log_ratio: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL from samples: r - 1 - log r, with r = p_other / p_sampler."""
    return torch.exp(log_ratio) - 1 - log_ratio


class RLTrainer(Trainer):
    def __init__(
        self,
        cfg: TrainConfig,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        grader_spec: Any,
        engine: RolloutEngine,
        ref_model: PreTrainedModel | None,
        **inputs: Unpack[TrainerInputs],
    ) -> None:
        hidden_size = trunk_and_head(model)[1].weight.shape[1]
        # PPO's value head reads the policy's hidden states detached, so value errors never
        # push the shared trunk: the policy sees exactly the gradients of its loss.
        self.value_head: torch.nn.Linear | None = None
        if cfg.algorithm == "ppo":
            # Zero-initialised (values start at 0) so that a run does not depend on the global
            # RNG state at construction: resumed and uninterrupted runs stay identical.
            self.value_head = torch.nn.Linear(hidden_size, 1).to(inputs["device"])
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
        extra = list(self.value_head.parameters()) if self.value_head else None
        super().__init__(cfg, model, tokenizer, extra_params=extra, **inputs)
        cfg = self.cfg
        self.grader = build_grader(grader_spec)
        self.engine = engine
        self.ref_model = ref_model
        self.loss_cfg = LossConfig(
            beta=cfg.beta,
            vocab_advantage=cfg.vocab_advantage,
            target_base=cfg.target_base,
            old_source="current" if cfg.updates_per_batch == 1 else "topk",
            clip_eps=cfg.clip_eps,
            clip_eps_high=cfg.clip_eps_high,
            kl_coef=cfg.kl_coef,
            importance_cap=cfg.importance_cap,
        )
        self.store_topk = cfg.updates_per_batch > 1 and cfg.loss == "lco_kld"
        # pi_old needs its own forward before the update only when several updates reuse the
        # batch or PPO needs values for GAE; otherwise the update's forward is pi_old (TRL
        # does the same), and the importance weights are taken there too (`fused.py`).
        self.separate_old_pass = cfg.updates_per_batch > 1 or self.value_head is not None
        self._prompt_cache: dict[int, list[int]] = {}

    # -- pieces of a step -------------------------------------------------------------
    def prepare_data(self) -> int:
        # The longest of the first 512 prompts plus the completion budget.
        longest = max(len(encode_prompt(self.tokenizer, i["messages"])) for i in self.items[:512])
        return longest + self.cfg.max_completion_tokens

    def prompt(self, index: int, items: list[dict[str, Any]] | None = None) -> list[int]:
        if items is not None:
            return encode_prompt(self.tokenizer, items[index]["messages"])
        if index not in self._prompt_cache:
            self._prompt_cache[index] = encode_prompt(self.tokenizer, self.items[index]["messages"])
        return self._prompt_cache[index]

    def grade(
        self, items: list[dict[str, Any]], groups: list[list[Completion]]
    ) -> tuple[Tensor, dict[str, float]]:
        """Rewards [S]; a grader error gives that sample 0 and is counted, never raised."""
        rewards, errors = [], 0
        sub: dict[str, list[float]] = {}
        for item, group in zip(items, groups, strict=True):
            for completion in group:
                try:
                    result = self.grader.grade(completion.text, item)
                except GraderError:
                    errors += 1
                    rewards.append(0.0)
                    continue
                rewards.append(result.score)
                for name, value in result.sub_scores.items():
                    sub.setdefault(name, []).append(value)
        stats = {f"reward_{name}_mean": sum(v) / len(v) for name, v in sub.items() if len(sub) > 1}
        stats["grader_errors"] = float(errors)
        return torch.tensor(rewards, dtype=torch.float32), stats

    @torch.no_grad()
    def token_logprobs(
        self, model: PreTrainedModel, ro: Rollouts, *, full: bool
    ) -> dict[str, Tensor]:
        """log pi(a) for every response token (and with `full`, the raw logit of a, entropy,
        top-k old logprobs and PPO values), computed in chunks of tokens."""
        base, head = trunk_and_head(model)
        out: dict[str, list[Tensor]] = {}
        chunk = self.cfg.loss_chunk_size
        for seqs in torch.arange(len(ro.lengths)).split(self.cfg.micro_batch_size):
            input_ids, attention, rows, cols, index = ro.pack(seqs)
            h = self.hidden(base, input_ids, attention)[rows.to(self.device), cols.to(self.device)]
            tokens = ro.tokens[index].to(self.device)
            for start in range(0, len(tokens), chunk):
                hc, tc = h[start : start + chunk], tokens[start : start + chunk]
                logits = F.linear(hc, head.weight, head.bias).float()
                logp = torch.log_softmax(logits, -1)
                out.setdefault("logp", []).append(logp.gather(-1, tc[:, None])[:, 0])
                if not full:
                    continue
                out.setdefault("logit", []).append(logits.gather(-1, tc[:, None])[:, 0])
                out.setdefault("entropy", []).append(-(logp.exp() * logp).sum(-1))
                if self.store_topk:
                    top = logp.topk(min(self.cfg.topk_old, logp.shape[-1]), -1)
                    out.setdefault("topk_ids", []).append(top.indices)
                    out.setdefault("topk_logprobs", []).append(top.values)
                if self.value_head is not None:
                    out.setdefault("values", []).append(self.value_head(hc.float())[:, 0])
        return {k: torch.cat(v).cpu() for k, v in out.items()}

    def advantages(
        self, ro: Rollouts, rewards: Tensor, values: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Per-token advantages [N] (and PPO returns [N])."""
        cfg = self.cfg
        if cfg.advantage != "gae":
            per_seq = sequence_advantages(
                rewards, cfg.advantage, cfg.n_samples, cfg.advantage_scale
            )
            return per_seq[ro.seq_of_token()], None
        assert values is not None
        width = int(ro.lengths.max())
        mask = (torch.arange(width)[None, :] < ro.lengths[:, None]).float()
        dense = torch.zeros_like(mask)
        dense[mask.bool()] = values
        adv, returns = gae_advantages(rewards, dense, mask, cfg.gamma, cfg.gae_lambda)
        return whiten(adv, mask)[mask.bool()], returns[mask.bool()]

    def token_weights(self, ro: Rollouts, seqs: Tensor, index: Tensor, adv: Tensor) -> Tensor:
        """Aggregation weights of a minibatch's tokens (their weighted sum is its loss)."""
        cfg = self.cfg
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

    def update(
        self,
        ro: Rollouts,
        old: dict[str, Tensor] | None,
        adv: Tensor,
        returns: Tensor | None,
        ref_logp: Tensor | None,
        *,
        split: bool,
    ) -> tuple[dict[str, float], Tensor]:
        """`ppo_epochs` passes over `mini_batches` minibatches, one optimiser step each.

        A minibatch runs as micro-batches of `micro_batch_size` sequences whose gradients
        accumulate (the token weights are the whole minibatch's, so the step is the same as
        one pass; only the peak memory differs). `old` None means pi_old is the policy of
        this forward (one update per batch). With `split`, the gradients of the positive-
        and negative-advantage halves accumulate in two buffers to measure each one's norm
        (a second backward through the trunk and one more gradient-sized buffer).
        Returns the mean statistics and log pi(a) [N] as the first pass saw each token."""
        cfg = self.cfg
        policy_params = [p for p in self.model.parameters() if p.requires_grad]
        all_params = policy_params + (list(self.value_head.parameters()) if self.value_head else [])
        sums: dict[str, float] = {}
        updates = 0
        first_logp = torch.zeros(len(ro.tokens))
        weights = torch.zeros(len(ro.tokens))
        generator = torch.Generator().manual_seed(cfg.seed * 31 + self.step)
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(len(ro.lengths), generator=generator)
            for seqs in order.chunk(cfg.mini_batches):
                minibatch = ro.token_index(seqs)
                weights[minibatch] = self.token_weights(ro, seqs, minibatch, adv[minibatch])
                neg_grads: list[Tensor | None] = [None] * len(policy_params)
                stats = {"loss": 0.0, "clipped": 0.0, "tokens": 0.0, "value_loss": 0.0}
                for micro in seqs.split(cfg.micro_batch_size):
                    input_ids, attention, rows, cols, index = ro.pack(micro)
                    h = self.hidden(self.base, input_ids, attention)[
                        rows.to(self.device), cols.to(self.device)
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
                    data = data.map(lambda t: t.to(self.device))
                    res = chunked_loss(
                        h,
                        self.head.weight,
                        self.head.bias,
                        data,
                        cfg.loss,
                        self.loss_cfg,
                        cfg.loss_chunk_size,
                        split=split,
                    )
                    if self.value_head is not None and returns is not None:
                        # Mean squared error over the minibatch's tokens, summed over micro-batches.
                        predicted = self.value_head(h.detach().float())[:, 0]
                        errors = (predicted - returns[index].to(self.device)).pow(2).sum()
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
                if split:
                    norm_pos = grad_norm(policy_params)
                    norm_neg = grad_norm_of([g for g in neg_grads if g is not None])
                    for p, g in zip(policy_params, neg_grads, strict=True):
                        if g is not None:
                            p.grad = g if p.grad is None else p.grad.add_(g)
                    sums["grad_norm_pos"] = sums.get("grad_norm_pos", 0.0) + norm_pos
                    sums["grad_norm_neg"] = sums.get("grad_norm_neg", 0.0) + norm_neg
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm(policy_params)
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(all_params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                updates += 1
                sums["loss"] = sums.get("loss", 0.0) + stats["loss"]
                sums["clip_frac"] = sums.get("clip_frac", 0.0) + stats["clipped"] / max(
                    stats["tokens"], 1
                )
                if self.value_head is not None:
                    sums["value_loss"] = sums.get("value_loss", 0.0) + stats["value_loss"]
        n_tokens = max(len(ro.tokens), 1)
        metrics = {
            "entropy": sums.pop("entropy_sum", 0.0) / n_tokens,
            "sampled_prob": sums.pop("sampled_prob_sum", 0.0) / n_tokens,
            **{k: v / updates for k, v in sums.items()},
        }
        if cfg.loss not in ("grpo", "ppo_clip"):
            metrics.pop("clip_frac", None)
        return metrics, first_logp

    def check_signal(self, step: int, no_signal: bool, rewards: Tensor) -> None:
        """Warn when a step's advantages are all zero (every group's samples scored the same):
        its policy-gradient term is zero, so only the KL terms move the policy. Said once, at
        the first such step, then counted in the summary and totalled after the last step.
        The count lives in `summary`, so a resumed run neither forgets nor repeats it."""
        count = self.summary.get("no_signal_steps", 0.0) + no_signal
        self.summary["no_signal_steps"] = count
        if no_signal and count == 1:
            self.callbacks.on_event(
                "warn",
                f"step {step} had no learning signal: every sample of each prompt got the "
                f"same reward ({float(rewards.mean()):.4g} on average), so all advantages are "
                "zero; check the grader against the data (a total follows at the end)",
                {"step": step, "reward_mean": float(rewards.mean())},
            )
        if step == self.cfg.total_steps and count:
            self.callbacks.on_event(
                "warn",
                f"{count:.0f} of {step} steps had no reward variance: no learning signal",
                {"step": step, "no_signal_steps": count, "steps": step},
            )

    # -- the step -----------------------------------------------------------------------
    def step_batch(self, step: int) -> tuple[list[dict[str, Any]], list[list[int]], SamplingParams]:
        """Step `step`'s items, their prompt ids and the sampling parameters: a pure function
        of the seed and the step, so a resumed run (or a benchmark) draws the same rollouts."""
        cfg = self.cfg
        indices = example_indices(
            cfg.seed, len(self.items), (step - 1) * cfg.batch_size, cfg.batch_size
        )
        params = SamplingParams(
            n=cfg.n_samples,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_completion_tokens,
            seed=cfg.seed * 1_000_003 + step,
        )
        return [self.items[i] for i in indices], [self.prompt(i) for i in indices], params

    def importance_weights(self, old_logp: Tensor, ro: Rollouts) -> Tensor:
        """[N] min(pi_old(a) / pi_engine(a), importance_cap): truncated importance sampling
        for rollouts sampled by an engine whose numerics differ from the trainer's."""
        assert self.cfg.importance_cap is not None
        return (old_logp - ro.engine_logprobs).exp().clamp(max=self.cfg.importance_cap)

    def train_step(self, step: int) -> dict[str, float]:
        cfg, timer = self.cfg, PhaseTimer()
        items, prompts, params = self.step_batch(step)
        with timer.phase("rollout"):
            groups = self.engine.generate(prompts, params)
        with timer.phase("reward"):
            rewards, reward_stats = self.grade(items, groups)
        self.callbacks.on_samples(step, rollout_samples(items, groups, rewards))
        ro = build_rollouts(prompts, groups, self.pad_id)
        diagnose = cfg.diagnose(step)
        old: dict[str, Tensor] | None = None
        ref_logp: Tensor | None = None
        with timer.phase("old_logprobs"):
            if self.separate_old_pass:
                old = self.token_logprobs(self.model, ro, full=True)
            if self.ref_model is not None and (cfg.kl_coef > 0 or diagnose):
                ref_logp = self.token_logprobs(self.ref_model, ro, full=False)["logp"]
            adv, returns = self.advantages(ro, rewards, old.get("values") if old else None)
            self.check_signal(step, not bool(adv.any()), rewards)
            if cfg.importance_cap is not None and old is not None:
                # The rollouts were sampled by the engine, not by the trainer's pi_old. (With
                # no separate pass the update's own forward applies the same weights.)
                adv = adv * self.importance_weights(old["logp"], ro)
        self.model.train()
        with timer.phase("update"):
            update_stats, first_logp = self.update(
                ro, old, adv, returns, ref_logp, split=cfg.split_grad_norm and diagnose
            )
        # The trainer's log pi_old(a): from the separate pass, or from the update's own forward.
        old_logp = old["logp"] if old is not None else first_logp
        tis = self.importance_weights(old_logp, ro) if cfg.importance_cap is not None else None
        if old is not None:
            update_stats["entropy"] = float(old["entropy"].mean())
            update_stats["sampled_prob"] = float(old_logp.exp().mean())
        with timer.phase("sync"):
            self.engine.sync_weights(self.model)
        n_tokens = int(ro.lengths.sum())
        self.trained_tokens += n_tokens
        grouped = rewards.view(-1, cfg.n_samples)
        finish = [c.finish_reason for g in groups for c in g]
        mismatch = (ro.engine_logprobs - old_logp).abs()
        metrics = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            **reward_stats,
            "zero_std_group_frac": float(equal_groups(grouped).float().mean()),
            "advantage_abs_mean": float(adv.abs().mean()),
            **update_stats,
            "logp_mismatch_mean": float(mismatch.mean()),
            "logp_mismatch_max": float(mismatch.max()),
            "response_len_mean": float(ro.lengths.float().mean()),
            "response_len_max": float(ro.lengths.max()),
            "truncation_rate": sum(f == "length" for f in finish) / len(finish),
            "micro_batch_size": float(cfg.micro_batch_size),
        }
        if diagnose:
            # KL(old || new) (k3 on pi_old's samples) needs a forward after the update: only at the diagnostic interval.
            with timer.phase("metrics"):
                new_logp = self.token_logprobs(self.model, ro, full=False)["logp"]
            metrics["kl_old"] = float(k3(new_logp - old_logp).mean())
        metrics.update(
            rollout_tokens_per_sec=n_tokens / max(timer.seconds["rollout"], 1e-9),
            tokens_per_sec=n_tokens / max(sum(timer.seconds.values()), 1e-9),
            peak_mem_mb=peak_memory_mb(self.device),
            **timer.as_metrics(),
        )
        if tis is not None:
            metrics["importance_weight_mean"] = float(tis.mean())
            metrics["importance_weight_min"] = float(tis.min())
        if ref_logp is not None:
            metrics["kl_init"] = float(k3(ref_logp - old_logp).mean())
        # Engines that sync by copying weights (vLLM) report which version they now serve
        # and how far their logprobs were from the trainer's on the post-sync probe.
        sync = getattr(self.engine, "last_sync", None)
        if sync is not None:
            metrics["weights_version"] = float(sync.version)
            if sync.probe_max_abs_diff is not None:
                metrics["sync_probe_max_diff"] = sync.probe_max_abs_diff
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Mean reward of greedy completions on the evaluation prompts."""
        if not self.eval_items:
            return {}
        prompts = [self.prompt(i, self.eval_items) for i in range(len(self.eval_items))]
        params = SamplingParams(n=1, max_tokens=self.cfg.max_completion_tokens, greedy=True, seed=0)
        groups = self.engine.generate(prompts, params)
        rewards, _ = self.grade(self.eval_items, groups)
        return {"eval_reward": float(rewards.mean())}

    def extra_state(self) -> dict[str, Any]:
        return {"value_head": self.value_head.state_dict()} if self.value_head else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.value_head is not None and "value_head" in state:
            self.value_head.load_state_dict(state["value_head"])

    def close(self) -> None:
        self.engine.close()
