"""``file /PATH: exists, mode 0644, owner root, contains "TEXT", ...``: a path on the host,
its type, permissions, link target and content."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import (
    TEXT_FORMS,
    Clause,
    Reject,
    Token,
    keyword,
    one_value,
    text_match,
    unknown,
)
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.model import Exists, TextMatch, value_literal
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    failed,
    run_command,
    text_observed,
    tool,
)

SUBJECT = "file /ABSOLUTE/PATH"
FORMS = ("exists", "absent", "directory", "symlink to PATH", "mode OCTAL", "owner USER",
         "group GROUP", *TEXT_FORMS)
MODE = re.compile(r"0?[0-7]{3,4}")
STAT_FORMAT = "%F|%a|%U|%G"


@dataclass(frozen=True)
class IsDirectory:
    def __str__(self) -> str:
        return "directory"


@dataclass(frozen=True)
class SymlinkTo:
    target: str

    def __str__(self) -> str:
        return f"symlink to {value_literal(self.target)}"


@dataclass(frozen=True)
class Mode:
    mode: int

    def __str__(self) -> str:
        return f"mode {self.mode:04o}"


@dataclass(frozen=True)
class Owner:
    name: str

    def __str__(self) -> str:
        return f"owner {self.name}"


@dataclass(frozen=True)
class Group:
    name: str

    def __str__(self) -> str:
        return f"group {self.name}"


FileAssertion = Exists | IsDirectory | SymlinkTo | Mode | Owner | Group | TextMatch


@dataclass(frozen=True)
class FileCheck:
    path: str
    expect: tuple[FileAssertion, ...]

    @property
    def subject(self) -> str:
        return f"file {value_literal(self.path)}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> FileCheck:
    path = one_value(subject, "path")
    if not path.startswith("/"):
        raise Reject(f"'{path}' is not an absolute path", SUBJECT)
    expect: list[FileAssertion] = []
    table: dict[tuple[str, ...], Exists | IsDirectory] = {
        ("exists",): Exists(True), ("absent",): Exists(False), ("directory",): IsDirectory()}
    for clause in clauses:
        simple = keyword(clause, table)
        match = text_match(clause.tokens)
        if simple is not None:
            expect.append(simple)
        elif match is not None:
            expect.append(match)
        elif clause.starts("symlink", "to"):
            expect.append(SymlinkTo(one_value(clause.after(2), "link target")))
        elif clause.starts("mode"):
            mode = one_value(clause.after(1), "octal mode")
            if not MODE.fullmatch(mode):
                raise Reject(f"'{mode}' is not an octal mode", "mode OCTAL such as 0644")
            expect.append(Mode(int(mode, 8)))
        elif clause.starts("owner"):
            expect.append(Owner(one_value(clause.after(1), "user name")))
        elif clause.starts("group"):
            expect.append(Group(one_value(clause.after(1), "group name")))
        else:
            raise unknown("file", FORMS, clause)
    return FileCheck(path, tuple(expect))


def slot(assertion: FileAssertion) -> object:
    if isinstance(assertion, TextMatch):
        return ("text", assertion.kind, assertion.pattern)
    if isinstance(assertion, IsDirectory):
        return None
    return type(assertion).__name__


@dataclass(frozen=True)
class StatFacts:
    kind: str
    mode: int
    owner: str
    group: str


def parse_stat(output: str) -> StatFacts:
    """``stat -c '%F|%a|%U|%G'`` output."""
    kind, mode, owner, group = output.strip().rsplit("|", 3)
    return StatFacts(kind, int(mode, 8), owner, group)


def _stat_command(path: str, follow: bool) -> HostCommand:
    return tool("stat", *(("-L",) if follow else ()), "-c", STAT_FORMAT, "--", path)


def _readlink_command(path: str, *flags: str) -> HostCommand:
    return tool("readlink", *flags, "--", path)


def _cat(path: str) -> HostCommand:
    return tool("cat", "--", path)


def commands(check: FileCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    """The stat; what a symlink needs (read ahead: whether it is one is the answer); the
    content when a text assertion reads it."""
    path = check.path
    found = [_stat_command(path, False), _readlink_command(path),
             _readlink_command(path, "-f"), _stat_command(path, True)]
    if any(isinstance(a, TextMatch) for a in check.expect):
        found.append(_cat(path))
    return tuple(found)


def _stat(ctx: ProbeContext, path: str, follow: bool) -> StatFacts | None:
    result = run_command(ctx, _stat_command(path, follow))
    if result.rc == 0:
        return parse_stat(result.stdout)
    if "No such file or directory" in result.stderr:
        return None
    raise failed(f"stat {path}", result)


def _readlink(ctx: ProbeContext, path: str, *flags: str) -> str:
    result = run_command(ctx, _readlink_command(path, *flags))
    return result.stdout.strip() if result.rc == 0 else ""


def probe(check: FileCheck, ctx: ProbeContext) -> list[Outcome]:
    own = _stat(ctx, check.path, follow=False)
    link = resolved = None
    target = own
    if own is not None and own.kind == "symbolic link":
        link = _readlink(ctx, check.path)
        resolved = _readlink(ctx, check.path, "-f")
        target = _stat(ctx, check.path, follow=True)
    if own is None:
        shown = "absent"
    elif link is not None:
        shown = f"symlink to {link}" + (f" (resolves to {resolved})" if resolved != link else "")
        shown += "" if target is not None else " (dangling)"
    else:
        shown = own.kind
    content: str | None = None
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        expected = str(assertion)
        if isinstance(assertion, Exists):
            outcomes.append(Outcome(expected, (own is not None) == assertion.present, shown))
        elif isinstance(assertion, SymlinkTo):
            ok = link is not None and assertion.target in (link, resolved)
            outcomes.append(Outcome(expected, ok, shown))
        elif target is None:
            outcomes.append(Outcome(expected, False, shown))
        elif isinstance(assertion, IsDirectory):
            outcomes.append(Outcome(expected, target.kind == "directory", shown))
        elif isinstance(assertion, Mode):
            outcomes.append(Outcome(expected, target.mode == assertion.mode,
                                    f"{target.mode:04o}"))
        elif isinstance(assertion, Owner):
            outcomes.append(Outcome(expected, target.owner == assertion.name, target.owner))
        elif isinstance(assertion, Group):
            outcomes.append(Outcome(expected, target.group == assertion.name, target.group))
        elif target.kind == "directory":
            outcomes.append(Outcome(expected, False, "a directory"))
        else:
            if content is None:
                result = run_command(ctx, _cat(check.path))
                if result.rc != 0:
                    raise failed(f"cat {check.path}", result)
                content = result.stdout
            outcomes.append(Outcome(expected, assertion.holds(content),
                                    text_observed(assertion, content)))
    return outcomes


KIND = Kind("file", FileCheck, SUBJECT, FORMS, parse, probe, slot, commands)
