"""Datasets for training: JSONL files validated by `lco_spec.datasets`, chat-templated and
tokenised, and a deterministic, resumable order of examples.

The order is a pure function of (seed, position): example `p` of the stream is
`permutation(seed, epoch = p // n)[p % n]`, so a resumed run needs only its step number
to continue exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lco_spec.datasets import parse_dataset
from lco_spec.errors import SpecError


def load_items(path: Path, kind: str) -> list[dict[str, Any]]:
    """Read and validate a JSONL dataset (errors name the line and field)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read dataset: {exc.strerror}", param="training_file") from None
    return parse_dataset(data, kind)  # type: ignore[arg-type]


def example_indices(seed: int, n: int, start: int, count: int) -> list[int]:
    """Indices of stream positions [start, start + count) over a dataset of n examples."""
    out: list[int] = []
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.long)
    for position in range(start, start + count):
        epoch = position // n
        if epoch != perm_epoch:
            perm = torch.randperm(
                n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
            )
            perm_epoch = epoch
        out.append(int(perm[position % n]))
    return out


def encode_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of a prompt ending with the assistant turn's opening."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class SFTExample:
    input_ids: list[int]
    trainable: list[bool]  # True where the token is part of an assistant reply with weight 1
    # The conversation was longer than max_len and was cut: whatever reply the cut fell in
    # keeps its tokens before the cut but not its end-of-turn token.
    truncated: bool = False


def message_weight(message: dict[str, Any], index: int) -> int:
    """An assistant message's training weight (OpenAI's rule: 1 trains, 0 is context only,
    absent means 1). `lco_spec.datasets` refuses bad weights on upload; this repeats the
    check so that no caller can reach training with a weight it would silently misread."""
    if "weight" not in message:
        return 1
    weight = message["weight"]
    # `type(...) is int`: True/False and 1.0 are not weights, as in the dataset validator.
    if message.get("role") != "assistant" or type(weight) is not int or weight not in (0, 1):
        raise SpecError(
            "must be 0 or 1, and only on assistant messages", param=f"messages[{index}].weight"
        )
    return weight


def encode_sft(tokenizer: Any, messages: list[dict[str, Any]], max_len: int) -> SFTExample:
    """Tokenise a conversation; only assistant replies with weight 1 (the default) and their
    end-of-turn token train. A weight-0 reply stays in the input as context.

    Each assistant reply is located by rendering the conversation up to it with and
    without the reply, which works for any chat template that renders turns in order.
    A conversation longer than `max_len` tokens is cut to its first `max_len` and flagged
    `truncated`; the cut drops the end-of-turn token of the reply it falls in, so the
    model is never taught to stop where the data was cut.
    """
    ids: list[int] = []
    trainable: list[bool] = []
    for i, message in enumerate(messages):
        weight = message_weight(message, i)
        if message["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(
            messages[:i], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(prefix):
            raise SpecError("the chat template does not render turns in order", param="model")
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        new_context = prefix_ids[len(ids) :]
        ids += new_context
        trainable += [False] * len(new_context)
        reply = full_ids[len(prefix_ids) :]
        ids += reply
        trainable += [weight == 1] * len(reply)
    # Plain slicing keeps only what was rendered before the cut; nothing is appended, so a
    # cut reply ends without its end-of-turn token (it is not trained as a finished reply).
    return SFTExample(ids[:max_len], trainable[:max_len], truncated=len(ids) > max_len)


@dataclass
class Packed:
    """A right-padded batch of encoded conversations and their trained tokens, flattened:
    token k is `targets[k]` at `input_ids[rows[k], cols[k] + 1]`, predicted by the hidden
    state at `(rows[k], cols[k])`, in conversation `rows[k]` of the batch."""

    input_ids: torch.Tensor  # [B, W]
    attention: torch.Tensor  # [B, W]
    rows: torch.Tensor  # [N]
    cols: torch.Tensor  # [N]
    targets: torch.Tensor  # [N]


def pack_examples(examples: list[SFTExample], pad_id: int) -> Packed:
    """Pad a batch of encoded conversations and list their trainable tokens (see Packed)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    rows, cols, targets = [], [], []
    for i, e in enumerate(examples):
        input_ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        attention[i, : len(e.input_ids)] = 1
        for t in range(1, len(e.input_ids)):
            if e.trainable[t]:
                rows.append(i)
                cols.append(t - 1)  # the state at t-1 predicts token t
                targets.append(e.input_ids[t])
    return Packed(
        input_ids, attention, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets)
    )
