"""The SFT loop: cross-entropy on assistant tokens, through the same chunked-loss driver as
the RL losses (`sft` is -log pi(a), token-mean over the batch).

Rows longer than `max_seq_len` are cut (see `encode_sft`): counted in the summary as
`truncated_rows`, warned about once when a run starts, and counted per step in the
`truncated_rows` metric (rows of that step's batch)."""

from __future__ import annotations

import time
from typing import Any

import torch

from lco_core import distributed
from lco_core.data import SFTExample, encode_sft, example_indices, pack_examples
from lco_core.fused import chunked_loss
from lco_core.losses import LossConfig, TokenData
from lco_core.metrics import peak_memory_mb
from lco_core.result import RunResult
from lco_core.trainer import Trainer
from lco_spec.errors import SpecError


class SFTTrainer(Trainer):
    def prepare_data(self) -> int:
        self.examples = [self._encode(item, i) for i, item in enumerate(self.items)]
        self.eval_examples = [self._encode(item, i) for i, item in enumerate(self.eval_items)]
        return max(len(e.input_ids) for e in self.examples)

    def _encode(self, item: dict[str, Any], index: int) -> SFTExample:
        try:
            example = encode_sft(self.tokenizer, item["messages"], self.cfg.max_seq_len)
        except SpecError as exc:
            if exc.line is not None or not (exc.param or "").startswith("messages"):
                raise
            raise SpecError(exc.message, param=exc.param, line=index + 1) from None
        if not any(example.trainable[1:]):
            raise SpecError(
                f"no assistant tokens left within max_seq_len={self.cfg.max_seq_len}",
                param="training_file",
                line=index + 1,
            )
        return example

    def run(self) -> RunResult:
        # Set here, not in __init__: resuming loads a checkpoint's summary over __init__'s.
        truncated = sum(e.truncated for e in self.examples)
        self.summary["truncated_rows"] = float(truncated)
        if truncated:
            self.callbacks.on_event(
                "warn",
                f"{truncated} of {len(self.examples)} training rows are longer than "
                f"max_seq_len={self.cfg.max_seq_len} tokens and were cut: their tokens past "
                "the limit are not trained, and a reply cut short is trained without its "
                "end-of-turn token; raise max_seq_len or shorten those rows",
                {
                    "truncated_rows": truncated,
                    "rows": len(self.examples),
                    "max_seq_len": self.cfg.max_seq_len,
                },
            )
        return super().run()

    def loss(
        self, batch: list[SFTExample], n_total: int | None = None
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """(sum over `batch`'s target tokens of -log pi / n_total, stats, its token count);
        `n_total` is the whole step's token count when `batch` is one of its micro-batches."""
        packed = pack_examples(batch, self.pad_id)
        h = self.hidden(self.base, packed.input_ids, packed.attention)[
            packed.rows.to(self.device), packed.cols.to(self.device)
        ]
        targets = packed.targets
        n = len(targets)
        zeros = torch.zeros(n, device=self.device)
        data = TokenData(
            tokens=targets.to(self.device),
            advantages=zeros,
            weights=torch.full((n,), 1.0 / (n_total or n), device=self.device),
            old_logprobs=zeros,
            old_logits=zeros,
        )
        res = chunked_loss(
            h, self.head.weight, self.head.bias, data, "sft", LossConfig(), self.cfg.loss_chunk_size
        )
        stats = {"entropy_sum": res.entropy_sum, "sampled_prob_sum": res.sampled_prob_sum}
        return res.loss, stats, n

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        started = time.perf_counter()
        indices = example_indices(
            cfg.seed, len(self.examples), (step - 1) * cfg.batch_size, cfg.batch_size
        )
        self.model.train()
        batch = [self.examples[i] for i in indices]
        # Micro-batches accumulate gradients of the whole batch's token-mean loss.
        n = sum(sum(e.trainable[1:]) for e in batch)
        loss_sum, entropy_sum, prob_sum = 0.0, 0.0, 0.0
        # With N ranks each runs 1/N of the batch, weighted by the whole batch's count.
        mine = distributed.local_share(batch)
        for start in range(0, len(mine), cfg.micro_batch_size):
            loss, stats, _ = self.loss(mine[start : start + cfg.micro_batch_size], n_total=n)
            loss.backward()
            loss_sum += loss.item()
            entropy_sum += stats["entropy_sum"]
            prob_sum += stats["sampled_prob_sum"]
        sums = distributed.sum_floats({"l": loss_sum, "e": entropy_sum, "p": prob_sum})
        loss_sum, entropy_sum, prob_sum = sums["l"], sums["e"], sums["p"]
        norm = self.apply_gradients()
        self.trained_tokens += n
        elapsed = time.perf_counter() - started
        return {
            "loss": loss_sum,
            "grad_norm": norm,
            "entropy": entropy_sum / n,
            "sampled_prob": prob_sum / n,
            "micro_batch_size": float(cfg.micro_batch_size),
            "truncated_rows": float(sum(e.truncated for e in batch)),
            "tokens_per_sec": n / elapsed,
            "time_update": elapsed,
            "peak_mem_mb": peak_memory_mb(self.device),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_examples:
            return {}
        self.model.eval()
        total, count = 0.0, 0
        step = self.cfg.micro_batch_size
        for start in range(0, len(self.eval_examples), step):
            loss, _, n = self.loss(self.eval_examples[start : start + step])
            total += float(loss) * n
            count += n
        self.model.train()
        return {"eval_loss": total / count}
