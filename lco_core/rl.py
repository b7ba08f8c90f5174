"""The RL loop: rollout -> grade -> advantages -> policy update -> metrics, one step at a time.

Read `RLTrainer.train_step` top to bottom to see a whole step. LCO and the baselines share
everything here; they differ only in the per-token loss (`losses.py`) and the advantage
estimator (`advantages.py`). With one update per rollout batch, pi_old is the current
policy (detached). With several (`ppo_epochs` or `mini_batches` > 1), pi_old's top-k
logprobs plus its tail mass are stored before the first update, so LCO's target stays
the one the rollouts were drawn from.

Beside it: `rollout_batch.py` (a step's rollouts as tensors, and the samples shown to
people) and `policy_update.py` (the optimiser steps on them).
"""

from __future__ import annotations

from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from lco_core.advantages import equal_groups, gae_advantages, sequence_advantages, whiten
from lco_core.data import encode_prompt, example_indices
from lco_core.losses import LossConfig
from lco_core.metrics import PhaseTimer, peak_memory_mb
from lco_core.models import disable_dropout
from lco_core.policy_update import policy_update
from lco_core.rollout import Completion, RolloutEngine, SamplingParams
from lco_core.rollout_batch import Rollouts, build_rollouts, rollout_samples
from lco_core.trainer import Trainer, TrainerInputs, trunk_and_head
from lco_spec.errors import SpecError
from lco_spec.graders import GraderError, build_grader, grade_stats
from lco_spec.train_config import TrainConfig


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
        # The rollouts are sampled without dropout; pi_old, the update and the diagnostics
        # must be that same policy, so dropout is off for the whole run (as TRL does).
        disable_dropout(model)
        super().__init__(cfg, model, tokenizer, extra_params=extra, **inputs)
        cfg = self.cfg
        self.grader = build_grader(grader_spec)
        self.engine = engine
        self.ref_model = ref_model
        # The initial policy for KL: a frozen copy, or for a LoRA job the same model with
        # its adapter switched off (no second copy of the weights; lco_core.lora).
        self.has_reference = ref_model is not None or self.adapter is not None
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
        """Rewards [S]. The batch's slow grader calls run side by side (`Grader.grade_many`);
        a grader error or timeout gives that sample 0 and is counted (`grader_errors`,
        `grader_timeouts`), never raised. But when every sample of a step timed out there is
        no reward to learn from and each such step costs a limit per sample: the job fails
        with `grader_timeout` (a SpecError: the job's grader is at fault, nothing to retry)."""
        samples = [(c.text, item) for item, group in zip(items, groups, strict=True) for c in group]
        outcomes = self.grader.grade_many(samples)
        rewards = []
        sub: dict[str, list[float]] = {}
        for outcome in outcomes:
            if isinstance(outcome, GraderError):
                rewards.append(0.0)
                continue
            rewards.append(outcome.score)
            for name, value in outcome.sub_scores.items():
                sub.setdefault(name, []).append(value)
        stats = {f"reward_{name}_mean": sum(v) / len(v) for name, v in sub.items() if len(sub) > 1}
        stats.update(grade_stats(outcomes))
        if outcomes and stats["grader_timeouts"] == len(outcomes):
            raise SpecError(
                f"the grader ran past its time limit on all {len(outcomes)} samples of a step "
                "(each call is limited by the grader's timeout_s, default 2 s); the job stops "
                "rather than train on no reward",
                param="method.reinforcement.grader",
                code="grader_timeout",
            )
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

    def reference_logprobs(self, ro: Rollouts) -> Tensor:
        """log pi_init(a) for every response token (see `has_reference`)."""
        if self.ref_model is not None:
            return self.token_logprobs(self.ref_model, ro, full=False)["logp"]
        with self.adapter.disable_adapter():
            return self.token_logprobs(self.model, ro, full=False)["logp"]

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
            if self.has_reference and (cfg.kl_coef > 0 or diagnose):
                ref_logp = self.reference_logprobs(ro)
            adv, returns = self.advantages(ro, rewards, old.get("values") if old else None)
            self.check_signal(step, not bool(adv.any()), rewards)
            if cfg.importance_cap is not None and old is not None:
                # The rollouts were sampled by the engine, not by the trainer's pi_old. (With
                # no separate pass the update's own forward applies the same weights.)
                adv = adv * self.importance_weights(old["logp"], ro)
        self.model.train()
        with timer.phase("update"):
            update_stats, first_logp = policy_update(
                self, ro, old, adv, returns, ref_logp, split=cfg.split_grad_norm and diagnose
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
