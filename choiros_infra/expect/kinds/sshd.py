"""``sshd: permitrootlogin no, maxauthtries 3, ...``: the SSH server's effective settings as
``sshd -T`` prints them (every drop-in and default applied), not the text of one file."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import Clause, Reject, Token, no_subject, one_value
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.model import value_literal
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    failed,
    run_command,
    tool,
)

SUBJECT = "sshd"
FORMS = ("KEYWORD VALUE (an `sshd -T` line, e.g. permitrootlogin no)",)
KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@dataclass(frozen=True)
class Setting:
    """One effective setting; ``keyword`` lower-case, as ``sshd -T`` prints it."""

    keyword: str
    value: str

    def __str__(self) -> str:
        return f"{self.keyword} {value_literal(self.value)}"


@dataclass(frozen=True)
class SshdCheck:
    expect: tuple[Setting, ...]

    @property
    def subject(self) -> str:
        return "sshd"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> SshdCheck:
    no_subject(subject, SUBJECT)
    expect: list[Setting] = []
    for clause in clauses:
        first = clause.tokens[0]
        if first.kind != "word" or not KEYWORD.fullmatch(first.value) or len(clause.tokens) < 2:
            raise Reject(f"malformed sshd setting '{clause.text}'", FORMS[0])
        expect.append(Setting(first.value.lower(), one_value(clause.after(1), "value")))
    return SshdCheck(tuple(expect))


def slot(setting: Setting) -> object:
    return ("sshd", setting.keyword)


def sshd_effective(output: str) -> dict[str, list[str]]:
    """``sshd -T``: lower-case keyword, then its value(s); repeated keywords keep every value."""
    settings: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            settings.setdefault(key.lower(), []).append(value.strip())
    return settings


EFFECTIVE = tool("sshd", "-T")


def commands(check: SshdCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return (EFFECTIVE,)


def probe(check: SshdCheck, ctx: ProbeContext) -> list[Outcome]:
    result = run_command(ctx, EFFECTIVE)
    if result.rc != 0:
        raise failed("sshd -T (needs root: verify runs with --sudo)", result)
    settings = sshd_effective(result.stdout)
    outcomes: list[Outcome] = []
    for setting in check.expect:
        values = settings.get(setting.keyword)
        shown = f"{setting.keyword} {', '.join(values)}" if values else "not in sshd -T"
        outcomes.append(Outcome(str(setting), setting.value in (values or []), shown))
    return outcomes


KIND = Kind("sshd", SshdCheck, SUBJECT, FORMS, parse, probe, slot, commands)
