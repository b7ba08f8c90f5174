"""JSONL dataset validation: good files pass, and every error names its line and field."""

from __future__ import annotations

import doctest
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lco_spec import datasets
from lco_spec.datasets import MAX_MESSAGES, DatasetReport, parse_dataset, validate_dataset
from lco_spec.errors import SpecError


def msg(role: str, content: Any = "text", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


SFT = {"messages": [msg("system", "Be brief."), msg("user", "2+2?"), msg("assistant", "4")]}
RL = {"messages": [msg("developer", "Answer."), msg("user", "2+2?")], "answer": "4", "meta": {}}
DPO = {
    "input": {"messages": [msg("user", "Say hi")]},
    "preferred_output": [msg("assistant", "Hi!")],
    "non_preferred_output": [msg("assistant", "Go away.")],
}


def jsonl(*rows: Any) -> bytes:
    return b"".join(
        (row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows
    )


def only_error(data: bytes, kind: Any) -> SpecError:
    report = validate_dataset(data, kind)
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


# --- good files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "kind"), [(SFT, "supervised"), (RL, "reinforcement"), (DPO, "dpo")]
)
def test_good_files_pass_and_any_detects(row: dict[str, Any], kind: Any) -> None:
    data = jsonl(row, row, row)
    assert validate_dataset(data, kind) == DatasetReport(3, kind, [])
    assert validate_dataset(data, "any") == DatasetReport(3, kind, [])
    assert parse_dataset(data, kind) == [row, row, row]


def test_blank_lines_crlf_bom_and_no_trailing_newline() -> None:
    line = json.dumps(SFT).encode()
    data = b"\xef\xbb\xbf" + line + b"\r\n\r\n  \n" + line
    report = validate_dataset(data, "supervised")
    assert report.ok and report.n_examples == 2


def test_optional_message_fields() -> None:
    row = {"messages": [msg("user", "q", name="ann"), msg("assistant", "a", weight=1)]}
    row["messages"].insert(1, msg("assistant", "draft", weight=0))
    assert validate_dataset(jsonl(row), "supervised").ok


def test_reinforcement_allows_few_shot_assistant_turns() -> None:
    row = {"messages": [msg("user", "1+1?"), msg("assistant", "2"), msg("user", "2+2?")], "x": 1}
    assert validate_dataset(jsonl(row), "reinforcement").ok


# --- line-level errors -------------------------------------------------------------------


def test_line_errors_carry_line_numbers() -> None:
    data = jsonl(SFT, b"", b"{not json", b"[1, 2]", b'"text"', SFT, b'{"a": NaN}', b"\xff\xfe{}")
    report = validate_dataset(data, "supervised")
    assert report.n_examples == 2
    got = [(e.line, e.param, e.message.split(" (")[0]) for e in report.errors]
    assert got == [
        (3, None, "invalid JSON: Expecting property name enclosed in double quotes"),
        (4, None, "each line must be a JSON object, not list"),
        (5, None, "each line must be a JSON object, not str"),
        (7, None, "invalid JSON: NaN is not valid JSON"),
        (8, None, "not valid UTF-8"),
    ]


def test_line_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 150)
    long_row = {"messages": [msg("user", "x" * 200), msg("assistant", "y")]}
    error = only_error(jsonl(SFT, long_row), "supervised")
    assert error.line == 2 and "at most 150" in error.message


def test_too_many_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_LINES", 3)
    assert validate_dataset(jsonl(SFT, SFT, SFT), "supervised").ok
    error = only_error(jsonl(SFT, SFT, SFT, SFT), "supervised")
    assert error.line == 4 and "more than 3 lines" in error.message


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    error = only_error(b"[" * 200_000 + b"\n", "any")
    assert error.line == 1 and "invalid JSON" in error.message


@pytest.mark.parametrize("data", [b"", b"\n\n", b"  \r\n"])
def test_empty_file_is_an_error(data: bytes) -> None:
    report = validate_dataset(data, "any")
    assert report.n_examples == 0 and report.kind_detected is None
    assert [e.message for e in report.errors] == ["the file contains no examples"]
    with pytest.raises(SpecError, match="no examples"):
        parse_dataset(data, "supervised")


def test_max_errors_and_parse_raises_first() -> None:
    data = jsonl(SFT, *([b"oops"] * 30))
    report = validate_dataset(data, "supervised", max_errors=5)
    assert [e.line for e in report.errors] == [2, 3, 4, 5, 6]
    assert len(validate_dataset(data, "supervised").errors) == 20
    with pytest.raises(SpecError) as info:
        parse_dataset(data, "supervised")
    assert info.value.line == 2


def test_unknown_kind_is_a_programming_error() -> None:
    kind: Any = "chat"
    with pytest.raises(ValueError, match="kind must be one of"):
        validate_dataset(jsonl(SFT), kind)


# --- example-level errors: line and param ------------------------------------------------


def sft(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


@pytest.mark.parametrize(
    ("row", "param", "message"),
    [
        ({"prompt": "x", "completion": "y"}, "messages", "is required"),
        (sft(), "messages", "at least one message"),
        ({"messages": "hi"}, "messages", "must be a list"),
        (sft(msg("user"), "hello"), "messages[1]", "must be an object"),
        (sft(msg("user"), msg("assistant"), msg("bot")), "messages[2].role", "got 'bot'"),
        (sft(msg("user"), {"content": "x"}), "messages[1].role", "got None"),
        (sft(msg("tool"), msg("assistant")), "messages[0].role", "must be one of"),
        (sft(msg("user", [{"type": "text", "text": "hi"}]), msg("assistant")),
         "messages[0].content", "must be a string"),
        (sft(msg("user"), msg("assistant", None)), "messages[1].content", "must be a string"),
        (sft(msg("user"), msg("assistant", tool_calls=[])), "messages[1].tool_calls",
         "unsupported message field"),
        (sft(msg("user", name=3), msg("assistant")), "messages[0].name", "must be a string"),
        (sft(msg("user", weight=1), msg("assistant")), "messages[0].weight", "must be 0 or 1"),
        (sft(msg("user"), msg("assistant", weight=2)), "messages[1].weight", "must be 0 or 1"),
        (sft(msg("user"), msg("assistant", weight=True)), "messages[1].weight", "must be 0 or 1"),
        (sft(msg("user"), msg("user")), "messages", "assistant message"),
        (sft(msg("user"), msg("assistant", "  ")), "messages", "non-empty content"),
        (sft(msg("user"), msg("assistant", weight=0)), "messages", "to train on"),
        (sft(msg("user"), msg("assistant"), tools=[]), "tools", "tool calling"),
        (sft(*[msg("user")] * (MAX_MESSAGES + 1)), "messages", f"at most {MAX_MESSAGES}"),
    ],
)  # fmt: skip
def test_supervised_errors(row: dict[str, Any], param: str, message: str) -> None:
    error = only_error(jsonl(SFT, SFT, row), "supervised")
    assert (error.line, error.param) == (3, param)
    assert message in error.message


@pytest.mark.parametrize(
    ("row", "param", "message"),
    [
        ({"answer": "4"}, "messages", "is required"),
        (sft(msg("user"), msg("assistant", "4"), answer="4"), "messages[1].role", "the prompt"),
        (sft(msg("user", 4)), "messages[0].content", "must be a string"),
        (sft(msg("user"), functions=[]), "functions", "tool calling"),
    ],
)
def test_reinforcement_errors(row: dict[str, Any], param: str, message: str) -> None:
    error = only_error(jsonl(RL, row), "reinforcement")
    assert (error.line, error.param) == (2, param)
    assert message in error.message


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ({"input": None}, "input", "is required"),
        ({"input": []}, "input", "must be an object"),
        ({"input": {}}, "input.messages", "is required"),
        ({"input": {"messages": [msg("moderator")]}}, "input.messages[0].role", "must be one of"),
        ({"input": {"messages": [msg("user"), msg("assistant")]}}, "input.messages[1].role",
         "the prompt"),
        ({"preferred_output": None}, "preferred_output", "is required"),
        ({"preferred_output": []}, "preferred_output", "at least one"),
        ({"preferred_output": [msg("user")]}, "preferred_output[0].role", "must be assistant"),
        ({"non_preferred_output": [msg("assistant", "")]}, "non_preferred_output[0].content",
         "must not be empty"),
        ({"non_preferred_output": "no"}, "non_preferred_output", "must be a list"),
    ],
)  # fmt: skip
def test_dpo_errors(change: dict[str, Any], param: str, message: str) -> None:
    row = {key: value for key, value in {**DPO, **change}.items() if value is not None}
    error = only_error(jsonl(DPO, row), "dpo")
    assert (error.line, error.param) == (2, param)
    assert message in error.message


def test_any_validates_the_whole_file_as_the_first_kind() -> None:
    report = validate_dataset(jsonl(b"", RL, SFT, RL), "any")
    assert report.kind_detected == "reinforcement" and report.n_examples == 2
    (error,) = report.errors
    assert (error.line, error.param) == (3, "messages[2].role")
    assert "validated as reinforcement, detected from line 2" in error.message


def test_explicit_kind_refuses_other_formats() -> None:
    assert only_error(jsonl(DPO), "supervised").param == "messages"
    assert only_error(jsonl(SFT), "dpo").param == "input"
    assert only_error(jsonl(SFT), "reinforcement").param == "messages[2].role"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    report = validate_dataset(data, "any")
    assert report.n_examples >= 0
    assert all(isinstance(e, SpecError) for e in report.errors)


@given(
    st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["messages", "role", "content", "input"]), inner)
            ),
            max_leaves=10,
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["supervised", "reinforcement", "dpo", "any"]),
)
def test_arbitrary_json_never_raises(rows: list[Any], kind: Any) -> None:
    report = validate_dataset(jsonl(*rows), kind)
    assert report.n_examples + len(report.errors) == len(rows)


def test_docstring_examples() -> None:
    result = doctest.testmod(datasets)
    assert result.attempted > 0 and result.failed == 0
