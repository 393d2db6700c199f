"""``port N: open from outside, listening on ADDRESS, ...``: a TCP port, seen from this
machine (a connect) and on the host (its listening sockets)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect import probes
from choiros_infra.expect.grammar import (
    Clause,
    Reject,
    Token,
    ip_address,
    keyword,
    one_value,
    unknown,
)
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    failed,
    run_command,
    tool,
)

SUBJECT = "port NUMBER"
FORMS = ("open from outside", "closed from outside", "listening", "listening on ADDRESS",
         "not listening", "not listening on ADDRESS")


@dataclass(frozen=True)
class Reachable:
    """``open from outside`` / ``closed from outside``: a TCP connect from the test machine."""

    open: bool

    def __str__(self) -> str:
        return f"{'open' if self.open else 'closed'} from outside"


@dataclass(frozen=True)
class Listening:
    """``[not] listening [on ADDRESS]``: a listening TCP socket on the host itself."""

    address: str | None = None
    negated: bool = False

    def __str__(self) -> str:
        text = "not listening" if self.negated else "listening"
        return f"{text} on {self.address}" if self.address else text


@dataclass(frozen=True)
class PortCheck:
    port: int
    expect: tuple[Reachable | Listening, ...]

    @property
    def subject(self) -> str:
        return f"port {self.port}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> PortCheck:
    raw = one_value(subject, "port number")
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise Reject(f"'{raw}' is not a TCP port", SUBJECT + " (1-65535)")
    expect: list[Reachable | Listening] = []
    for clause in clauses:
        reach = keyword(clause, {("open", "from", "outside"): True,
                                 ("closed", "from", "outside"): False})
        if reach is not None:
            expect.append(Reachable(reach))
            continue
        negated = clause.starts("not", "listening")
        rest = clause.after(2 if negated else 1)
        if (negated or clause.starts("listening")) and not rest:
            expect.append(Listening(None, negated))
        elif (negated or clause.starts("listening")) and len(rest) == 2 and (
                rest[0].kind == "word" and rest[0].value == "on"):
            expect.append(Listening(ip_address(rest[1]), negated))
        else:
            raise unknown("port", FORMS, clause)
    return PortCheck(int(raw), tuple(expect))


def slot(assertion: Reachable | Listening) -> object:
    if isinstance(assertion, Listening):
        return ("listening", assertion.address)
    return "Reachable"


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def parse_ss_listening(output: str) -> list[tuple[str, int]]:
    """(address, port) of each socket in ``ss --numeric --listening --tcp`` output; ``*`` is
    kept for "every address"; ``[v6]`` brackets and ``%interface`` suffixes are removed."""
    sockets: list[tuple[str, int]] = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "State":
            continue
        host, _, port = fields[3].rpartition(":")
        if not port.isdigit():
            continue
        host = host.removeprefix("[").removesuffix("]").split("%", 1)[0]
        sockets.append((_address(host), int(port)))
    return sockets


LISTENING = tool("ss", "--numeric", "--listening", "--tcp")


def commands(check: PortCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return (LISTENING,) if any(isinstance(a, Listening) for a in check.expect) else ()


def probe(check: PortCheck, ctx: ProbeContext) -> list[Outcome]:
    outcomes: list[Outcome] = []
    bound: list[str] | None = None
    for assertion in check.expect:
        if isinstance(assertion, Reachable):
            # Looked up on the module: a verify run shares one connect per port
            # (tests/infra/outside_connect.py replaces it for the run).
            is_open, observed = probes.connect_from_outside(ctx.outside_address, check.port,
                                                            ctx.connect_timeout)
            outcomes.append(Outcome(str(assertion), is_open == assertion.open, observed))
            continue
        if bound is None:
            result = run_command(ctx, LISTENING)
            if result.rc != 0:
                raise failed("ss", result)
            bound = sorted({a for a, p in parse_ss_listening(result.stdout) if p == check.port})
        if assertion.address is None:
            holds = bool(bound)
        else:
            # ss shows a dual-stack wildcard socket as `*`: it is 0.0.0.0 and :: at once.
            wildcard = "*" in bound and ipaddress.ip_address(assertion.address).is_unspecified
            holds = assertion.address in bound or wildcard
        observed = "listening on " + ", ".join(bound) if bound else "not listening"
        outcomes.append(Outcome(str(assertion), holds != assertion.negated, observed))
    return outcomes


KIND = Kind("port", PortCheck, SUBJECT, FORMS, parse, probe, slot, commands)
