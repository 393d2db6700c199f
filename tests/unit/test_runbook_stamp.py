"""The Last verified line moves only for runbooks whose rehearsal passed, and only the line
itself: an example of it in a code block stays."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from choiros_infra.runbook_stamp import stamp, valid_label

pytestmark = pytest.mark.unit

OLD = "Last verified: never (updated by CI)"


def runbook(root: Path, name: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {name}\n\n{OLD}\n\n## Purpose\n")
    return path


def test_only_the_passed_runbooks_are_stamped(tmp_path: Path) -> None:
    good = runbook(tmp_path, "30-operations/a.md")
    bad = runbook(tmp_path, "30-operations/b.md")
    changed = stamp(tmp_path, ["30-operations/a.md", "missing.md"], "kitchen", date(2026, 11, 25))
    assert changed == [good]
    assert "Last verified: 2026-11-25 against kitchen (updated by CI)\n" in good.read_text()
    assert OLD in bad.read_text()
    assert stamp(tmp_path, ["30-operations/a.md"], "kitchen", date(2026, 11, 25)) == []


def test_an_example_in_a_code_block_is_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "50-testing/t.md"
    path.parent.mkdir(parents=True)
    example = f"```text\n{OLD}\n```\n"
    path.write_text(f"# T\n\n{example}\nLast verified: 2026-01-02 against kitchen (updated by CI)"
                    "\n\n## Purpose\n")
    assert stamp(tmp_path, ["50-testing/t.md"], "kitchen", date(2026, 11, 25)) == [path]
    text = path.read_text()
    assert example in text
    assert "\nLast verified: 2026-11-25 against kitchen (updated by CI)\n" in text


@pytest.mark.parametrize(("label", "ok"), [("kitchen", True), ("prod eu-west-1", True),
                                           ("", False), ("x\nLast verified", False)])
def test_labels_are_short_single_lines(label: str, ok: bool) -> None:
    assert valid_label(label) is ok
