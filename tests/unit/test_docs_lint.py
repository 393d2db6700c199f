"""The runbooks under docs/runbooks hold together: indexed, linked, structured, and checkable.

- every runbook is linked from docs/runbooks/README.md (the index);
- the Markdown is read with markdown-it-py (choiros_infra.markdown_doc), as the expect
  blocks and the rehearsal are;
- relative links in the runbooks and in the repository's README.md resolve to files (anchors
  are not checked);
- a procedure (any runbook outside 90-reference/) has the sections PROCEDURE_SECTIONS as
  ``## `` headings, each once and in that order; a reference page (90-reference/) has
  ``## Purpose``;
- every runbook has exactly one ``Last verified:`` line, in the form CI rewrites;
- every runbook has an expect block, or a line starting ``No expect block:`` saying why not;
- every expect statement parses (choiros_infra.expect.lint_runbooks);
- every rehearsal marking holds (choiros_infra.rehearse, 50-testing/rehearsal.md), and the
  share of procedures rehearsed, printed on every run, stays at or above REHEARSED_FLOOR.

The expect grammar (50-testing/expect-grammar.md) is maintained with the expect engine: it is
indexed and link-checked, and its expect block is checked like any other, but the section and
"Last verified" rules do not apply to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from choiros_infra import markdown_doc
from choiros_infra.expect import RunbookSyntaxError, lint_runbooks, parse_file
from choiros_infra.rehearse import coverage, read_runbooks
from choiros_infra.runbook_stamp import PREFIX as LAST_VERIFIED_PREFIX

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"
REFERENCE_DIR = "90-reference"
GRAMMAR = "50-testing/expect-grammar.md"

# Percent of the procedures a kitchen rehearsal runs: raised as procedures become runnable.
REHEARSED_FLOOR = 80
PROCEDURE_SECTIONS = ("Purpose", "When to use", "Prerequisites", "Steps", "Verify", "Roll back")
REFERENCE_SECTIONS = ("Purpose",)

# `never`, or a date and what it was verified against, e.g. "2026-11-25 against kitchen".
LAST_VERIFIED = re.compile(
    r"^Last verified: (never|\d{4}-\d{2}-\d{2} against [\w.:@-]+) \(updated by CI\)$")
NO_EXPECT = "No expect block: "
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def runbook_paths() -> list[Path]:
    """Every Markdown file under docs/runbooks except the index."""
    return sorted(p for p in RUNBOOKS.rglob("*.md") if p != INDEX)


def name(path: Path) -> str:
    return path.relative_to(RUNBOOKS).as_posix()


def document(path: Path) -> markdown_doc.Document:
    return markdown_doc.parse(path.read_text(encoding="utf-8"))


def relative_links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link in prose that points at a file, not a URL or an anchor."""
    return [(link.line, link.target) for link in markdown_doc.parse(text).links
            if not link.target.startswith("#") and not SCHEME.match(link.target)]


def resolve(path: Path, target: str) -> Path:
    return (path.parent / target.split("#", 1)[0]).resolve()


RUNBOOK_IDS = [name(p) for p in runbook_paths()]
STRUCTURED = [p for p in runbook_paths() if name(p) != GRAMMAR]


def test_the_runbooks_exist() -> None:
    assert INDEX.is_file(), f"{INDEX} is missing"
    assert len(STRUCTURED) >= 7, "expected at least one runbook per taxonomy folder"
    for folder in ("00-onboarding", "10-development", "20-deployment", "30-operations",
                   "40-incident-response", "50-testing", "90-reference"):
        assert any(p.parent.name == folder for p in STRUCTURED), f"no runbook in {folder}/"


def test_every_runbook_is_linked_from_the_index() -> None:
    text = INDEX.read_text(encoding="utf-8")
    linked = {resolve(INDEX, target) for _, target in relative_links(text)}
    missing = [name(p) for p in runbook_paths() if p.resolve() not in linked]
    assert not missing, f"not linked from docs/runbooks/README.md: {missing}"


@pytest.mark.parametrize("path", [INDEX, *runbook_paths(), ROOT / "README.md"],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    links = relative_links(path.read_text(encoding="utf-8"))
    broken = [f"{path.relative_to(ROOT)}:{line}: {target}"
              for line, target in links if not resolve(path, target).exists()]
    assert not broken, "links to missing files:\n" + "\n".join(broken)


@pytest.mark.parametrize("path", STRUCTURED, ids=name)
def test_runbook_has_its_sections_in_order(path: Path) -> None:
    required = REFERENCE_SECTIONS if name(path).startswith(REFERENCE_DIR + "/") else (
        PROCEDURE_SECTIONS)
    headings = [h.text for h in document(path).headings if h.level == 2]
    present = [h for h in headings if h in required]
    missing = [s for s in required if s not in headings]
    assert not missing, f"{name(path)}: missing sections {missing} (have {headings})"
    assert present == list(required), (
        f"{name(path)}: sections must appear once each, in the order {list(required)}; "
        f"found {present}")


@pytest.mark.parametrize("path", STRUCTURED, ids=name)
def test_runbook_has_one_last_verified_line(path: Path) -> None:
    lines = [line for _, line in document(path).lines_starting(LAST_VERIFIED_PREFIX)]
    assert len(lines) == 1, f"{name(path)}: expected one 'Last verified:' line, found {lines}"
    assert LAST_VERIFIED.match(lines[0]), (
        f"{name(path)}: {lines[0]!r} is not 'Last verified: never (updated by CI)' or "
        "'Last verified: YYYY-MM-DD against TARGET (updated by CI)'")


@pytest.mark.parametrize("path", runbook_paths(), ids=name)
def test_runbook_has_an_expect_block_or_says_why_not(path: Path) -> None:
    try:
        statements = parse_file(path, RUNBOOKS)
    except RunbookSyntaxError as exc:
        pytest.fail("\n".join(str(e) for e in exc.errors), pytrace=False)
    reasons = document(path).lines_starting(NO_EXPECT)
    assert statements or reasons, (
        f"{name(path)}: no expect block; add one, or a line 'No expect block: <why>'")


def test_every_expect_statement_parses() -> None:
    errors = lint_runbooks(RUNBOOKS)
    assert not errors, "\n".join(str(e) for e in errors)


def test_every_rehearsal_marking_holds() -> None:
    errors = [str(e) for r in read_runbooks(RUNBOOKS) for e in r.errors]
    assert not errors, "\n".join(errors)


def test_rehearsal_coverage(print_at_end: Callable[[str], None]) -> None:
    cover = coverage(read_runbooks(RUNBOOKS))
    print_at_end(f"runbook rehearsal: {cover}; not rehearsed, and why: "
                 "choiros-infra rehearse --list")
    assert cover.percent >= REHEARSED_FLOOR, (
        f"{cover}, below the floor of {REHEARSED_FLOOR} %: mark the new procedure's steps "
        "(```sh rehearse host|workstation, 50-testing/rehearsal.md)")


def test_links_in_code_are_not_links() -> None:
    text = "\n".join([
        "# T", "see [a](a.md) and `[b](b.md)`", "````markdown", "```expect",
        "service x: running", "```", "````", "  ```sh", "[c](c.md)", "  ```", "[d](d.md#x)",
    ])
    assert relative_links(text) == [(2, "a.md"), (11, "d.md#x")]
