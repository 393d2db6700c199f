"""The configuration reference as Markdown, generated from ``infra.config`` itself.

The README and the reference runbook embed this table; a unit test fails when they fall out of
step with the code. Regenerate with
``UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_config.py``.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from infra.config import KEYS, NAMESPACE, StackConfig

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _default(key: str) -> str:
    for field in fields(StackConfig):
        if field.name == key:
            if field.default is MISSING:
                return "required"
            if field.default in (None, ()):
                return "unset"
            value = field.default
            return f"`{str(value).lower() if isinstance(value, bool) else value}`"
    return "unset"


def reference_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, description in KEYS.items():
        rows.append(f"| `{NAMESPACE}:{key}` | {_default(key)} | {description} |")
    return "\n".join(rows)


def embed(document: str) -> str:
    """``document`` with the text between the reference markers replaced by the table."""
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{reference_table()}\n{END}{tail}"
