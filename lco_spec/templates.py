"""Grader templates: `{{item.<path>}}` and `{{sample.<field>}}` inside a grader's strings.

A template is parsed once (`parse_template`) into literal text and reference paths, then
rendered per sample (`render`). Non-string item values render as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from lco_spec.errors import GraderError

# Only identifier-like `{{ ... }}` are references, so LaTeX such as `\frac{{a}}{b}` in a
# reference stays literal text; an identifier-like one that is not item./sample. is a typo.
_REF = re.compile(r"\{\{\s*([A-Za-z_][\w.\-]*)\s*\}\}")
SAMPLE_FIELDS = frozenset({"output_text"})


def parse_template(text: str) -> list[str | tuple[str, ...]]:
    """Split a template into literal strings and reference paths like ("item", "a", "b")."""
    parts: list[str | tuple[str, ...]] = []
    pos = 0
    for m in _REF.finditer(text):
        path = tuple(m.group(1).split("."))
        if path[0] not in ("item", "sample") or len(path) < 2 or "" in path:
            raise ValueError(
                f"unknown template reference {m.group(0)!r}: "
                "use {{item.<field>}} or {{sample.output_text}}"
            )
        if path[0] == "sample" and ".".join(path[1:]) not in SAMPLE_FIELDS:
            raise ValueError(f"unknown sample field in {m.group(0)!r}: only sample.output_text")
        parts.extend([text[pos : m.start()], path])
        pos = m.end()
    parts.append(text[pos:])
    return [p for p in parts if p != ""]


def check_template(text: str) -> str:
    """`text` if it parses (a pydantic validator), else ValueError naming the reference."""
    parse_template(text)
    return text


def lookup(item: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path through dicts (keys) and lists (integer indices); KeyError if absent."""
    value = item
    for key in path:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdecimal() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise KeyError(".".join(path))
    return value


def render(parts: list[str | tuple[str, ...]], output_text: str, item: Mapping[str, Any]) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "sample":
            out.append(output_text)
        else:
            try:
                value = lookup(item, part[1:])
            except KeyError:
                raise GraderError(f"item has no field {'.'.join(part[1:])!r}") from None
            out.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "".join(out)


def render_template(text: str, output_text: str, item: Mapping[str, Any]) -> str:
    """Substitute references; non-string item values are rendered as JSON.

    >>> render_template("{{item.q.n}}: {{sample.output_text}}", "yes", {"q": {"n": 3}})
    '3: yes'
    """
    return render(parse_template(text), output_text, item)
