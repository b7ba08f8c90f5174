"""The one error type for invalid user input, carrying the offending field or line.

The API turns it into OpenAI's error envelope (`param` = `field`); the CLI prints it.
"""

from __future__ import annotations


class SpecError(ValueError):
    """Invalid user input: a config value, a dataset line, a grader template."""

    def __init__(self, message: str, *, param: str | None = None, line: int | None = None):
        self.message = message
        self.param = param
        self.line = line
        where = []
        if line is not None:
            where.append(f"line {line}")
        if param:
            where.append(param)
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


def pydantic_error_to_spec_error(exc: object, prefix: str = "") -> SpecError:
    """Turn the first error of a pydantic ValidationError into a SpecError naming its field."""
    errors = exc.errors() if hasattr(exc, "errors") else []  # type: ignore[union-attr]
    if not errors:
        return SpecError(str(exc), param=prefix or None)
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
    # Discriminated unions put the tag name in the location; it is noise to a user.
    param = ".".join([prefix, *loc] if prefix else loc) or None
    msg = first.get("msg", "invalid value")
    return SpecError(msg, param=param)
