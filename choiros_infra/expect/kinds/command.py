"""``command "COMMAND LINE": exit CODE, contains "TEXT", ...``: any command on the host, its
exit status and output. The free-form kind: where a typed kind says the same (``ufw``,
``sshd``, ``fail2ban jail``, ``timer``), prefer it: it names the fact, not the text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import (
    TEXT_FORMS,
    Clause,
    Reject,
    Token,
    one_value,
    text_match,
    unknown,
)
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.model import TextMatch, quote
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    excerpt,
    run_command,
    text_observed,
)

SUBJECT = 'command "COMMAND LINE"'
FORMS = ("exit CODE", *TEXT_FORMS)
_SUDO_PREFIX = re.compile(r"^\s*sudo\s+(?=[^-\s])")


@dataclass(frozen=True)
class ExitCode:
    code: int

    def __str__(self) -> str:
        return f"exit {self.code}"


@dataclass(frozen=True)
class CommandCheck:
    """``command "..."``: ``expect`` always holds one ExitCode (``exit 0`` unless written)."""

    command: str
    expect: tuple[ExitCode | TextMatch, ...]

    @property
    def subject(self) -> str:
        return f"command {quote(self.command)}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> CommandCheck:
    if len(subject) != 1 or subject[0].kind != "string" or not subject[0].value.strip():
        raise Reject("the command must be one quoted string", SUBJECT)
    expect: list[ExitCode | TextMatch] = []
    for clause in clauses:
        match = text_match(clause.tokens)
        if match is not None:
            expect.append(match)
        elif clause.starts("exit"):
            code = one_value(clause.after(1), "exit status")
            if not code.isdigit() or int(code) > 255:
                raise Reject(f"'{code}' is not an exit status", "exit CODE, 0-255")
            expect.append(ExitCode(int(code)))
        else:
            raise unknown("command", FORMS, clause)
    if not any(isinstance(a, ExitCode) for a in expect):
        expect.insert(0, ExitCode(0))
    return CommandCheck(subject[0].value, tuple(expect))


def slot(assertion: ExitCode | TextMatch) -> object:
    if isinstance(assertion, TextMatch):
        return ("text", assertion.kind, assertion.pattern)
    return "ExitCode"


def command_line(command: str, sudo: bool) -> str:
    """The command as run: a leading plain ``sudo`` is dropped when the connection already runs
    commands as root (testinfra ``--sudo``); ``sudo -u USER ...`` is always kept."""
    return _SUDO_PREFIX.sub("", command, count=1) if sudo else command


def commands(check: CommandCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return (HostCommand(command_line(check.command, ctx.sudo)),)


def probe(check: CommandCheck, ctx: ProbeContext) -> list[Outcome]:
    [command] = commands(check, ctx)
    result = run_command(ctx, command)
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        if isinstance(assertion, ExitCode):
            observed = f"exit {result.rc}"
            if result.rc != assertion.code and result.stderr.strip():
                observed += f", stderr {excerpt(result.stderr.strip(), 160)}"
            outcomes.append(Outcome(str(assertion), result.rc == assertion.code, observed))
        else:
            outcomes.append(Outcome(str(assertion), assertion.holds(result.stdout),
                                    text_observed(assertion, result.stdout)))
    return outcomes


KIND = Kind("command", CommandCheck, SUBJECT, FORMS, parse, probe, slot, commands,
            read_first=True)
