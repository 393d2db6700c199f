"""The configuration reference in the docs is the one the code validates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.config import KEYS
from infra.config_reference import END, START, embed

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs/runbooks/90-reference/configuration.md"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_config_reference_matches_the_code(document: Path) -> None:
    text = document.read_text()
    assert START in text and END in text, f"{document} lacks the reference markers"
    if os.environ.get("UPDATE_DOCS") == "1":
        document.write_text(embed(text))
        text = document.read_text()
    assert embed(text) == text, (
        f"{document.name}'s configuration reference is stale: "
        "UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_config.py")
    for key in KEYS:
        assert f"`choiros:{key}`" in text
