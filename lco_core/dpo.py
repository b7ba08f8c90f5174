"""DPO, Direct Preference Optimization (Rafailov et al., 2023, eq. 7), in the shared trainer:

    loss = -log sigmoid(beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))))

Data: OpenAI's preference JSONL, one pair per line: `input.messages` (the prompt), and
`preferred_output` / `non_preferred_output` (assistant messages, y_w / y_l). Each side is
encoded as one conversation (`data.encode_sft`) in which only the output trains (assistant
turns of the prompt get weight 0); log pi(y|x) is the sum over the output's tokens.

The reference is the job's starting model, but never a second copy of it: before the first
step one no-grad pass records log ref(y|x) for every pair, training and evaluation
(TRL's `precompute_ref_log_probs`), and the training state keeps them, so a resumed run
reuses them.

A step takes two passes over its pairs, micro-batch by micro-batch. A no-grad pass gives
the sequence log-probabilities, hence each pair's margin m and the loss's gradient
coefficient: dL/dlog pi(y_w) = -beta * sigmoid(-m) / B, and the opposite for y_l. Then the
fused LM-head loss (`fused.chunked_loss`, in its REINFORCE form with that coefficient as
every token's advantage) backpropagates exactly that gradient, so no batch x length x
vocabulary tensor exists. The price is one extra forward per step.

Metrics (TRL's, with `_` for `/`): `rewards_chosen`, `rewards_rejected` (beta times the
log-ratio to the reference, mean over pairs), `rewards_margins`, `rewards_accuracies` (the
share of pairs whose chosen reward is higher), and `preference_accuracy` (the share the
policy itself ranks right: log pi(y_w|x) > log pi(y_l|x)); `eval_` versions on the validation
pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lco_core.data import SFTExample, encode_sft, example_indices, pack_examples
from lco_core.fused import chunked_loss
from lco_core.losses import LossConfig, TokenData
from lco_core.metrics import peak_memory_mb
from lco_core.result import RunResult
from lco_core.trainer import Trainer
from lco_spec.errors import SpecError


@dataclass
class Pair:
    chosen: SFTExample
    rejected: SFTExample


def conversation(item: dict[str, Any], side: str) -> list[dict[str, Any]]:
    """The prompt of a preference line followed by one of its outputs; only the output trains."""
    prompt = [
        {**m, "weight": 0} if m.get("role") == "assistant" else m for m in item["input"]["messages"]
    ]
    return prompt + list(item[side])


class DPOTrainer(Trainer):
    ref: Tensor | None = None  # [pairs, 2] log ref(y_w|x), log ref(y_l|x)
    eval_ref: Tensor | None = None

    def prepare_data(self) -> int:
        self.pairs = [self._encode(item, i) for i, item in enumerate(self.items)]
        self.eval_pairs = [self._encode(item, i) for i, item in enumerate(self.eval_items)]
        return max(len(s.input_ids) for p in self.pairs for s in (p.chosen, p.rejected))

    def _encode(self, item: dict[str, Any], index: int) -> Pair:
        sides = []
        for side in ("preferred_output", "non_preferred_output"):
            example = encode_sft(self.tokenizer, conversation(item, side), self.cfg.max_seq_len)
            if not any(example.trainable[1:]):
                raise SpecError(
                    f"no {side} tokens left within max_seq_len={self.cfg.max_seq_len}",
                    param="training_file",
                    line=index + 1,
                )
            sides.append(example)
        return Pair(*sides)

    # -- log-probabilities ---------------------------------------------------------------
    def _pairs_per_micro_batch(self) -> int:
        # A micro-batch is sized in sequences; a pair is two.
        return max(1, self.cfg.micro_batch_size // 2)

    @torch.no_grad()
    def sequence_logprobs(self, seqs: list[SFTExample]) -> Tensor:
        """log pi(y|x) of each conversation's trained tokens under the current weights [S]."""
        out = torch.zeros(len(seqs), dtype=torch.float64)
        chunk = self.cfg.loss_chunk_size
        for start in range(0, len(seqs), self.cfg.micro_batch_size):
            packed = pack_examples(seqs[start : start + self.cfg.micro_batch_size], self.pad_id)
            h = self.hidden(self.base, packed.input_ids, packed.attention)
            h = h[packed.rows.to(self.device), packed.cols.to(self.device)]
            targets = packed.targets.to(self.device)
            parts = []
            for c in range(0, len(targets), chunk):
                logits = F.linear(h[c : c + chunk], self.head.weight, self.head.bias).float()
                logp = torch.log_softmax(logits, -1)
                parts.append(logp.gather(-1, targets[c : c + chunk, None])[:, 0])
            out.index_add_(0, packed.rows + start, torch.cat(parts).double().cpu())
        return out

    def pair_logprobs(self, pairs: list[Pair]) -> Tensor:
        """[len(pairs), 2]: log pi of the chosen and the rejected output, in eval mode (the
        reference pass and the coefficient pass must see the same network)."""
        was_training = self.model.training
        self.model.eval()
        flat = self.sequence_logprobs([p.chosen for p in pairs] + [p.rejected for p in pairs])
        self.model.train(was_training)
        return torch.stack([flat[: len(pairs)], flat[len(pairs) :]], 1)

    def _rewards(self, policy: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        """(implicit rewards beta * log(pi / ref) [P, 2], margins [P])."""
        rewards = self.cfg.beta * (policy - ref)
        return rewards, rewards[:, 0] - rewards[:, 1]

    def _stats(self, policy: Tensor, ref: Tensor, prefix: str = "") -> dict[str, float]:
        rewards, margins = self._rewards(policy, ref)
        return {
            f"{prefix}loss": float(-F.logsigmoid(margins).mean()),
            f"{prefix}rewards_chosen": float(rewards[:, 0].mean()),
            f"{prefix}rewards_rejected": float(rewards[:, 1].mean()),
            f"{prefix}rewards_margins": float(margins.mean()),
            f"{prefix}rewards_accuracies": float((margins > 0).double().mean()),
            # Whether the policy itself ranks the pair right, whatever the reference did.
            f"{prefix}preference_accuracy": float((policy[:, 0] > policy[:, 1]).double().mean()),
        }

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> RunResult:
        if self.ref is None:
            if self.step > 0:
                raise RuntimeError("resumed DPO state holds no reference log-probabilities")
            self.callbacks.on_phase(
                "preparing_model", "computing the reference model's log-probabilities"
            )
            self.ref = self.pair_logprobs(self.pairs)
            self.eval_ref = self.pair_logprobs(self.eval_pairs) if self.eval_pairs else None
        return super().run()

    def extra_state(self) -> dict[str, Any]:
        return {"ref": self.ref, "eval_ref": self.eval_ref}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ref, self.eval_ref = state.get("ref"), state.get("eval_ref")

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        assert self.ref is not None
        started = time.perf_counter()
        indices = example_indices(
            cfg.seed, len(self.pairs), (step - 1) * cfg.batch_size, cfg.batch_size
        )
        pairs = [self.pairs[i] for i in indices]
        ref = self.ref[indices]
        policy = self.pair_logprobs(pairs)
        _, margins = self._rewards(policy, ref)
        # dL/dlog pi(y_w) for the batch-mean loss; REINFORCE's loss -A log pi has gradient
        # -A, so A = -dL/dlog pi: +coef on the chosen side, -coef on the rejected one.
        coef = cfg.beta * torch.sigmoid(-margins) / len(pairs)
        self.model.train()
        n_tokens = 0
        per = self._pairs_per_micro_batch()
        for start in range(0, len(pairs), per):
            part = pairs[start : start + per]
            seqs = [p.chosen for p in part] + [p.rejected for p in part]
            advantage = torch.cat([coef[start : start + per], -coef[start : start + per]])
            packed = pack_examples(seqs, self.pad_id)
            h = self.hidden(self.base, packed.input_ids, packed.attention)
            h = h[packed.rows.to(self.device), packed.cols.to(self.device)]
            n = len(packed.targets)
            zeros = torch.zeros(n, device=self.device)
            data = TokenData(
                tokens=packed.targets.to(self.device),
                advantages=advantage[packed.rows].float().to(self.device),
                weights=torch.ones(n, device=self.device),
                old_logprobs=zeros,
                old_logits=zeros,
            )
            res = chunked_loss(
                h, self.head.weight, self.head.bias, data, "reinforce", LossConfig(),
                cfg.loss_chunk_size,
            )  # fmt: skip
            res.loss.backward()
            n_tokens += n
        norm = self.apply_gradients()
        self.trained_tokens += n_tokens
        elapsed = time.perf_counter() - started
        return {
            **self._stats(policy, ref),
            "grad_norm": norm,
            "micro_batch_size": float(cfg.micro_batch_size),
            "tokens_per_sec": n_tokens / elapsed,
            "time_update": elapsed,
            "peak_mem_mb": peak_memory_mb(self.device),
        }

    def evaluate(self) -> dict[str, float]:
        if not self.eval_pairs or self.eval_ref is None:
            return {}
        return self._stats(self.pair_logprobs(self.eval_pairs), self.eval_ref, prefix="eval_")
