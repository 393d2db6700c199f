"""Rewriting a runbook's ``Last verified:`` line after its checks passed on a host.

Every runbook carries exactly one line ``Last verified: ... (updated by CI)`` (the docs lint
enforces it). ``choiros-infra verify --stamp-runbooks LABEL`` rewrites it, for each runbook
whose checks all passed in that run, to ``Last verified: YYYY-MM-DD against LABEL (updated by
CI)``; a runbook with a failure keeps its old date, which is the point.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path

_LINE = re.compile(r"^Last verified: .*\(updated by CI\)$", re.M)
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,60}$")


def valid_label(label: str) -> bool:
    return bool(_LABEL.fullmatch(label))


def stamp(runbooks: Path, passed: Iterable[str], label: str, day: date) -> list[Path]:
    """Rewrite the line in each runbook (paths relative to ``runbooks``); return those changed."""
    changed: list[Path] = []
    line = f"Last verified: {day.isoformat()} against {label} (updated by CI)"
    for relative in sorted(set(passed)):
        path = runbooks / relative
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new, count = _LINE.subn(line, text, count=1)
        if count and new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
