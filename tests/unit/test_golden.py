"""Golden files: the rendered host configuration, reviewed as text.

A change to a template shows up here as a readable diff. When the change is intended, rewrite
the golden files with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py`` and review
``git diff tests/golden``. ``user-data.aws.sha256`` pins the example stack's exact EC2
user-data bytes (a change to them replaces the host). Host tools are shipped verbatim from
provisioning/host_tools and are not repeated here.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from sample_stack import stack_config

from choiros_infra.targets import kitchen
from infra.config import load_stack_file
from infra.user_data import render_for
from provisioning.render import HOST_TOOLS
from provisioning.target import AWS

pytestmark = pytest.mark.unit
KITCHEN = kitchen()

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TARGETS: dict[str, Any] = {"aws": AWS, "kitchen": KITCHEN}
VERBATIM = {path for path, _ in HOST_TOOLS}

# The sha256 of the example stack's EC2 user-data: any change to these bytes replaces
# production's host, so it is pinned here and rewritten only on purpose
# (UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py).
GOLDEN_USER_DATA_SHA256 = GOLDEN / "user-data.aws.sha256"


def _example_user_data() -> bytes:
    cfg = load_stack_file(GOLDEN.parents[1] / "Pulumi.example.yaml")
    return render_for(cfg, AWS, "choiros-example-artifacts", "choiros-example-backups").user_data


def test_example_user_data_matches_the_golden_sha256() -> None:
    digest = hashlib.sha256(_example_user_data()).hexdigest()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN_USER_DATA_SHA256.write_text(digest + "\n")
    assert GOLDEN_USER_DATA_SHA256.read_text().strip() == digest, (
        "the example stack's user-data bytes changed; if intended, rerun with UPDATE_GOLDEN=1")


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
