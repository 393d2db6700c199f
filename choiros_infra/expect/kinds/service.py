"""``service NAME: enabled, running, ...``: a systemd unit's enablement and activity."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import Clause, Token, keyword, subject_name, unknown
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    failed,
    run_command,
    tool,
)

SUBJECT = "service NAME"
FORMS = ("enabled", "disabled", "running", "stopped", "not running")
UNIT_NAME = re.compile(r"[A-Za-z0-9_.@:\\-]+")
# `systemctl is-enabled` exits 0 for these unit-file states: the unit starts when its
# dependencies ask for it. Anything else (disabled, masked, linked, not-found) is not enabled.
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "alias", "static", "indirect",
                            "generated", "transient"})


class ServiceState(enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    RUNNING = "running"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ServiceCheck:
    name: str
    expect: tuple[ServiceState, ...]

    @property
    def subject(self) -> str:
        return f"service {self.name}"


_CLAUSES = {("enabled",): ServiceState.ENABLED, ("disabled",): ServiceState.DISABLED,
            ("running",): ServiceState.RUNNING, ("stopped",): ServiceState.STOPPED,
            ("not", "running"): ServiceState.STOPPED}


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> ServiceCheck:
    name = subject_name(subject, "service", UNIT_NAME, SUBJECT)
    states: list[ServiceState] = []
    for clause in clauses:
        state = keyword(clause, _CLAUSES)
        if state is None:
            raise unknown("service", FORMS, clause)
        states.append(state)
    return ServiceCheck(name, tuple(states))


def slot(state: ServiceState) -> object:
    return "enabled" if state in (ServiceState.ENABLED, ServiceState.DISABLED) else "running"


@dataclass(frozen=True)
class UnitFacts:
    load: str
    active: str
    sub: str
    unit_file: str


def parse_systemctl_show(output: str) -> UnitFacts:
    """``systemctl show --property=LoadState,ActiveState,SubState,UnitFileState`` output."""
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return UnitFacts(values.get("LoadState", ""), values.get("ActiveState", ""),
                     values.get("SubState", ""), values.get("UnitFileState", ""))


# The unit types systemd knows by suffix; a name without one is a service to systemctl.
UNIT_SUFFIXES = (".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target",
                 ".path", ".timer", ".slice", ".scope")


def unit_name(name: str) -> str:
    """``name`` as systemctl completes it (``caddy`` is ``caddy.service``), so that a unit
    named both ways in one run is read once."""
    if "/" in name or name.endswith(UNIT_SUFFIXES):
        return name
    return f"{name}.service"


def show(name: str) -> HostCommand:
    """Everything a service statement reads of a unit (the host suites read it too)."""
    return tool("systemctl", "show", "--property=LoadState,ActiveState,SubState,UnitFileState",
                "--", unit_name(name))


def commands(check: ServiceCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return (show(check.name),)


def probe(check: ServiceCheck, ctx: ProbeContext) -> list[Outcome]:
    result = run_command(ctx, show(check.name))
    if result.rc != 0:
        raise failed("systemctl show", result)
    unit = parse_systemctl_show(result.stdout)
    outcomes: list[Outcome] = []
    for state in check.expect:
        if unit.load == "not-found":
            outcomes.append(Outcome(str(state), False, "no such unit"))
        elif state in (ServiceState.RUNNING, ServiceState.STOPPED):
            running = unit.active == "active"
            stopped = unit.active in ("inactive", "failed")
            ok = running if state is ServiceState.RUNNING else stopped
            outcomes.append(Outcome(str(state), ok, unit.active or "unknown"))
        else:
            enabled = unit.unit_file in ENABLED_STATES
            ok = enabled if state is ServiceState.ENABLED else not enabled
            outcomes.append(Outcome(str(state), ok, unit.unit_file or "unknown"))
    return outcomes


KIND = Kind("service", ServiceCheck, SUBJECT, FORMS, parse, probe, slot, commands)
