"""The configuration reference and Pulumi.yaml's config section, generated from
``infra.config.SETTINGS`` itself.

The README and the reference runbook embed the Markdown table between markers; Pulumi.yaml's
``config:`` section follows its marker comment. A unit test fails when any of them falls out of
step with the code. Regenerate with
``UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_config.py``.
"""

from __future__ import annotations

import copy
from dataclasses import MISSING, fields

import yaml

from infra.config import NAMESPACE, SETTINGS, Setting, StackConfig

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
PROJECT_MARKER = "# config: generated from infra/config.py SETTINGS (infra/config_reference.py)"

# What Pulumi.yaml declares for each kind (Pulumi's project config schema has no object type,
# so a mapping is declared without one).
_PULUMI_TYPES: dict[str, dict[str, object]] = {
    "string": {"type": "string"}, "integer": {"type": "integer"},
    "boolean": {"type": "boolean"}, "array": {"type": "array", "items": {"type": "string"}},
    "mapping": {},
}


def _field_default(key: str) -> object:
    for field in fields(StackConfig):
        if field.name == key:
            return field.default
    raise KeyError(key)


def _default(key: str, setting: Setting) -> str:
    """The default column: required, unset, a value, or the setting's note."""
    if setting.default_note:
        return setting.default_note
    value = _field_default(key)
    if value is MISSING or setting.required:
        return "required"
    if value in (None, ()):
        return "unset"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def reference_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, setting in SETTINGS.items():
        rows.append(f"| `{NAMESPACE}:{key}` | {_default(key, setting)} | {setting.summary} |")
    return "\n".join(rows)


def embed(document: str) -> str:
    """``document`` with the text between the reference markers replaced by the table."""
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{reference_table()}\n{END}{tail}"


def _pulumi_default(key: str, setting: Setting) -> object:
    """A value that means the same as leaving the key out: Pulumi requires a value (or a
    default) for every declared project key, so "unset" is "" / [] / {}."""
    value = _field_default(key)
    if setting.default_note or value is None:
        return ""
    if value == ():
        return {} if setting.kind == "mapping" else []
    return value


def project_config() -> dict[str, dict[str, object]]:
    """Pulumi.yaml's ``config:`` mapping: every key with its type, description and default
    (required keys have none, so Pulumi asks for them)."""
    config: dict[str, dict[str, object]] = {}
    for key, setting in SETTINGS.items():
        spec = {**copy.deepcopy(_PULUMI_TYPES[setting.kind]), "description": setting.summary}
        if not setting.required:
            spec["default"] = _pulumi_default(key, setting)
        config[f"{NAMESPACE}:{key}"] = spec
    return config


def embed_project(document: str) -> str:
    """Pulumi.yaml's text with everything after the marker comment generated."""
    head, marker, _ = document.partition(PROJECT_MARKER)
    if not marker:
        raise ValueError(f"Pulumi.yaml lacks the line {PROJECT_MARKER!r}")
    section = yaml.safe_dump({"config": project_config()}, sort_keys=False, width=1000,
                             allow_unicode=True)
    return f"{head}{PROJECT_MARKER}\n{section}"
