"""Grader templates in OpenAI's syntax: `{{ namespace.path }}` inside a grader's strings.

The namespaces are those of OpenAI's graders guide:

- `item`: the dataset line, read with a JSON-path-like path: nested fields
  `{{item.a.b}}`, list indexes `{{item.answers[0]}}` (or `{{item.answers.0}}`), and
  quoted keys for odd names `{{item["a key"]}}`;
- `sample`: the completion, as `{{sample.output_text}}`, or parsed as JSON:
  `{{sample.output_json}}` and paths into it, `{{sample.output_json.answer[1]}}`.

Anything else that looks like a reference (starts with a name) is refused when the grader
is validated, naming the field: a template never silently becomes constant text that a
model could learn to print. Braces around something that is no name (LaTeX's
`\\frac{{1}}{2}`) stay literal. A template is parsed once (`parse_template`) and rendered
per sample (`render`); non-string values render as JSON.

    >>> render_template("{{ item.answers[1] }} / {{sample.output_json.x}}", '{"x": 2}',
    ...                 {"answers": ["a", "b"]})
    'b / 2'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lco_spec.errors import GraderError

# A `{{ ... }}` holding no braces; it is a reference when its content starts with a name.
_BRACES = re.compile(r"\{\{([^{}]*)\}\}")
_STARTS_WITH_NAME = re.compile(r"\s*[A-Za-z_]")
# One step of a path: `.key` (letters, digits, _ and -), `[n]`, `["key"]` or `['key']`.
_STEP = re.compile(r"""\.([\w\-]+)|\[(\d+)\]|\["([^"\]]*)"\]|\['([^'\]]*)'\]""")
_NAMESPACE = re.compile(r"[A-Za-z_]\w*")
SAMPLE_FIELDS = ("output_text", "output_json")
_USAGE = (
    "use {{item.<field>}} (nested fields with '.', list indexes with [n]), "
    "{{sample.output_text}} or {{sample.output_json.<field>}}"
)

Step = str | int


@dataclass(frozen=True)
class Ref:
    """A reference: `namespace` ("item" or "sample") and the steps after it."""

    namespace: str
    path: tuple[Step, ...]

    def text(self) -> str:
        """The path as a user writes it, without the namespace: `answers[0].text`."""
        return path_text(self.path)


def path_text(path: tuple[Step, ...]) -> str:
    """`("a", 0, "b")` as `a[0].b`.

    >>> path_text(("answers", 0, "text"))
    'answers[0].text'
    """
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def _parse_ref(content: str, whole: str) -> Ref:
    text = content.strip()
    head = _NAMESPACE.match(text)
    if head is None or head.group() not in ("item", "sample"):
        raise ValueError(f"unknown template reference {whole!r}: {_USAGE}")
    path: list[Step] = []
    pos = head.end()
    while pos < len(text):
        step = _STEP.match(text, pos)
        if step is None:
            raise ValueError(
                f"cannot read template reference {whole!r} at {text[pos:]!r}: {_USAGE}"
            )
        key, index, dq, sq = step.groups()
        path.append(
            int(index) if index is not None else next(s for s in (key, dq, sq) if s is not None)
        )
        pos = step.end()
    ref = Ref(head.group(), tuple(path))
    if not path:
        raise ValueError(f"template reference {whole!r} names no field: {_USAGE}")
    if ref.namespace == "sample":
        if path[0] not in SAMPLE_FIELDS:
            raise ValueError(
                f"unknown sample field in {whole!r}: only sample.output_text and "
                "sample.output_json (with a path into it) are supported"
            )
        if path[0] == "output_text" and len(path) > 1:
            raise ValueError(f"{whole!r}: sample.output_text is text and has no fields")
    return ref


Template = list[str | Ref]


def parse_template(text: str) -> Template:
    """Split a template into literal strings and references; ValueError for a bad one.

    >>> parse_template(r"\\frac{{1}}{2} = {{ item.a[0] }}")
    ['\\\\frac{{1}}{2} = ', Ref(namespace='item', path=('a', 0))]
    """
    parts: Template = []
    pos = 0
    for m in _BRACES.finditer(text):
        if not _STARTS_WITH_NAME.match(m.group(1)):
            continue  # LaTeX and other braces: literal text
        parts.extend([text[pos : m.start()], _parse_ref(m.group(1), m.group(0))])
        pos = m.end()
    parts.append(text[pos:])
    return [p for p in parts if p != ""]


def check_template(text: str) -> str:
    """`text` if it parses (a pydantic validator), else ValueError naming the reference."""
    parse_template(text)
    return text


def lookup(value: Any, path: tuple[Step, ...]) -> Any:
    """Follow `path` through objects (keys) and lists (indexes; a digit key also indexes a
    list); KeyError if a step is absent."""
    for step in path:
        if isinstance(value, Mapping) and str(step) in value and not isinstance(step, int):
            value = value[step]
        elif isinstance(value, list) and (isinstance(step, int) or step.isdecimal()):
            index = int(step)
            if index >= len(value):
                raise KeyError(path_text(path))
            value = value[index]
        else:
            raise KeyError(path_text(path))
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_UNPARSED = object()


def render(parts: Template, output_text: str, item: Mapping[str, Any]) -> str:
    """The template's text for one sample. GraderError when the item lacks a field, or the
    sample is not JSON (or lacks the field) where the template reads `output_json`: the
    sample then scores 0, as a model cannot earn reward by not answering in JSON."""
    out = []
    sample_json: Any = _UNPARSED
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part.namespace == "item":
            try:
                out.append(_as_text(lookup(item, part.path)))
            except KeyError:
                raise GraderError(f"item has no field {part.text()!r}") from None
        elif part.path[0] == "output_text":
            out.append(output_text)
        else:
            if sample_json is _UNPARSED:
                try:
                    sample_json = json.loads(output_text)
                except (ValueError, RecursionError):
                    raise GraderError(
                        "the sample is not JSON (read as sample.output_json)"
                    ) from None
            try:
                out.append(_as_text(lookup(sample_json, part.path[1:])))
            except KeyError:
                raise GraderError(f"the sample's JSON has no field {part.text()!r}") from None
    return "".join(out)


def render_template(text: str, output_text: str, item: Mapping[str, Any]) -> str:
    """Parse and render in one call (parse once with `parse_template` in loops).

    >>> render_template("{{item.q.n}}: {{sample.output_text}}", "yes", {"q": {"n": 3}})
    '3: yes'
    """
    return render(parse_template(text), output_text, item)
