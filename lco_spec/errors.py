"""Error types: `SpecError` for invalid user input, carrying the offending field or line,
and `GraderError`/`GraderTimeout` for one sample that could not be graded.

The API turns a SpecError into OpenAI's error envelope (`param` = `field`); the CLI prints
it. The trainer scores a sample whose grader raised GraderError as 0 and counts it.
"""

from __future__ import annotations


class SpecError(ValueError):
    """Invalid user input: a config value, a dataset line, a grader template."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        line: int | None = None,
        code: str | None = None,
    ):
        self.message = message
        self.param = param
        self.line = line
        # The error code a job fails with when the trainer raises this (`invalid_request`
        # if none), e.g. `grader_timeout`.
        self.code = code
        where = []
        if line is not None:
            where.append(f"line {line}")
        if param:
            where.append(param)
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class GraderError(Exception):
    """One sample could not be graded (missing item field, bad reference, formula error)."""


class GraderTimeout(GraderError):
    """A grader call ran past its time limit and was killed (counted apart from errors)."""


def pydantic_error_to_spec_error(
    exc: object, prefix: str = "", *, tagged_root: bool = False
) -> SpecError:
    """Turn the first error of a pydantic ValidationError into a SpecError naming its field.
    `tagged_root`: the validated value is itself a discriminated union (a grader), so the
    location starts with its tag, and a bad or missing tag is the `type` field's fault."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return SpecError(str(exc), param=prefix or None)
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    if tagged_root:
        loc = ["grader", *loc]
    # Discriminated unions insert the chosen tag (a grader type) after the field that holds
    # the union (`grader`, and each entry of a multi's `graders`), plain unions the member's
    # type (`n_epochs.constrained-int` of `int | "auto"`), and validators their function
    # name: all noise to a user. The tag's place is known, so no list of tags is needed.
    parts: list[str] = []
    i = 0
    while i < len(loc):
        if loc[i] == "graders":  # graders.<key>.<tag>: keep the key, whatever its name
            parts.extend(loc[i : i + 2])
            i += 3
            continue
        if not loc[i].startswith(("function-", "constrained-", "literal[")):
            parts.append(loc[i])
        i += 2 if loc[i] == "grader" else 1
    if tagged_root:
        parts = parts[1:]
        if first.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            parts.append("type")
    param = ".".join([prefix, *parts] if prefix else parts) or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return SpecError(msg, param=param)
