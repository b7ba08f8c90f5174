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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from lco_core.advantages import gae_advantages, sequence_advantages, whiten
from lco_core.callbacks import Callbacks
from lco_core.config import TrainConfig
from lco_core.data import encode_prompt, example_indices
from lco_core.fused import chunked_loss
from lco_core.losses import LossConfig, TokenData
from lco_core.metrics import PhaseTimer, grad_norm, peak_memory_mb
from lco_core.rollout import Completion, RolloutEngine, SamplingParams
from lco_core.trainer import Trainer, trunk_and_head
from lco_spec.graders import GraderError, build_grader


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

    def pack(self, seqs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """A minibatch of sequences: (input_ids, attention_mask, rows, cols, token_index),
        where hidden[rows, cols] are the states that predict tokens[token_index]."""
        lengths = self.lengths[seqs]
        width = int((self.prompt_lens[seqs] + lengths).max())
        rows = torch.repeat_interleave(torch.arange(len(seqs)), lengths)
        starts = torch.repeat_interleave(self.offsets[seqs], lengths)
        within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        cols = torch.repeat_interleave(self.prompt_lens[seqs] - 1, lengths) + within
        return (
            self.input_ids[seqs, :width],
            self.attention_mask[seqs, :width],
            rows,
            cols,
            starts + within,
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
        items: list[dict[str, Any]],
        eval_items: list[dict[str, Any]],
        grader_spec: Any,
        engine: RolloutEngine,
        ref_model: PreTrainedModel | None,
        output_dir: Path,
        callbacks: Callbacks,
        device: torch.device,
    ) -> None:
        hidden_size = trunk_and_head(model)[1].weight.shape[1]
        # PPO's value head reads the policy's hidden states detached, so value errors never
        # push the shared trunk: the policy sees exactly the gradients of its loss.
        self.value_head: torch.nn.Linear | None = None
        if cfg.algorithm == "ppo":
            # Zero-initialised (values start at 0) so that a run does not depend on the global
            # RNG state at construction: resumed and uninterrupted runs stay identical.
            self.value_head = torch.nn.Linear(hidden_size, 1).to(device)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
        super().__init__(
            cfg,
            model,
            tokenizer,
            output_dir=output_dir,
            callbacks=callbacks,
            device=device,
            extra_params=list(self.value_head.parameters()) if self.value_head else None,
        )
        self.items = items
        self.eval_items = eval_items[: cfg.eval_samples]
        self.grader = build_grader(grader_spec)
        self.engine = engine
        self.ref_model = ref_model
        self.base, self.head = trunk_and_head(model)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.loss_cfg = LossConfig(
            beta=cfg.beta,
            vocab_advantage=cfg.vocab_advantage,  # type: ignore[arg-type]
            target_base=cfg.target_base,  # type: ignore[arg-type]
            old_source="current" if cfg.updates_per_batch == 1 else "topk",
            clip_eps=cfg.clip_eps,
            clip_eps_high=cfg.clip_eps_high,
            kl_coef=cfg.kl_coef,
        )
        self.store_topk = cfg.updates_per_batch > 1 and cfg.loss == "lco_kld"
        self.autocast = cfg.dtype == "bfloat16"
        self._prompt_cache: dict[int, list[int]] = {}

    # -- pieces of a step -------------------------------------------------------------
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

    def hidden(self, model_base: torch.nn.Module, input_ids: Tensor, attention: Tensor) -> Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = model_base(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            )
        return out.last_hidden_state

    @torch.no_grad()
    def token_logprobs(
        self, model: PreTrainedModel, ro: Rollouts, *, full: bool
    ) -> dict[str, Tensor]:
        """log pi(a) for every response token (and with `full`, the raw logit of a, entropy,
        top-k old logprobs and PPO values), computed in chunks of tokens."""
        base, head = trunk_and_head(model)
        out: dict[str, list[Tensor]] = {}
        chunk = self.cfg.loss_chunk_size
        for seqs in torch.arange(len(ro.lengths)).split(
            max(1, len(ro.lengths) // self.cfg.mini_batches)
        ):
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
        old: dict[str, Tensor],
        adv: Tensor,
        returns: Tensor | None,
        ref_logp: Tensor | None,
    ) -> dict[str, float]:
        """`ppo_epochs` passes over `mini_batches` minibatches; one optimiser step each."""
        cfg = self.cfg
        policy_params = [p for p in self.model.parameters() if p.requires_grad]
        all_params = policy_params + (list(self.value_head.parameters()) if self.value_head else [])
        sums: dict[str, float] = {}
        updates = 0
        generator = torch.Generator().manual_seed(cfg.seed * 31 + self.step)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(ro.lengths), generator=generator)
            for seqs in order.chunk(cfg.mini_batches):
                input_ids, attention, rows, cols, index = ro.pack(seqs)
                h = self.hidden(self.base, input_ids, attention)[
                    rows.to(self.device), cols.to(self.device)
                ]
                data = TokenData(
                    tokens=ro.tokens[index],
                    advantages=adv[index],
                    weights=self.token_weights(ro, seqs, index, adv[index]),
                    old_logprobs=old["logp"][index],
                    old_logits=old["logit"][index],
                    topk_ids=old["topk_ids"][index] if "topk_ids" in old else None,
                    topk_logprobs=old["topk_logprobs"][index] if "topk_logprobs" in old else None,
                    ref_logprobs=ref_logp[index] if ref_logp is not None else None,
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
                    split=cfg.split_grad_norm,
                )
                value_loss = None
                if self.value_head is not None and returns is not None:
                    predicted = self.value_head(h.detach().float())[:, 0]
                    value_loss = F.mse_loss(predicted, returns[index].to(self.device))
                    (cfg.value_coef * value_loss).backward()
                if cfg.split_grad_norm:
                    # Backward the two halves separately to measure each one's gradient norm.
                    res.pos.backward(retain_graph=True)
                    pos_grads = [
                        p.grad.clone() if p.grad is not None else None for p in policy_params
                    ]
                    norm_pos = grad_norm(policy_params)
                    res.neg.backward()
                    diff = [
                        (p.grad - g) if g is not None and p.grad is not None else p.grad
                        for p, g in zip(policy_params, pos_grads, strict=True)
                    ]
                    norm_neg = (
                        float(
                            torch.linalg.vector_norm(
                                torch.stack([d.float().norm() for d in diff if d is not None])
                            )
                        )
                        if diff
                        else 0.0
                    )
                    sums["grad_norm_pos"] = sums.get("grad_norm_pos", 0.0) + norm_pos
                    sums["grad_norm_neg"] = sums.get("grad_norm_neg", 0.0) + norm_neg
                else:
                    res.loss.backward()
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm(policy_params)
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(all_params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                updates += 1
                sums["loss"] = sums.get("loss", 0.0) + res.loss.item()
                sums["clip_frac"] = sums.get("clip_frac", 0.0) + res.clipped / max(res.tokens, 1)
                if value_loss is not None:
                    sums["value_loss"] = sums.get("value_loss", 0.0) + value_loss.item()
        metrics = {k: v / updates for k, v in sums.items()}
        if cfg.loss not in ("grpo", "ppo_clip"):
            metrics.pop("clip_frac", None)
        return metrics

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
    def train_step(self, step: int) -> dict[str, float]:
        cfg, timer = self.cfg, PhaseTimer()
        indices = example_indices(
            cfg.seed, len(self.items), (step - 1) * cfg.batch_size, cfg.batch_size
        )
        items = [self.items[i] for i in indices]
        prompts = [self.prompt(i) for i in indices]
        params = SamplingParams(
            n=cfg.n_samples,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_completion_tokens,
            seed=cfg.seed * 1_000_003 + step,
        )
        with timer.phase("rollout"):
            groups = self.engine.generate(prompts, params)
        with timer.phase("reward"):
            rewards, reward_stats = self.grade(items, groups)
        self.callbacks.on_samples(step, rollout_samples(items, groups, rewards))
        ro = build_rollouts(prompts, groups, self.pad_id)
        with timer.phase("old_logprobs"):
            old = self.token_logprobs(self.model, ro, full=True)
            ref_logp = (
                self.token_logprobs(self.ref_model, ro, full=False)["logp"]
                if self.ref_model
                else None
            )
            adv, returns = self.advantages(ro, rewards, old.get("values"))
            self.check_signal(step, not bool(adv.any()), rewards)
            tis: Tensor | None = None
            if cfg.importance_cap is not None:
                # The rollouts were sampled by the engine, not by the trainer's pi_old.
                tis = (old["logp"] - ro.engine_logprobs).exp().clamp(max=cfg.importance_cap)
                adv = adv * tis
        self.model.train()
        with timer.phase("update"):
            update_stats = self.update(ro, old, adv, returns, ref_logp)
        with timer.phase("sync"):
            self.engine.sync_weights(self.model)
        with timer.phase("metrics"):
            new_logp = self.token_logprobs(self.model, ro, full=False)["logp"]
        n_tokens = int(ro.lengths.sum())
        self.trained_tokens += n_tokens
        grouped = rewards.view(-1, cfg.n_samples)
        finish = [c.finish_reason for g in groups for c in g]
        mismatch = (ro.engine_logprobs - old["logp"]).abs()
        metrics = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            **reward_stats,
            "zero_std_group_frac": float((grouped.std(-1, unbiased=False) == 0).float().mean()),
            "advantage_abs_mean": float(adv.abs().mean()),
            **update_stats,
            "entropy": float(old["entropy"].mean()),
            "sampled_prob": float(old["logp"].exp().mean()),
            "kl_old": float(k3(new_logp - old["logp"]).mean()),
            "logp_mismatch_mean": float(mismatch.mean()),
            "logp_mismatch_max": float(mismatch.max()),
            "response_len_mean": float(ro.lengths.float().mean()),
            "response_len_max": float(ro.lengths.max()),
            "truncation_rate": sum(f == "length" for f in finish) / len(finish),
            "rollout_tokens_per_sec": n_tokens / max(timer.seconds["rollout"], 1e-9),
            "tokens_per_sec": n_tokens / max(sum(timer.seconds.values()), 1e-9),
            "peak_mem_mb": peak_memory_mb(self.device),
            **timer.as_metrics(),
        }
        if tis is not None:
            metrics["importance_weight_mean"] = float(tis.mean())
            metrics["importance_weight_min"] = float(tis.min())
        if ref_logp is not None:
            metrics["kl_init"] = float(k3(ref_logp - old["logp"]).mean())
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
