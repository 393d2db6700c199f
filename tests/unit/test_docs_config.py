"""The configuration reference in the docs and Pulumi.yaml's config section are the ones the
code validates (both generated from infra.config.SETTINGS)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.config import SETTINGS
from infra.config_reference import END, PROJECT_MARKER, START, embed, embed_project

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs/runbooks/90-reference/configuration.md"]
REGENERATE = "UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_config.py"


def _in_step(document: Path, generate: Callable[[str], str]) -> str:
    text = document.read_text()
    if os.environ.get("UPDATE_DOCS") == "1":
        document.write_text(generate(text))
        text = document.read_text()
    assert generate(text) == text, f"{document.name} is stale: {REGENERATE}"
    return text


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_config_reference_matches_the_code(document: Path) -> None:
    text = document.read_text()
    assert START in text and END in text, f"{document} lacks the reference markers"
    text = _in_step(document, embed)
    for key in SETTINGS:
        assert f"`choiros:{key}`" in text


def test_pulumi_yaml_config_section_matches_the_code() -> None:
    text = (ROOT / "Pulumi.yaml").read_text()
    assert PROJECT_MARKER in text, "Pulumi.yaml lacks the generated section's marker"
    text = _in_step(ROOT / "Pulumi.yaml", embed_project)
    for key in SETTINGS:
        assert f"\n  choiros:{key}:\n" in text
