"""Rewriting a runbook's ``Last verified:`` line after a rehearsal of it passed on a host.

Every runbook carries exactly one line ``Last verified: ... (updated by CI)`` (the docs lint
enforces it). ``choiros-infra rehearse --stamp-runbooks LABEL`` rewrites it, for each runbook
whose marked procedures ran and whose expect blocks passed afterwards, to ``Last verified:
YYYY-MM-DD against LABEL (updated by CI)``; a runbook with a failure keeps its old date, which
is the point. The line is found as the docs lint finds it: a paragraph line (through
:mod:`choiros_infra.markdown_doc`), so an example of the line in a code block is never
rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from choiros_infra import markdown_doc

PREFIX = "Last verified:"
_LINE = re.compile(rf"^{PREFIX} .*\(updated by CI\)$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,60}$")


def valid_label(label: str) -> bool:
    return bool(_LABEL.fullmatch(label))


def stamp(runbooks: Path, passed: Iterable[str], label: str, day: date) -> list[Path]:
    """Rewrite the line in each runbook (paths relative to ``runbooks``); return those changed."""
    changed: list[Path] = []
    line = f"{PREFIX} {day.isoformat()} against {label} (updated by CI)"
    for relative in sorted(set(passed)):
        path = runbooks / relative
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        found = [n for n, t in markdown_doc.parse(text).lines_starting(PREFIX)
                 if _LINE.fullmatch(t)]
        if not found:
            continue
        lines = text.splitlines(keepends=True)
        old = lines[found[0] - 1]
        new = line + old[len(old.rstrip("\r\n")):]
        if new != old:
            lines[found[0] - 1] = new
            path.write_text("".join(lines), encoding="utf-8")
            changed.append(path)
    return changed
