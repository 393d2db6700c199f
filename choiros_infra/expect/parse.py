"""Reading runbooks: the ```` ```expect ```` blocks out of Markdown, each line into a Statement.

Pure: nothing here touches a host. The grammar is documented in
``docs/runbooks/50-testing/expect-grammar.md``; the line's tokens and clauses are read by
``grammar``, the subject and its assertions by the kind its first word names
(``kinds.KINDS``). Every refusal names the file, the line, the statement and what the grammar
accepts there, so a typo never passes silently.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from choiros_infra import markdown_doc
from choiros_infra.expect.grammar import Clause, Reject, Token, tokenize
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.kinds import KINDS
from choiros_infra.expect.model import Check, Exists, Source, Statement

EXPECT_INFO = "expect"
STATEMENT_FORM = "SUBJECT: ASSERTION, ASSERTION, ... (see 50-testing/expect-grammar.md)"


@dataclass(frozen=True)
class ParseError:
    """One refusal: where, what is wrong, the statement as written, what was expected."""

    source: Source
    problem: str
    statement: str | None = None
    expected: str | None = None

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.problem}"]
        if self.statement:
            lines.append(f"    {self.statement}")
        if self.expected:
            lines.append(f"    expected {self.expected}")
        return "\n".join(lines)


class RunbookSyntaxError(ValueError):
    """A runbook's expect blocks do not parse; ``errors`` holds every refusal in the file."""

    def __init__(self, errors: Sequence[ParseError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


# --- Markdown ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockProblem:
    line: int
    problem: str
    expected: str | None = None


def _expect_lines(text: str) -> tuple[list[tuple[int, str]], list[_BlockProblem]]:
    """Every line inside an ``expect`` fence (with its 1-based number), and fence problems.

    Fences are CommonMark's, as markdown-it-py reads them (``markdown_doc``): an expect fence
    shown inside a longer fence (a Markdown example) is only text.
    """
    lines: list[tuple[int, str]] = []
    problems: list[_BlockProblem] = []
    for fence in markdown_doc.parse(text).fences:
        lang = fence.lang
        if lang != EXPECT_INFO:
            if lang.lower().startswith(EXPECT_INFO):
                problems.append(_BlockProblem(
                    fence.line, f"code block marked {lang!r} is not checked",
                    f"```{EXPECT_INFO} to make it a checked block (or another language)"))
            continue
        if not fence.closed:
            problems.append(_BlockProblem(fence.line, "expect block is never closed",
                                          "a closing ``` line"))
        numbered = fence.numbered()
        if fence.closed and not any(t.strip() and not t.strip().startswith("#")
                                    for _, t in numbered):
            problems.append(_BlockProblem(fence.line, "expect block has no statements",
                                          STATEMENT_FORM))
        lines += numbered
    return lines, problems


def _check_consistent(kind: Kind[Check], check: Check, clauses: Sequence[Clause]) -> None:
    # A command's implicit `exit 0` comes first and was not written: skip it.
    assertions: Sequence[object] = check.expect[len(check.expect) - len(clauses):]
    seen: dict[object, str] = {}
    for assertion, clause in zip(assertions, clauses, strict=True):
        slot = kind.slot(assertion)
        if slot is None:
            continue
        if slot in seen:
            raise Reject(f"'{clause.text}' contradicts or repeats '{seen[slot]}'",
                          "each property stated once per statement")
        seen[slot] = clause.text
    if Exists(False) in assertions and len(assertions) > 1:
        raise Reject("'absent' cannot be combined with other assertions",
                      "absent alone, or drop it")


def parse_statement(line: str, source: Source) -> Statement:
    """One statement (a line from an expect block); raises RunbookSyntaxError."""
    try:
        return _parse_statement(line, source)
    except Reject as reject:
        raise RunbookSyntaxError([ParseError(source, reject.problem, line.strip(),
                                             reject.expected)]) from None


def _parse_statement(line: str, source: Source) -> Statement:
    tokens = tokenize(line)
    if not tokens:
        raise Reject("empty statement", STATEMENT_FORM)
    text = line[tokens[0].start:tokens[-1].end]
    colons = [i for i, t in enumerate(tokens) if t.kind == "colon"]
    keyword = tokens[0].value if tokens[0].kind == "word" else ""
    if keyword not in KINDS:
        close = difflib.get_close_matches(keyword, list(KINDS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise Reject(f"unknown subject '{keyword or tokens[0].value}'{hint}",
                      "a statement starting with one of: " + ", ".join(KINDS))
    kind = KINDS[keyword]
    if not colons:
        raise Reject("missing ': ' after the subject",
                      f"{kind.subject_form}: ASSERTION, ASSERTION, ...")
    subject, rest = tokens[1:colons[0]], tokens[colons[0] + 1:]
    if not rest:
        raise Reject("no assertion after ':'", "one of: " + ", ".join(kind.forms))
    clauses: list[Clause] = []
    current: list[Token] = []
    for token in [*rest, Token("comma", ",", len(line), len(line))]:
        if token.kind != "comma":
            current.append(token)
            continue
        if not current:
            raise Reject("empty assertion between commas",
                          "one of: " + ", ".join(kind.forms))
        clauses.append(Clause(tuple(current), line[current[0].start:current[-1].end]))
        current = []
    check = kind.parse(subject, clauses)
    _check_consistent(kind, check, clauses)
    return Statement(source, text, check)


# --- files -------------------------------------------------------------------------------------


def parse_text(text: str, path: Path | str, name: str | None = None) -> list[Statement]:
    """Every statement in a runbook's text, in order. ``path`` is how errors name the file,
    ``name`` how items are named (default: ``path``). Raises RunbookSyntaxError listing every
    problem in the file."""
    path = Path(path)
    name = name if name is not None else path.as_posix()
    lines, problems = _expect_lines(text)
    errors = [ParseError(Source(path, name, p.line), p.problem, None, p.expected)
              for p in problems]
    statements: list[Statement] = []
    for number, line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        source = Source(path, name, number)
        try:
            statements.append(_parse_statement(line, source))
        except Reject as reject:
            errors.append(ParseError(source, reject.problem, stripped, reject.expected))
    if errors:
        raise RunbookSyntaxError(sorted(errors, key=lambda e: e.source.line))
    return statements


def parse_file(path: Path | str, root: Path | str | None = None) -> list[Statement]:
    """Every statement in one runbook; items are named relative to ``root`` when given."""
    path = Path(path)
    name = path.relative_to(root).as_posix() if root is not None else path.as_posix()
    return parse_text(path.read_text(encoding="utf-8"), path, name)


def runbook_files(root: Path | str) -> list[Path]:
    """The Markdown files under ``root``, sorted."""
    return sorted(p for p in Path(root).rglob("*.md") if p.is_file())


def iter_runbook_statements(root: Path | str) -> Iterator[Statement]:
    """Every statement in every runbook under ``root``; raises on the first file that does not
    parse (use lint_runbooks to see every problem at once)."""
    for path in runbook_files(root):
        yield from parse_file(path, root)


def lint_runbooks(root: Path | str) -> list[ParseError]:
    """Every parse problem in every runbook under ``root`` (empty when all parse)."""
    errors: list[ParseError] = []
    for path in runbook_files(root):
        try:
            parse_file(path, root)
        except RunbookSyntaxError as exc:
            errors.extend(exc.errors)
    return errors
