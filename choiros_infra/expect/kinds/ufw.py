"""``ufw: active, default incoming deny, allow 22/tcp, ...``: the host firewall as
``ufw status verbose`` reports it: whether it is on, its default policies, its rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import (
    Clause,
    Reject,
    Token,
    keyword,
    no_subject,
    one_value,
    unknown,
)
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

SUBJECT = "ufw"
FORMS = ("active", "inactive", "default incoming|outgoing|routed allow|deny|reject|disabled",
         "allow|deny|reject|limit PORT/PROTO [from SOURCE]")
DIRECTIONS = ("incoming", "outgoing", "routed")
POLICIES = ("allow", "deny", "reject", "disabled")
ACTIONS = ("allow", "deny", "reject", "limit")
PORT_PROTO = re.compile(r"\d{1,5}(:\d{1,5})?/(tcp|udp)")
ANYWHERE = "Anywhere"


@dataclass(frozen=True)
class Active:
    active: bool

    def __str__(self) -> str:
        return "active" if self.active else "inactive"


@dataclass(frozen=True)
class DefaultPolicy:
    direction: str
    policy: str

    def __str__(self) -> str:
        return f"default {self.direction} {self.policy}"


@dataclass(frozen=True)
class Rule:
    """An inbound IPv4 rule as ufw lists it: ``22/tcp  ALLOW IN  Anywhere``."""

    action: str
    port: str
    source: str = ANYWHERE

    def __str__(self) -> str:
        tail = "" if self.source == ANYWHERE else f" from {value_literal(self.source)}"
        return f"{self.action} {self.port}{tail}"


UfwAssertion = Active | DefaultPolicy | Rule


@dataclass(frozen=True)
class UfwCheck:
    expect: tuple[UfwAssertion, ...]

    @property
    def subject(self) -> str:
        return "ufw"


def _rule(clause: Clause) -> Rule:
    action = clause.tokens[0].value
    rest = clause.after(1)
    if not rest or rest[0].kind != "word" or not PORT_PROTO.fullmatch(rest[0].value):
        raise Reject(f"malformed rule '{clause.text}'", f"{action} PORT/PROTO, e.g. "
                     f"{action} 22/tcp or {action} 22/tcp from 203.0.113.0/24")
    source = ANYWHERE
    if len(rest) > 1:
        if rest[1].kind != "word" or rest[1].value != "from":
            raise Reject(f"malformed rule '{clause.text}'", f"{action} PORT/PROTO from SOURCE")
        source = one_value(rest[2:], "source (an address, a network or Anywhere)")
        source = ANYWHERE if source.lower() == "anywhere" else source
    return Rule(action, rest[0].value, source)


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> UfwCheck:
    no_subject(subject, SUBJECT)
    expect: list[UfwAssertion] = []
    for clause in clauses:
        active = keyword(clause, {("active",): True, ("inactive",): False})
        if active is not None:
            expect.append(Active(active))
        elif clause.starts("default"):
            words = [t.value for t in clause.after(1)]
            if len(words) != 2 or words[0] not in DIRECTIONS or words[1] not in POLICIES:
                raise Reject(f"malformed default policy '{clause.text}'", FORMS[2])
            expect.append(DefaultPolicy(words[0], words[1]))
        elif clause.tokens[0].kind == "word" and clause.tokens[0].value in ACTIONS:
            expect.append(_rule(clause))
        else:
            raise unknown("ufw", FORMS, clause)
    return UfwCheck(tuple(expect))


def slot(assertion: UfwAssertion) -> object:
    if isinstance(assertion, DefaultPolicy):
        return ("default", assertion.direction)
    if isinstance(assertion, Rule):
        return ("rule", assertion.port, assertion.source)
    return "Active"


@dataclass(frozen=True)
class UfwRule:
    to: str
    action: str
    source: str

    @property
    def port(self) -> str:
        """``22/tcp`` of ``22/tcp (v6)``."""
        return self.to.split(" ", 1)[0]


@dataclass(frozen=True)
class UfwStatus:
    active: bool
    defaults: dict[str, str]  # incoming, outgoing, routed -> allow | deny | reject | disabled
    rules: tuple[UfwRule, ...]


_UFW_RULE = re.compile(r"^(?P<to>\S+(?: \(v6\))?)\s{2,}(?P<action>(?:ALLOW|DENY|REJECT|LIMIT)"
                       r"(?: IN| OUT| FWD)?)\s{2,}(?P<source>.+?)\s*$")


def ufw_status(output: str) -> UfwStatus:
    """``ufw status verbose``."""
    active = bool(re.search(r"^Status: active$", output, re.M))
    defaults: dict[str, str] = {}
    default_line = re.search(r"^Default: (.*)$", output, re.M)
    if default_line:
        for part in default_line.group(1).split(","):
            match = re.match(r"\s*(\w+) \((\w+)\)", part)
            if match:
                defaults[match.group(2)] = match.group(1)
    rules = tuple(UfwRule(m["to"], m["action"], m["source"])
                  for line in output.splitlines() if (m := _UFW_RULE.match(line.strip())))
    return UfwStatus(active, defaults, rules)


STATUS = tool("ufw", "status", "verbose")


def commands(check: UfwCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return (STATUS,)


def probe(check: UfwCheck, ctx: ProbeContext) -> list[Outcome]:
    result = run_command(ctx, STATUS)
    if result.rc != 0:
        raise failed("ufw status verbose", result)
    status = ufw_status(result.stdout)
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        if isinstance(assertion, Active):
            shown = "active" if status.active else "inactive"
            outcomes.append(Outcome(str(assertion), status.active == assertion.active, shown))
        elif isinstance(assertion, DefaultPolicy):
            policy = status.defaults.get(assertion.direction)
            outcomes.append(Outcome(str(assertion), policy == assertion.policy,
                                    f"default {assertion.direction} {policy or 'not shown'}"))
        else:
            rules = [r for r in status.rules if r.to == assertion.port]
            ok = any(r.action == f"{assertion.action.upper()} IN" and r.source == assertion.source
                     for r in rules)
            shown = "; ".join(f"{r.to} {r.action} {r.source}" for r in rules)
            outcomes.append(Outcome(str(assertion), ok, shown or f"no rule for {assertion.port}"))
    return outcomes


KIND = Kind("ufw", UfwCheck, SUBJECT, FORMS, parse, probe, slot, commands)
