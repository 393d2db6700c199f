"""The documented stack set-up works with the real Pulumi CLI: the example is copied before
`pulumi stack init` (a copy made after it would overwrite what init wrote), and list keys are
set with `--path`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs/runbooks/20-deployment/02-infrastructure.md"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_the_example_is_copied_before_stack_init(document: Path) -> None:
    text = document.read_text()
    copy = text.index("cp Pulumi.example.yaml Pulumi.production.yaml")
    init = text.index("pulumi stack init production")
    assert copy < init, f"{document.name}: `pulumi stack init` comes before the copy"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_list_keys_are_set_with_path(document: Path) -> None:
    text = document.read_text()
    for key in ("admin_cidrs", "secrets"):
        assert not re.search(rf"pulumi config set choiros:{key}\b", text), key
    assert "pulumi config set --path 'choiros:admin_cidrs[0]'" in text
