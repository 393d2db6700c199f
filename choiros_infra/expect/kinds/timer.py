"""``timer NAME.timer: every 1min, after boot 1min, triggers UNIT``: a systemd timer's
schedule as systemd loaded it (``systemctl show``), not as its unit file spells it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import Clause, Reject, Token, one_value, subject_name, unknown
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

SUBJECT = "timer NAME.timer"
FORMS = ("every SPAN (OnUnitActiveSec, as systemd prints it: 1min, 1h 30min)",
         "after boot SPAN (OnBootSec)", "triggers UNIT")
TIMER_NAME = re.compile(r"[A-Za-z0-9_.@:\\-]+\.timer")
# One monotonic trigger of `systemctl show -p TimersMonotonic`: `{ OnBootUSec=1min ; ... }`.
_TRIGGER = re.compile(r"\b(On\w+USec)=([^;}]*?)\s*[;}]")


@dataclass(frozen=True)
class Every:
    span: str
    base: str = "OnUnitActiveUSec"

    def __str__(self) -> str:
        prefix = "every" if self.base == "OnUnitActiveUSec" else "after boot"
        return f"{prefix} {value_literal(self.span)}"


@dataclass(frozen=True)
class Triggers:
    unit: str

    def __str__(self) -> str:
        return f"triggers {self.unit}"


@dataclass(frozen=True)
class TimerCheck:
    name: str
    expect: tuple[Every | Triggers, ...]

    @property
    def subject(self) -> str:
        return f"timer {self.name}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> TimerCheck:
    name = subject_name(subject, "timer", TIMER_NAME, SUBJECT)
    expect: list[Every | Triggers] = []
    for clause in clauses:
        if clause.starts("every"):
            expect.append(Every(one_value(clause.after(1), "time span")))
        elif clause.starts("after", "boot"):
            expect.append(Every(one_value(clause.after(2), "time span"), "OnBootUSec"))
        elif clause.starts("triggers"):
            expect.append(Triggers(one_value(clause.after(1), "unit name")))
        elif clause.starts("after"):
            raise Reject(f"malformed '{clause.text}'", "after boot SPAN")
        else:
            raise unknown("timer", FORMS, clause)
    return TimerCheck(name, tuple(expect))


def slot(assertion: Every | Triggers) -> object:
    return assertion.base if isinstance(assertion, Every) else "Triggers"


@dataclass(frozen=True)
class TimerFacts:
    load: str
    unit: str
    monotonic: dict[str, list[str]]  # OnUnitActiveUSec -> ["1min"], ...


def parse_timer_show(output: str) -> TimerFacts:
    """``systemctl show --property=LoadState,Unit,TimersMonotonic`` output."""
    monotonic: dict[str, list[str]] = {}
    for base, span in _TRIGGER.findall(output):
        monotonic.setdefault(base, []).append(span)
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return TimerFacts(values.get("LoadState", ""), values.get("Unit", ""), monotonic)


def commands(check: TimerCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return (tool("systemctl", "show", "--property=LoadState,Unit,TimersMonotonic", "--",
                 check.name),)


def probe(check: TimerCheck, ctx: ProbeContext) -> list[Outcome]:
    [command] = commands(check, ctx)
    result = run_command(ctx, command)
    if result.rc != 0:
        raise failed("systemctl show", result)
    timer = parse_timer_show(result.stdout)
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        if timer.load == "not-found":
            outcomes.append(Outcome(str(assertion), False, "no such unit"))
        elif isinstance(assertion, Triggers):
            outcomes.append(Outcome(str(assertion), timer.unit == assertion.unit,
                                    f"triggers {timer.unit or 'nothing'}"))
        else:
            spans = timer.monotonic.get(assertion.base, [])
            shown = f"{assertion.base}={', '.join(spans)}" if spans else \
                f"no {assertion.base} ({', '.join(timer.monotonic) or 'no monotonic trigger'})"
            outcomes.append(Outcome(str(assertion), assertion.span in spans, shown))
    return outcomes


KIND = Kind("timer", TimerCheck, SUBJECT, FORMS, parse, probe, slot, commands)
