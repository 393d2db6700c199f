"""The results of a verify as rows and a report: pytest's JUnit turned into
:class:`CheckResult` rows grouped by runbook (tests/infra/conftest.py records each check's
runbook, and a title, as JUnit properties: the suites' from their docstrings, the runbook
statements' from their source; a JUnit file without them falls back on the statement items'
names, ``<file>:<line> <statement>``), and :func:`render_markdown`'s report: failures first,
counts per runbook and a total.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from choiros_infra.markdown_doc import github_anchor
from choiros_infra.verify import RUNBOOKS

Outcome = Literal["passed", "failed", "error", "skipped", "xfailed"]
UNMAPPED = "(no runbook)"


@dataclass(frozen=True)
class CheckResult:
    """One check as the report shows it."""

    runbook: str  # e.g. 30-operations/security.md, or UNMAPPED
    where: str  # the section (suite tests) or "line N" (runbook statements)
    title: str
    outcome: Outcome
    message: str = ""
    detail: str = ""
    seconds: float = 0.0
    properties: tuple[tuple[str, str], ...] = ()
    id: str = ""  # pytest's: "<classname>::<name>"

    @property
    def bad(self) -> bool:
        return self.outcome in ("failed", "error")

    def as_json(self) -> dict[str, object]:
        """One check as `verify --json` writes it. A runbook statement's subject is what it
        names (``file /etc/x``) and its expectation the clauses after the colon; a suite
        test's subject is its pytest id and its expectation its title."""
        line = re.fullmatch(r"line (\d+)", self.where)
        subject, sep, clauses = self.title.partition(": ")
        statement = bool(line and sep)
        return {"id": self.id, "runbook": self.runbook,
                "line": int(line[1]) if line else None,
                "section": self.where.removeprefix("#") if self.where.startswith("#") else None,
                "subject": subject if statement else self.id,
                "status": self.outcome,
                "expected": clauses if statement else self.title,
                "observed": self.message if self.outcome != "passed" else "",
                "seconds": round(self.seconds, 3)}


# A runbook statement's item name: "<file relative to docs/runbooks>:<line> <statement>".
_STATEMENT_ITEM = re.compile(r"^(?P<file>[^\s:]+\.md):(?P<line>\d+) (?P<text>.*)$", re.S)
# A runbook that does not parse: "docs/runbooks/<file>:<line>: <problem>".
_COLLECTION_ERROR = re.compile(r"(?:^|/)runbooks/(?P<file>\S+?\.md):(?P<line>\d+): ")
_HIDDEN_PROPERTIES = frozenset({"runbook", "title", "line"})


def _one_line(text: str) -> str:
    """A failure's first line, without the exception name or the statement's file:line
    (the report shows both already)."""
    line = next((s for s in (t.strip() for t in text.splitlines()) if s), "")
    line = re.sub(r"^(AssertionError|Failed): ", "", line)
    return re.sub(r"^\S+\.md:\d+: ", "", line)


def _dotted_runbooks(runbooks: Path) -> dict[str, str]:
    """How JUnit spells a runbook file's collection error (``docs.runbooks.a.b.md``)."""
    if not runbooks.is_dir():
        return {}
    return {".".join(p.relative_to(runbooks.parent.parent).parts): p.relative_to(runbooks)
            .as_posix() for p in runbooks.rglob("*.md")}


def read_junit(path: Path, runbooks: Path = RUNBOOKS) -> list[CheckResult]:
    """Every testcase of a pytest JUnit file (xunit1 or xunit2) as a CheckResult."""
    dotted = _dotted_runbooks(runbooks)
    results: list[CheckResult] = []
    root = ET.parse(path).getroot()  # noqa: S314 - pytest's own output, not untrusted input
    for case in root.iter("testcase"):
        props = tuple((p.get("name", ""), p.get("value", ""))
                      for p in case.iter("property"))
        named = dict(props)
        name, classname = case.get("name", ""), case.get("classname", "")
        outcome: Outcome = "passed"
        message = detail = ""
        for tag, kind in (("skipped", "skipped"), ("error", "error"), ("failure", "failed")):
            element = case.find(tag)
            if element is not None:
                xfail = element.get("type") == "pytest.xfail"
                outcome = "xfailed" if xfail else kind  # type: ignore[assignment]
                message = element.get("message", "")
                detail = (element.text or "").strip()
        statement = _STATEMENT_ITEM.match(name)
        if "runbook" in named:
            runbook, _, section = named["runbook"].partition("#")
            where = f"line {named['line']}" if "line" in named else (
                f"#{section}" if section else "")
            title = named.get("title", name)
        elif statement:
            runbook, where, title = (statement["file"], f"line {statement['line']}",
                                     statement["text"])
        elif not classname and (located := _COLLECTION_ERROR.search(detail)):
            runbook, where = located["file"], f"line {located['line']}"
            title = "the runbook's expect blocks do not parse"
        elif not classname and name in dotted:
            runbook, where, title = dotted[name], "", "the runbook could not be collected"
        else:
            runbook, where = UNMAPPED, ""
            title = f"{classname}::{name}" if classname else name
        results.append(CheckResult(
            runbook=runbook, where=where, title=title, outcome=outcome,
            message=_one_line(detail if message in ("", "collection failure") else message),
            detail=detail,
            seconds=float(case.get("time", "0") or 0),
            properties=tuple(p for p in props if p[0] not in _HIDDEN_PROPERTIES),
            id=f"{classname}::{name}" if classname else name))
    return results


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def add(self, result: CheckResult) -> None:
        if result.bad:
            self.failed += 1
        elif result.outcome in ("skipped", "xfailed"):
            self.skipped += 1
        else:
            self.passed += 1


@dataclass
class RunbookGroup:
    runbook: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def counts(self) -> Counts:
        counts = Counts()
        for result in self.results:
            counts.add(result)
        return counts


def _order(result: CheckResult) -> tuple[int, str, int, str]:
    rank = 0 if result.bad else 1 if result.outcome == "xfailed" else (
        3 if result.outcome == "skipped" else 2)
    line = re.match(r"line (\d+)$", result.where)
    return rank, "" if line else result.where, int(line[1]) if line else 0, result.title


def group_by_runbook(results: Iterable[CheckResult]) -> list[RunbookGroup]:
    """Groups with failures first (most failures first), then by runbook path; inside a
    group failures first, then known issues (xfail), passed, skipped."""
    groups: dict[str, RunbookGroup] = {}
    for result in results:
        groups.setdefault(result.runbook, RunbookGroup(result.runbook)).results.append(result)
    for group in groups.values():
        group.results.sort(key=_order)
    return sorted(groups.values(), key=lambda g: (-g.counts.failed, g.runbook == UNMAPPED,
                                                  g.runbook))


def total(results: Iterable[CheckResult]) -> Counts:
    counts = Counts()
    for result in results:
        counts.add(result)
    return counts


_MARK = {"passed": "pass", "failed": "**FAIL**", "error": "**ERROR**", "skipped": "skip",
         "xfailed": "known issue (xfail)"}
DETAIL_LINES = 30


def _fence(text: str) -> str:
    lines = text.splitlines()
    if len(lines) > DETAIL_LINES:
        lines = [*lines[:DETAIL_LINES], f"... ({len(lines) - DETAIL_LINES} more lines)"]
    body = "\n".join("    " + line for line in lines)
    return f"  ```text\n{body}\n  ```"


def render_markdown(results: Sequence[CheckResult], *, host: str, target: str,
                    stack_file: str, seconds: float | None = None) -> str:
    """The Markdown report: verdict and totals, a table of counts per runbook, then each
    runbook's checks, failures first with what the host showed."""
    groups = group_by_runbook(results)
    counts = total(results)
    verdict_word = "FAILED" if counts.failed else "PASSED" if counts.total else "NO CHECKS"
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    out = [
        f"# Verify report: {host}",
        "",
        f"- target: {target}; stack file: `{stack_file}`",
        f"- result: **{verdict_word}**: {counts.failed} of {counts.total} checks failed "
        f"({counts.passed} passed, {counts.skipped} skipped){took}",
        "",
        "| runbook | checks | failed | passed | skipped |",
        "|---|--:|--:|--:|--:|",
    ]
    for group in groups:
        c = group.counts
        out.append(f"| [{group.runbook}](#{github_anchor(group.runbook)}) | {c.total} "
                   f"| {c.failed} | {c.passed} | {c.skipped} |")
    out += [f"| **total** | {counts.total} | {counts.failed} | {counts.passed} "
            f"| {counts.skipped} |", ""]
    for group in groups:
        c = group.counts
        out += [f"## {group.runbook}", "",
                f"{c.failed} failed, {c.passed} passed, {c.skipped} skipped", ""]
        for result in group.results:
            where = f" ({result.where})" if result.where else ""
            extra = "".join(f"; {k} {v}" for k, v in result.properties)
            line = f"- {_MARK[result.outcome]} `{result.title}`{where}{extra}"
            if result.outcome != "passed":
                line += f": {result.message}" if result.message else ""
            out.append(line)
            if result.bad and result.detail:
                out.append(_fence(result.detail))
        out.append("")
    return "\n".join(out)


def render_json(results: Sequence[CheckResult], *, host: str, target: str, stack_file: str,
                seconds: float | None = None) -> str:
    """`verify --json`: the run and one object per check (see CheckResult.as_json)."""
    counts = total(results)
    return json.dumps({
        "host": host, "target": target, "stack_file": stack_file,
        "seconds": None if seconds is None else round(seconds, 2),
        "counts": {"total": counts.total, "failed": counts.failed, "passed": counts.passed,
                   "skipped": counts.skipped},
        "checks": [r.as_json() for r in results]}, indent=1) + "\n"

