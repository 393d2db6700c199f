"""Golden files: the rendered host configuration, reviewed as text.

A change to a template shows up here as a readable diff. When the change is intended, rewrite
the golden files with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py`` and review
``git diff tests/golden``. Host tools are shipped verbatim from provisioning/host_tools and are
not repeated here.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import pytest
from sample_stack import stack_config

from choiros_infra.targets import kitchen
from infra.user_data import render_for
from provisioning.render import HOST_TOOLS
from provisioning.target import AWS

pytestmark = pytest.mark.unit
KITCHEN = kitchen()

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TARGETS: dict[str, Any] = {"aws": AWS, "kitchen": KITCHEN}
VERBATIM = {path for path, _ in HOST_TOOLS}


def _expected_files(target_name: str) -> dict[str, str]:
    rendering = render_for(stack_config(), TARGETS[target_name], "choiros-example-artifacts",
                           "choiros-example-backups")
    files = {f.path.lstrip("/"): f.content for f in rendering.files if f.path not in VERBATIM}
    return files


@pytest.mark.parametrize("target_name", sorted(TARGETS))
def test_rendered_files_match_the_golden_files(target_name: str) -> None:
    root = GOLDEN / target_name
    expected = _expected_files(target_name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for relative, content in expected.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(content)
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert on_disk == set(expected), (
        f"golden files out of step; missing {sorted(set(expected) - on_disk)}, "
        f"extra {sorted(on_disk - set(expected))}; rerun with UPDATE_GOLDEN=1")
    problems = []
    for relative, content in sorted(expected.items()):
        golden = (root / relative).read_text()
        if golden != content:
            diff = difflib.unified_diff(golden.splitlines(keepends=True),
                                        content.splitlines(keepends=True),
                                        f"golden/{target_name}/{relative}", f"rendered /{relative}")
            problems.append("".join(diff))
    assert not problems, "rendered files differ from the golden files:\n" + "\n".join(problems)
