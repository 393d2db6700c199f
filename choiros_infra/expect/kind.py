"""A subject kind of the expect grammar, as one registered unit.

A kind is everything the grammar knows about one subject (``service``, ``file``, ``ufw``...):
its Check type, how its subject and its clauses read (``subject_form``, ``forms``: the texts
refusals and the grammar doc show), the parser that turns clauses into assertions, which
assertions contradict each other (``slot``), and the probe that reads the host. Each kind is
one file under ``choiros_infra/expect/kinds/`` ending in ``KIND = Kind(...)``; the registry
(``kinds/__init__.py``) lists them. Adding a kind is that file and one line there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from choiros_infra.expect.grammar import Clause, Token
from choiros_infra.expect.model import Check
from choiros_infra.expect.probes import HostCommand, Outcome, ProbeContext

C = TypeVar("C", bound=Check)


def no_commands(check: Any, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    """A kind whose probe runs nothing on the host (it reads from this machine)."""
    return ()


def single_valued(assertion: object) -> object:
    """The default slot: two assertions of the same type contradict or repeat each other."""
    return type(assertion).__name__


@dataclass(frozen=True)
class Kind(Generic[C]):
    """One subject kind. ``parse(subject_tokens, clauses)`` raises ``grammar.Reject``;
    ``probe(check, ctx)`` returns one Outcome per assertion, in order, and raises
    ``ProbeError`` when the host cannot be asked; ``slot(assertion)`` is the property an
    assertion states (two with the same slot in one statement are refused; None never
    conflicts); ``commands(check, ctx)`` every command the probe may run on the host for
    ``check`` in that context, read ahead in one round trip
    by verify; a command the probe then needs and this did not list costs a round trip of
    its own, never a wrong answer. ``read_first``: the kind's commands are whatever a
    runbook names (a backup, a health run), any of which may take seconds: the read-ahead
    starts them before the others, so that the slowest do not start last."""

    name: str
    check_type: type[C]
    subject_form: str
    forms: tuple[str, ...]
    parse: Callable[[Sequence[Token], Sequence[Clause]], C]
    probe: Callable[[C, ProbeContext], list[Outcome]]
    slot: Callable[[Any], object] = single_valued
    commands: Callable[[C, ProbeContext], tuple[HostCommand, ...]] = no_commands
    read_first: bool = False
