"""Reading the host: what every kind's probe shares, and the entry point that runs one.

Facts on the host are read with small commands through testinfra's host (arguments quoted by
testinfra, never interpolated) and parsed by typed functions in each kind's file
(``choiros_infra/expect/kinds/``); the outside checks (a TCP connect, HTTP through Caddy) run
from this machine against the host's address. A probe never changes the host: files are read,
services and packages queried, HTTP methods limited to safe ones.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from choiros_infra.expect.model import Check, Statement, TextMatch, quote

EXCERPT = 240

Scheme = Literal["https", "http"]


class CommandResultLike(Protocol):
    """What the probes read from testinfra's CommandResult."""

    @property
    def rc(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


class HostLike(Protocol):
    """What the probes use of testinfra's Host: ``run(command, *args)`` quotes ``args``."""

    def run(self, command: str, *args: str) -> CommandResultLike: ...


class ProbeError(Exception):
    """The host could not be asked (no answer, a tool missing), as opposed to a wrong answer."""


@dataclass(frozen=True)
class ProbeContext:
    """How to reach the host. ``sudo``: commands already run as root (testinfra ``--sudo``);
    ``outside_address``: the host's address as seen from this machine; ``scheme`` and
    ``caddy_port`` (default 443/80) for ``via caddy``; ``direct_url`` for ``direct``, from the
    host itself. ``answers``: what each request through Caddy got in this run (one context
    serves a whole run), so statements making the same request share one answer, as they share
    the read-ahead's command outputs; a host that does not answer costs one timeout, not one
    per statement."""

    host: HostLike
    outside_address: str
    sudo: bool = False
    scheme: Scheme = "https"
    caddy_port: int | None = None
    direct_url: str = "http://127.0.0.1:8080"
    connect_timeout: float = 3.0
    http_timeout: float = 10.0
    answers: dict[tuple[str, str], object] = field(default_factory=dict, compare=False,
                                                   repr=False)


@dataclass(frozen=True)
class Outcome:
    """One assertion's result: its canonical text, whether it holds, what the host showed."""

    expected: str
    ok: bool
    observed: str


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """``text`` quoted on one line, cut to ``limit`` characters."""
    if len(text) <= limit:
        return quote(text)
    return f"{quote(text[:limit])}... ({len(text)} characters)"


def text_observed(match: TextMatch, text: str) -> str:
    """What a text assertion saw: the offending line of a negated match, else the text."""
    hit = match.hit(text)
    if match.negated and hit is not None:
        number = text.count("\n", 0, hit.start()) + 1
        return f"found on line {number}: {excerpt(text.splitlines()[number - 1])}"
    return excerpt(text) if text else "empty"


@dataclass(frozen=True)
class HostCommand:
    """One command a probe runs on the host, as testinfra's ``host.run(template, *args)``
    takes it (``args`` quoted into the ``%s`` of ``template``). Each kind lists the commands
    its probe will run for a check (``Kind.commands``), so that a verify can read them all in
    one round trip before the probes ask (``choiros_infra/host_batch.py``)."""

    template: str
    args: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[str]:
        """``host.run(*command)``: the template, then the arguments."""
        yield self.template
        yield from self.args


def tool(*argv: str) -> HostCommand:
    """A fixed tool with quoted arguments, in the C locale (stable messages to parse)."""
    return HostCommand("LC_ALL=C " + " ".join(["%s"] * len(argv)), argv)


def run_command(ctx: ProbeContext, command: HostCommand) -> CommandResultLike:
    """``command`` run on the host through the context's testinfra host."""
    return ctx.host.run(*command)


def failed(what: str, result: CommandResultLike) -> ProbeError:
    """The host could not answer ``what``: its exit status and what it said."""
    detail = (result.stderr or result.stdout).strip() or "no output"
    return ProbeError(f"{what} failed on the host (exit {result.rc}): {detail}")


# --- from outside ------------------------------------------------------------------------------


def connect_from_outside(address: str, port: int, timeout: float) -> tuple[bool, str]:
    """Try a TCP connection from this machine: (open, what happened). Raises ProbeError when
    the address cannot be resolved or reached at all, so ``closed`` never passes by accident."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True, f"open (connected to {address}:{port})"
    except ConnectionRefusedError:
        return False, "closed (connection refused)"
    except TimeoutError:
        return False, f"closed (no answer within {timeout:g}s)"
    except socket.gaierror as exc:
        raise ProbeError(f"cannot resolve {address}: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.ENETUNREACH:
            raise ProbeError(f"no route from this machine to {address}: {exc}") from exc
        return False, f"closed ({exc.strerror or exc})"


# --- entry points ----------------------------------------------------------------------------


def probe(check: Check, ctx: ProbeContext) -> list[Outcome]:
    """Every assertion of ``check`` against the host, in order (all of them, not the first
    failure), by the probe of the check's kind. Raises ProbeError when the host cannot be
    asked."""
    from choiros_infra.expect.kinds import kind_of  # the kinds import this module

    return kind_of(check).probe(check, ctx)


def failure_report(statement: Statement, outcomes: list[Outcome], where: str) -> str | None:
    """One line per failed assertion, ``WHERE: SUBJECT: expected X, observed Y``; None if all
    hold. ``where`` is ``path:line`` as the reader should see it."""
    lines = [f"{where}: {statement.check.subject}: expected {o.expected}, observed {o.observed}"
             for o in outcomes if not o.ok]
    return "\n".join(lines) if lines else None
