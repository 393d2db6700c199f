"""``user NAME: exists, shell PATH, home PATH, [not] in group GROUP``: a login on the host."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import Clause, Token, keyword, one_value, subject_name, unknown
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.model import Exists
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    failed,
    run_command,
    tool,
)

SUBJECT = "user NAME"
FORMS = ("exists", "absent", "shell PATH", "home PATH", "in group GROUP", "not in group GROUP")
ACCOUNT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


@dataclass(frozen=True)
class Shell:
    path: str

    def __str__(self) -> str:
        return f"shell {self.path}"


@dataclass(frozen=True)
class Home:
    path: str

    def __str__(self) -> str:
        return f"home {self.path}"


@dataclass(frozen=True)
class InGroup:
    group: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{'not ' if self.negated else ''}in group {self.group}"


@dataclass(frozen=True)
class UserCheck:
    name: str
    expect: tuple[Exists | Shell | Home | InGroup, ...]

    @property
    def subject(self) -> str:
        return f"user {self.name}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> UserCheck:
    name = subject_name(subject, "user", ACCOUNT_NAME, SUBJECT)
    expect: list[Exists | Shell | Home | InGroup] = []
    for clause in clauses:
        simple = keyword(clause, {("exists",): Exists(True), ("absent",): Exists(False)})
        if simple is not None:
            expect.append(simple)
        elif clause.starts("shell"):
            expect.append(Shell(one_value(clause.after(1), "shell path")))
        elif clause.starts("home"):
            expect.append(Home(one_value(clause.after(1), "home directory")))
        elif clause.starts("in", "group") or clause.starts("not", "in", "group"):
            negated = clause.starts("not")
            group = one_value(clause.after(3 if negated else 2), "group name")
            expect.append(InGroup(group, negated))
        else:
            raise unknown("user", FORMS, clause)
    return UserCheck(name, tuple(expect))


def slot(assertion: Exists | Shell | Home | InGroup) -> object:
    if isinstance(assertion, InGroup):
        return ("group", assertion.group)
    return type(assertion).__name__


def commands(check: UserCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    groups = any(isinstance(a, InGroup) for a in check.expect)
    return (_getent(check.name), *((_groups(check.name),) if groups else ()))


def _getent(name: str) -> HostCommand:
    return tool("getent", "passwd", "--", name)


def _groups(name: str) -> HostCommand:
    return tool("id", "-Gn", "--", name)


def probe(check: UserCheck, ctx: ProbeContext) -> list[Outcome]:
    result = run_command(ctx, _getent(check.name))
    if result.rc not in (0, 2):
        raise failed("getent passwd", result)
    fields = result.stdout.strip().split(":") if result.rc == 0 else []
    entry = fields if len(fields) >= 7 else None
    shown = f"exists (uid {entry[2]})" if entry else "absent"
    groups: list[str] | None = None
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        expected = str(assertion)
        if isinstance(assertion, Exists):
            outcomes.append(Outcome(expected, (entry is not None) == assertion.present, shown))
        elif entry is None:
            outcomes.append(Outcome(expected, False, "absent"))
        elif isinstance(assertion, Shell):
            outcomes.append(Outcome(expected, entry[6] == assertion.path, entry[6]))
        elif isinstance(assertion, Home):
            outcomes.append(Outcome(expected, entry[5] == assertion.path, entry[5]))
        else:
            if groups is None:
                listed = run_command(ctx, _groups(check.name))
                if listed.rc != 0:
                    raise failed("id -Gn", listed)
                groups = listed.stdout.split()
            holds = assertion.group in groups
            outcomes.append(Outcome(expected, holds != assertion.negated,
                                    "groups " + " ".join(groups)))
    return outcomes


KIND = Kind("user", UserCheck, SUBJECT, FORMS, parse, probe, slot, commands)
