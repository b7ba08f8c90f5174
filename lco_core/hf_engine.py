"""Rollouts with transformers `generate`: the fallback engine and the reference for parity.

It samples from the trainer's own model object, so there is nothing to copy after an
update (`sync_weights` only records it). Logprobs are those of the raw model distribution
(log_softmax of the unprocessed logits, before temperature/top-p), as `rollout.py` requires:

    engine = HFEngine(model, tokenizer)
    outs = engine.generate([prompt_ids], SamplingParams(n=4, max_tokens=16, seed=0))
    outs[0][0].token_ids, outs[0][0].logprobs, outs[0][0].text, outs[0][0].finish_reason
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from lco_core import distributed
from lco_core.rollout import Completion, SamplingParams, check_request

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class _RawLogprobRecorder(LogitsProcessor):
    """Records log p(token) under the raw logits, one step at a time.

    `generate` calls logits processors with the raw (float32) logits of step t and, at
    step t+1, with input ids that end in the token sampled at step t; so each call gathers
    the previous step's token and keeps only one step's B x V log-softmax alive (unlike
    `output_logits=True`, which keeps all T of them). Passed as a custom processor it runs
    before temperature/top-p, which `generate` appends after the custom ones; the engine
    gives `generate` a config with no other pre-sampling processors.
    """

    def __init__(self) -> None:
        self._last: torch.Tensor | None = None
        self._gathered: list[torch.Tensor] = []
        self.calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._last is not None:
            self._gathered.append(self._last.gather(1, input_ids[:, -1:]).squeeze(1))
        self._last = torch.log_softmax(scores.float(), dim=-1)
        self.calls += 1
        return scores

    def logprobs(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(B, G) logprobs of the G generated tokens `new_tokens` (B, G)."""
        steps = new_tokens.shape[1]
        gathered = list(self._gathered)
        # Without the deferred stop check (GPU) the last step was never gathered by a later
        # call; with it, extra steps ran and were undone, and all G are already gathered.
        if len(gathered) < steps and self._last is not None:
            gathered.append(self._last.gather(1, new_tokens[:, len(gathered)][:, None]).squeeze(1))
        if len(gathered) < steps:
            raise RuntimeError(f"recorded {len(gathered)} logprob steps for {steps} tokens")
        if steps == 0:
            return new_tokens.new_zeros((new_tokens.shape[0], 0), dtype=torch.float32)
        return torch.stack(gathered[:steps], dim=1)


def eos_ids_of(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion: the generation config's (may be a list) and the
    tokenizer's eos (chat models often stop on `<|im_end|>` and `<|endoftext|>` alike)."""
    ids: list[int] = []
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if value is None:
            continue
        for i in value if isinstance(value, list | tuple) else [value]:
            if int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the model and tokenizer define no eos token id")
    return ids


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block and restore the caller's RNG state afterwards, so a
    seeded rollout neither depends on nor disturbs the trainer's random stream."""
    if seed is None:
        yield
        return
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


class HFEngine:
    """`RolloutEngine` on transformers `generate`, sharing the trainer's model object."""

    name = "hf"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        micro_batch_size: int = 64,
    ) -> None:
        if micro_batch_size < 1:
            raise ValueError("micro_batch_size must be >= 1")
        self.model: PreTrainedModel | None = model
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        self.eos_ids = eos_ids_of(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]
        self.weights_version = 0

    def generate(
        self, prompts: Sequence[list[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        model = self._require_model()
        check_request(prompts, params)
        # Row r of the flattened batch is sample r % n of prompt r // n.
        rows = [list(p) for p in prompts for _ in range(params.n)]
        flat: list[Completion] = []
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with _seeded(params.seed, device), torch.no_grad():
                for start in range(0, len(rows), self.micro_batch_size):
                    batch = rows[start : start + self.micro_batch_size]
                    flat.extend(self._generate_batch(model, batch, params, device))
        finally:
            model.train(was_training)
        return [flat[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _generate_batch(
        self,
        model: PreTrainedModel,
        batch: list[list[int]],
        params: SamplingParams,
        device: torch.device,
    ) -> list[Completion]:
        width = max(len(p) for p in batch)
        # Left padding, so every row's next token sits in the last column.
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p) :] = 1
        sampling = not params.greedy
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else 1.0,
            top_p=params.top_p if sampling else 1.0,
            top_k=0 if sampling else None,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            use_cache=True,
        )
        recorder = _RawLogprobRecorder()
        # `generate` fills every unset option from model.generation_config (a hub model's
        # may carry top_k, repetition_penalty, ...). Swap in a bare one so the distribution
        # sampled is exactly the one `params` describes and the recorder sees raw logits.
        saved = model.generation_config
        model.generation_config = GenerationConfig(
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id
        )
        try:
            out = model.generate(  # type: ignore[operator]
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
                logits_processor=LogitsProcessorList([recorder]),
                # N ranks of one sharded model: every rank runs every forward (FSDP gathers).
                synced_gpus=distributed.active(),
            )
        finally:
            model.generation_config = saved
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        new_tokens = sequences[:, width:]
        logprobs = recorder.logprobs(new_tokens).cpu().tolist()
        eos = set(self.eos_ids)
        completions = []
        for ids, lps in zip(new_tokens.cpu().tolist(), logprobs, strict=True):
            # Rows that stopped early are padded to the batch's length: cut after the eos.
            stop = next((k for k, t in enumerate(ids) if t in eos), None)
            if stop is not None:
                ids, lps = ids[: stop + 1], lps[: stop + 1]
            completions.append(
                Completion(
                    token_ids=ids,
                    logprobs=lps,
                    text=str(self.tokenizer.decode(ids, skip_special_tokens=True)),
                    finish_reason="stop" if stop is not None else "length",
                )
            )
        return completions

    def sync_weights(self, model: PreTrainedModel) -> None:
        # The engine samples from the trainer's model object itself: nothing to copy.
        if model is not self.model:
            self.model = model
            self.eos_ids = eos_ids_of(model, self.tokenizer)
        self.weights_version += 1

    def close(self) -> None:
        self.model = None

    def _require_model(self) -> PreTrainedModel:
        if self.model is None:
            raise RuntimeError("the engine is closed")
        return self.model
