"""SFT data on lco-tiny: message weights (OpenAI's rule) and rows longer than max_seq_len."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lco_core.callbacks import Callbacks, Level
from lco_core.data import encode_sft
from lco_core.runner import build_trainer, run_job
from lco_core.tokenizer import IM_END_ID, build_byte_tokenizer
from lco_spec.datasets import parse_dataset, validate_dataset
from lco_spec.errors import SpecError
from lco_spec.job import parse_job_spec


def user(content: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def assistant(content: str, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def weighted(weight: Any) -> list[dict[str, Any]]:
    """The example from OpenAI's docs: a wrong first reply kept as context only."""
    return [
        user("What is 2+3?"),
        assistant("7", weight=weight),
        user("Check again."),
        assistant("5", weight=1),
    ]


def trained_text(tokenizer: Any, messages: list[dict[str, Any]], max_len: int = 512) -> str:
    example = encode_sft(tokenizer, messages, max_len)
    return tokenizer.decode(
        [t for t, on in zip(example.input_ids, example.trainable, strict=True) if on]
    )


def sft_spec(data: Path, **hyperparameters: Any) -> Any:
    hp = {"batch_size": 1, "micro_batch_size": 1, "max_steps": 1, "eval_samples": 1}
    return parse_job_spec(
        {
            "model": "lco-tiny",
            "training_file": str(data),
            "seed": 1,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": hp | hyperparameters},
            },
        }
    )


def write_rows(path: Path, rows: list[list[dict[str, Any]]]) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    return path


class Recorder(Callbacks):
    def __init__(self) -> None:
        self.events: list[tuple[Level, str, dict[str, Any]]] = []
        self.metrics: list[dict[str, float]] = []

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data or {}))

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append(metrics)


# -- message weights -----------------------------------------------------------------------


def test_a_weight_0_reply_is_context_and_a_weight_1_reply_trains() -> None:
    tok = build_byte_tokenizer()
    example = encode_sft(tok, weighted(0), 512)
    assert tok.decode(example.input_ids).count("<|im_end|>") == 4  # every turn is in the input
    trained = [t for t, on in zip(example.input_ids, example.trainable, strict=True) if on]
    assert tok.decode(trained) == "5<|im_end|>\n"
    assert trained.count(IM_END_ID) == 1  # the weight-0 reply's end-of-turn token is context
    assert trained_text(tok, weighted(1)) == "7<|im_end|>\n5<|im_end|>\n"
    # No weight means 1, as in OpenAI's format.
    unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in weighted(0)]
    assert trained_text(tok, unweighted) == "7<|im_end|>\n5<|im_end|>\n"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (weighted(2), "messages[1].weight"),
        (weighted(-1), "messages[1].weight"),
        (weighted("1"), "messages[1].weight"),
        (weighted(True), "messages[1].weight"),
        (weighted(1.0), "messages[1].weight"),
        ([user("hi", weight=1), assistant("hello")], "messages[0].weight"),
        ([user("hi", weight=0), assistant("hello")], "messages[0].weight"),
    ],
)
def test_bad_weights_are_refused_naming_the_line_and_field(
    messages: list[dict[str, Any]], param: str, tmp_path: Path
) -> None:
    good = json.dumps({"messages": weighted(0)}).encode()
    data = good + b"\n" + json.dumps({"messages": messages}).encode() + b"\n"
    # On upload: every error, with its line and field.
    report = validate_dataset(data, "supervised")
    assert [(e.line, e.param) for e in report.errors] == [(2, param)]
    assert "must be 0 or 1, and only on assistant messages" in report.errors[0].message
    # At training: the first error, the same words.
    with pytest.raises(SpecError, match=r"must be 0 or 1") as info:
        parse_dataset(data, "supervised")
    assert (info.value.line, info.value.param) == (2, param)
    # And encode_sft itself, for any caller that skipped the validator.
    with pytest.raises(SpecError, match=r"must be 0 or 1") as info:
        encode_sft(build_byte_tokenizer(), messages, 512)
    assert info.value.param == param


def test_an_sft_step_trains_exactly_the_weight_1_tokens(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """The same row with its first reply at weight 1, then 0: the step's trained tokens
    differ by exactly that reply and its end-of-turn ("7<|im_end|>\\n": 3 byte tokens)."""
    tok = build_byte_tokenizer()
    context_only = len(tok("7<|im_end|>\n", add_special_tokens=False)["input_ids"])
    assert context_only == 3
    counts = {}
    for weight in (1, 0):
        data = write_rows(tmp_path / f"w{weight}.jsonl", [weighted(weight)])
        trainer: Any = build_trainer(
            sft_spec(data),
            training_file=data,
            validation_file=None,
            output_dir=tmp_path / f"run{weight}",
            callbacks=Callbacks(),
        )
        trainer.train_step(1)
        counts[weight] = trainer.trained_tokens
    assert counts[1] - counts[0] == context_only
    assert counts[0] == 3  # "5<|im_end|>\n"


# -- rows longer than max_seq_len ------------------------------------------------------------


def test_a_cut_reply_keeps_no_end_of_turn_token() -> None:
    tok = build_byte_tokenizer()
    messages = [user("Spell it."), assistant("abcdefghij")]
    whole = encode_sft(tok, messages, 512)
    assert not whole.truncated and whole.input_ids[-2] == IM_END_ID and whole.trainable[-2]
    # Exactly long enough is not a cut.
    assert not encode_sft(tok, messages, len(whole.input_ids)).truncated
    # Cut in the middle of the reply: its first tokens still train, the end of turn is gone.
    reply_start = whole.trainable.index(True)
    cut = encode_sft(tok, messages, reply_start + 4)
    assert cut.truncated and len(cut.input_ids) == reply_start + 4
    assert IM_END_ID not in cut.input_ids[reply_start:]
    trained = [t for t, on in zip(cut.input_ids, cut.trainable, strict=True) if on]
    assert tok.decode(trained) == "abcd"


def test_truncated_rows_are_warned_once_and_counted(tiny_model_path: Path, tmp_path: Path) -> None:
    short = [user("hi"), assistant("yo")]  # 23 tokens in ChatML with the byte tokenizer
    long = [user("hi"), assistant("x" * 100)]
    data = write_rows(tmp_path / "mixed.jsonl", [short, long, short, long, long])
    recorder = Recorder()
    result = run_job(
        sft_spec(data, max_seq_len=40, batch_size=5, micro_batch_size=5, max_steps=2),
        training_file=data,
        validation_file=None,
        output_dir=tmp_path / "run",
        callbacks=recorder,
    )
    assert result.status == "succeeded"
    warnings = [(m, d) for level, m, d in recorder.events if level == "warn"]
    assert len(warnings) == 1, recorder.events
    message, payload = warnings[0]
    assert message.startswith("3 of 5 training rows are longer than max_seq_len=40")
    assert payload["truncated_rows"] == 3
    assert result.summary["truncated_rows"] == 3
    # Each step's batch is the whole file (batch_size 5): its three long rows are counted.
    assert [m["truncated_rows"] for m in recorder.metrics] == [3.0, 3.0]


def test_no_warning_when_nothing_is_cut(tiny_model_path: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "short.jsonl", [[user("hi"), assistant("yo")]] * 2)
    recorder = Recorder()
    result = run_job(
        sft_spec(data, batch_size=2),
        training_file=data,
        validation_file=None,
        output_dir=tmp_path / "run",
        callbacks=recorder,
    )
    assert not [m for level, m, _ in recorder.events if level == "warn"]
    assert result.summary["truncated_rows"] == 0
    assert [m["truncated_rows"] for m in recorder.metrics] == [0.0]
