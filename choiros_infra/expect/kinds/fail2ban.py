"""``fail2ban jail NAME: running, maxretry 3, bantime 3600, ...``: one fail2ban jail as the
running server reports it (``fail2ban-client``), not as jail.local spells it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import Clause, Reject, Token, keyword, one_value
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.model import value_literal
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    excerpt,
    failed,
    run_command,
    tool,
)

SUBJECT = "fail2ban jail NAME"
FORMS = ("running", "not running",
         "SETTING VALUE (what `fail2ban-client get NAME SETTING` prints, e.g. maxretry 3)")
JAIL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
SETTING = re.compile(r"[a-z][a-z.]*")


@dataclass(frozen=True)
class JailRunning:
    running: bool

    def __str__(self) -> str:
        return "running" if self.running else "not running"


@dataclass(frozen=True)
class JailSetting:
    setting: str
    value: str

    def __str__(self) -> str:
        return f"{self.setting} {value_literal(self.value)}"


@dataclass(frozen=True)
class JailCheck:
    jail: str
    expect: tuple[JailRunning | JailSetting, ...]

    @property
    def subject(self) -> str:
        return f"fail2ban jail {self.jail}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> JailCheck:
    if (len(subject) != 2 or subject[0].value != "jail" or subject[1].kind != "word"
            or not JAIL_NAME.fullmatch(subject[1].value)):
        raise Reject("expected a jail name after 'fail2ban jail'", SUBJECT)
    expect: list[JailRunning | JailSetting] = []
    for clause in clauses:
        running = keyword(clause, {("running",): True, ("not", "running"): False})
        first = clause.tokens[0]
        if running is not None:
            expect.append(JailRunning(running))
        elif first.kind == "word" and SETTING.fullmatch(first.value) and len(clause.tokens) > 1:
            expect.append(JailSetting(first.value, one_value(clause.after(1), "value")))
        else:
            raise Reject(f"unknown fail2ban jail assertion '{clause.text}'",
                         "one of: " + ", ".join(FORMS))
    return JailCheck(subject[1].value, tuple(expect))


def slot(assertion: JailRunning | JailSetting) -> object:
    return ("setting", assertion.setting) if isinstance(assertion, JailSetting) else "running"


def fail2ban_jails(output: str) -> list[str]:
    """``fail2ban-client status``: the jail list."""
    match = re.search(r"Jail list:\s*(.*)$", output, re.M)
    return [j.strip() for j in match.group(1).split(",") if j.strip()] if match else []


STATUS = tool("fail2ban-client", "status")


def get(jail: str, setting: str) -> HostCommand:
    """What `fail2ban-client get JAIL SETTING` prints (the host suites read it too)."""
    return tool("fail2ban-client", "get", jail, setting)


def commands(check: JailCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return tuple(STATUS if isinstance(a, JailRunning) else get(check.jail, a.setting)
                 for a in check.expect)


def probe(check: JailCheck, ctx: ProbeContext) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        if isinstance(assertion, JailRunning):
            result = run_command(ctx, STATUS)
            if result.rc != 0:
                raise failed("fail2ban-client status", result)
            jails = fail2ban_jails(result.stdout)
            outcomes.append(Outcome(str(assertion), (check.jail in jails) == assertion.running,
                                    "jails " + (", ".join(jails) or "none")))
            continue
        result = run_command(ctx, get(check.jail, assertion.setting))
        value = result.stdout.strip()
        shown = (f"{assertion.setting} {value}" if result.rc == 0 else
                 f"fail2ban-client exit {result.rc}: {excerpt((result.stderr or value).strip())}")
        outcomes.append(Outcome(str(assertion), result.rc == 0 and value == assertion.value,
                                shown))
    return outcomes


KIND = Kind("fail2ban", JailCheck, SUBJECT, FORMS, parse, probe, slot, commands)
