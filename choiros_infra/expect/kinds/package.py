"""``package NAME: [not] installed``: a Debian package, as dpkg knows it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from choiros_infra.expect.grammar import Clause, Token, keyword, subject_name, unknown
from choiros_infra.expect.kind import Kind, single_valued
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    failed,
    run_command,
    tool,
)

SUBJECT = "package NAME"
FORMS = ("installed", "not installed")
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?")


@dataclass(frozen=True)
class Installed:
    present: bool

    def __str__(self) -> str:
        return "installed" if self.present else "not installed"


@dataclass(frozen=True)
class PackageCheck:
    name: str
    expect: tuple[Installed, ...]

    @property
    def subject(self) -> str:
        return f"package {self.name}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> PackageCheck:
    name = subject_name(subject, "package", PACKAGE_NAME, SUBJECT)
    expect: list[Installed] = []
    for clause in clauses:
        installed = keyword(clause, {("installed",): True, ("not", "installed"): False})
        if installed is None:
            raise unknown("package", FORMS, clause)
        expect.append(Installed(installed))
    return PackageCheck(name, tuple(expect))


def commands(check: PackageCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    return (tool("dpkg-query", "--show", "--showformat=${Status}\t${Version}", check.name),)


def probe(check: PackageCheck, ctx: ProbeContext) -> list[Outcome]:
    [command] = commands(check, ctx)
    result = run_command(ctx, command)
    if result.rc == 0:
        status, _, version = result.stdout.strip().partition("\t")
        words = status.split()
        installed = len(words) == 3 and words[0] in ("install", "hold") and (
            words[2] == "installed")
        shown = f"installed ({version})" if installed else f"not installed ({status})"
    elif result.rc == 1 and "no packages found" in result.stderr:
        installed, shown = False, "not installed (unknown to dpkg)"
    else:
        raise failed("dpkg-query (packages are checked on Debian and Ubuntu hosts)", result)
    return [Outcome(str(a), installed == a.present, shown) for a in check.expect]


KIND = Kind("package", PackageCheck, SUBJECT, FORMS, parse, probe, single_valued, commands)
