"""JSONL dataset validation for OpenAI's fine-tuning formats. Pure Python.

The API calls `validate_dataset` on upload and reports every error with its line; the
training core calls `parse_dataset`, which returns the examples or raises the first error.

    supervised     {"messages": [{"role": "system|developer|user|assistant", "content": "..."}]}
                   at least one assistant message with non-empty content to train on
    reinforcement  {"messages": [...prompt...], <reference fields the grader reads>}
                   the last message is the prompt (system, developer or user)
    dpo            {"input": {"messages": [...prompt...]},
                    "preferred_output": [assistant messages], "non_preferred_output": [...]}

Message fields are `role`, `content` (a string), optional `name`, and optional `weight`
(0 or 1, assistant only, as OpenAI's SFT has it); tool calls and multimodal content are
refused rather than silently dropped.

`kind="any"` detects the kind from the first line holding a JSON object: dpo if it has
`input`, `preferred_output` or `non_preferred_output`; supervised if its last message is
an assistant message; reinforcement otherwise. The whole file is then validated as that
kind, so a file mixing kinds fails on the lines that differ from the first.

    >>> validate_dataset(b'{"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}\\n',
    ...                  "any")
    DatasetReport(n_examples=1, kind_detected='reinforcement', errors=[])
    >>> r = validate_dataset(b'{"messages": [{"role": "bot", "content": "hi"}]}', "supervised")
    >>> r.errors[0].line, r.errors[0].param
    (1, 'messages[0].role')
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, get_args

from lco_spec.errors import SpecError

Kind = Literal["supervised", "reinforcement", "dpo", "any"]
DetectedKind = Literal["supervised", "reinforcement", "dpo"]

MAX_LINE_BYTES = 1 << 20
MAX_MESSAGES = 256
MAX_LINES = 1_000_000
ROLES = ("system", "developer", "user", "assistant")
PROMPT_ROLES = ("system", "developer", "user")
_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
# OpenAI accepts these for function calling; we cannot train on them, so say so.
_UNSUPPORTED_KEYS = ("tools", "functions", "parallel_tool_calls")
_DPO_KEYS = ("input", "preferred_output", "non_preferred_output")
_BOM = b"\xef\xbb\xbf"

Problem = tuple[str, str]  # (message, param)


@dataclass
class DatasetReport:
    """`errors` are SpecErrors with `.line` (1-based) and `.param` (e.g. `messages[2].role`).
    Scanning stops at the `max_errors`-th error, so `n_examples` then counts valid
    examples before it."""

    n_examples: int
    kind_detected: DetectedKind | None
    errors: list[SpecError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _check_messages(messages: Any, where: str) -> Problem | None:
    if messages is None:
        return "is required", where
    if not isinstance(messages, list):
        return "must be a list of messages", where
    if not messages:
        return "must contain at least one message", where
    if len(messages) > MAX_MESSAGES:
        return f"has {len(messages)} messages; at most {MAX_MESSAGES} are allowed", where
    for i, message in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(message, dict):
            return "must be an object with role and content", at
        for key in message:
            if key not in _MESSAGE_KEYS:
                return "unsupported message field (tool calls are not supported)", f"{at}.{key}"
        role = message.get("role")
        if role not in ROLES:
            return f"must be one of {', '.join(ROLES)}, got {role!r}", f"{at}.role"
        if not isinstance(message.get("content"), str):
            # Lists of content parts are multimodal in OpenAI's format; we train on text.
            return "must be a string", f"{at}.content"
        if "name" in message and not isinstance(message["name"], str):
            return "must be a string", f"{at}.name"
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant" or type(weight) is not int or weight not in (0, 1):
                return "must be 0 or 1, and only on assistant messages", f"{at}.weight"
    return None


def _check_prompt(messages: list[dict[str, Any]], where: str) -> Problem | None:
    if messages[-1]["role"] not in PROMPT_ROLES:
        last = f"{where}[{len(messages) - 1}].role"
        return "the last message must be the prompt (system, developer or user)", last
    return None


def _check_supervised(obj: dict[str, Any]) -> Problem | None:
    for key in _UNSUPPORTED_KEYS:
        if key in obj:
            return "tool calling is not supported", key
    problem = _check_messages(obj.get("messages"), "messages")
    if problem:
        return problem
    trainable = [
        m
        for m in obj["messages"]
        if m["role"] == "assistant" and m["content"].strip() and m.get("weight", 1) == 1
    ]
    if not trainable:
        return "needs an assistant message with non-empty content to train on", "messages"
    return None


def _check_reinforcement(obj: dict[str, Any]) -> Problem | None:
    for key in _UNSUPPORTED_KEYS:
        if key in obj:
            return "tool calling is not supported", key
    return _check_messages(obj.get("messages"), "messages") or _check_prompt(
        obj["messages"], "messages"
    )


def _check_dpo(obj: dict[str, Any]) -> Problem | None:
    prompt = obj.get("input")
    if not isinstance(prompt, dict):
        return ("is required" if prompt is None else "must be an object with messages"), "input"
    problem = _check_messages(prompt.get("messages"), "input.messages")
    if problem := problem or _check_prompt(prompt["messages"], "input.messages"):
        return problem
    for key in _DPO_KEYS[1:]:
        if problem := _check_messages(obj.get(key), key):
            return problem
        for i, message in enumerate(obj[key]):
            if message["role"] != "assistant":
                return "must be assistant", f"{key}[{i}].role"
            if not message["content"].strip():
                return "must not be empty", f"{key}[{i}].content"
    return None


_CHECKS = {
    "supervised": _check_supervised,
    "reinforcement": _check_reinforcement,
    "dpo": _check_dpo,
}


def _detect(obj: dict[str, Any]) -> DetectedKind:
    if any(key in obj for key in _DPO_KEYS):
        return "dpo"
    messages = obj.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "assistant":
        return "supervised"
    return "reinforcement"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_line(raw: bytes) -> dict[str, Any]:
    """One line as a JSON object, or ValueError with a message for the user."""
    if len(raw) > MAX_LINE_BYTES:
        raise ValueError(f"line is too long: at most {MAX_LINE_BYTES} bytes are allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, refused by _reject_constant
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"each line must be a JSON object, not {type(obj).__name__}")
    return obj


def _read_lines(source: BinaryIO) -> Iterator[bytes]:
    """The LF-separated lines of a binary stream, reading at most MAX_LINE_BYTES + 1 bytes of
    any one line into memory: the rest of an over-long line is skipped in chunks, and the
    line is given as its first MAX_LINE_BYTES + 1 bytes (enough for `_load_line` to refuse
    it). So a file of any size, even a single line of hundreds of MB, is read in bounded
    memory."""
    while raw := source.readline(MAX_LINE_BYTES + 1):
        if raw.endswith(b"\n"):
            yield raw[:-1]
            continue
        if len(raw) > MAX_LINE_BYTES:
            while (rest := source.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
        yield raw


def jsonl_lines(data: bytes | BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) of every non-blank line of a JSONL file (its bytes, or
    a binary stream read line by line), without a leading byte order mark. The one line
    rule for a dataset everywhere (upload, job creation, training): lines end at LF only, so
    a raw CR inside a JSON string (which `bytes.splitlines` would split on) stays part of
    its line."""
    lines = data.split(b"\n") if isinstance(data, bytes) else _read_lines(data)
    for lineno, raw in enumerate(lines, start=1):
        if lineno == 1 and raw.startswith(_BOM):  # Windows editors add one; it is not JSON
            raw = raw[len(_BOM) :]
        if raw.strip():
            yield lineno, raw


def first_examples(data: bytes | BinaryIO, n: int) -> list[dict[str, Any]]:
    """The first `n` lines of a JSONL file as JSON objects (the file was validated at
    upload; ValueError if a line is not an object)."""
    out: list[dict[str, Any]] = []
    for _, raw in jsonl_lines(data):
        if len(out) >= n:
            break
        out.append(_load_line(raw))
    return out


def _scan(
    data: bytes | BinaryIO, kind: Kind, max_errors: int, keep: bool
) -> tuple[DatasetReport, list[dict[str, Any]]]:
    if kind not in get_args(Kind):
        raise ValueError(f"kind must be one of {get_args(Kind)}, got {kind!r}")
    report = DatasetReport(n_examples=0, kind_detected=None if kind == "any" else kind)
    examples: list[dict[str, Any]] = []
    detected_at = 0
    for lineno, raw in jsonl_lines(data):
        if lineno > MAX_LINES:
            report.errors.append(
                SpecError(f"the file has more than {MAX_LINES} lines", line=lineno)
            )
            break
        try:
            obj = _load_line(raw)
        except ValueError as exc:
            report.errors.append(SpecError(str(exc), line=lineno))
        else:
            if report.kind_detected is None:
                report.kind_detected, detected_at = _detect(obj), lineno
            problem = _CHECKS[report.kind_detected](obj)
            if problem is None:
                report.n_examples += 1
                if keep:
                    examples.append(obj)
                continue
            message, param = problem
            if kind == "any":
                message += (
                    f" (validated as {report.kind_detected}, detected from line {detected_at})"
                )
            report.errors.append(SpecError(message, param=param, line=lineno))
        if len(report.errors) >= max_errors:
            break
    if report.n_examples == 0 and not report.errors:
        report.errors.append(SpecError("the file contains no examples"))
    return report, examples


def validate_dataset(data: bytes | BinaryIO, kind: Kind, max_errors: int = 20) -> DatasetReport:
    """Check every line of a JSONL file (its bytes, or a binary stream read line by line in
    bounded memory); stops after `max_errors` errors."""
    return _scan(data, kind, max(1, max_errors), keep=False)[0]


def parse_dataset(data: bytes, kind: Kind) -> list[dict[str, Any]]:
    """The examples of a valid JSONL file, or raise its first SpecError."""
    report, examples = _scan(data, kind, max_errors=1, keep=True)
    if report.errors:
        raise report.errors[0]
    return examples
