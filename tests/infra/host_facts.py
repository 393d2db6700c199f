"""Typed parsers of what the host's tools print, so each suite reads a fact, not a string.

Each fact is read with ONE command (all the properties of a unit, every managed file's stat
and sha256 at once), and the tests parametrized over it only compare. A suite module declares
its commands as ``HostCommand``s in ``host_commands(config)``, and verify reads every declared
command ahead in one SSH round trip (choiros_infra/verify_batch.py). Pure functions,
unit-tested without a host (tests/unit/test_verify_suites.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# The parsers the runbooks' typed statements use (sshd:, ufw:, fail2ban jail): one copy, there.
from choiros_infra.expect.kinds.fail2ban import fail2ban_jails as fail2ban_jails
from choiros_infra.expect.kinds.sshd import sshd_effective as sshd_effective
from choiros_infra.expect.kinds.ufw import UfwRule as UfwRule
from choiros_infra.expect.kinds.ufw import UfwStatus as UfwStatus
from choiros_infra.expect.kinds.ufw import ufw_status as ufw_status
from choiros_infra.expect.probes import HostCommand

# Separates the two outputs of the one command that reads every managed file.
SECTION_MARK = "--choiros-verify-sha256--"
STAT_FORMAT = "%n|%F|%a|%U|%G"


def key_values(output: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``systemctl show``); later lines win."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def apt_config(output: str) -> dict[str, list[str]]:
    """``apt-config dump``: each key with its values (list entries end in ``::``)."""
    values: dict[str, list[str]] = {}
    for line in output.splitlines():
        match = re.match(r'^(\S+?)(::)? "(.*)";$', line.strip())
        if match:
            values.setdefault(match.group(1), []).append(match.group(3))
    return values


def exposure(output: str) -> float | None:
    """The overall exposure level ``systemd-analyze security UNIT`` reports, if any."""
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", output)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class FileFacts:
    kind: str  # stat's %F: regular file, directory, symbolic link, ...
    mode: int
    owner: str
    group: str
    sha256: str | None = None  # regular files only

    @property
    def ownership(self) -> str:
        return f"{self.owner}:{self.group}"


def stat_lines(output: str) -> dict[str, FileFacts]:
    """``stat -c '%n|%F|%a|%U|%G' PATH...`` (one line per path that exists)."""
    facts: dict[str, FileFacts] = {}
    for line in output.splitlines():
        parts = line.rsplit("|", 4)
        if len(parts) == 5:
            name, kind, mode, owner, group = parts
            facts[name] = FileFacts(kind, int(mode, 8), owner, group)
    return facts


def file_facts(output: str) -> dict[str, FileFacts]:
    """Output of ``stat ... PATHS; echo SECTION_MARK; sha256sum PATHS``: a path missing on the
    host is absent from the result."""
    stats, _, sums = output.partition(SECTION_MARK)
    facts = stat_lines(stats)
    for line in sums.splitlines():
        digest, _, name = line.partition("  ")
        if name in facts and re.fullmatch(r"[0-9a-f]{64}", digest):
            old = facts[name]
            facts[name] = FileFacts(old.kind, old.mode, old.owner, old.group, digest)
    return facts


def logrotate_errors(output: str) -> list[str]:
    """The ``error:`` lines of ``logrotate -d``."""
    return [line.strip() for line in output.splitlines() if line.strip().startswith("error:")]


class CommandHost(Protocol):
    def run(self, command: str, *args: str) -> Any: ...


def file_facts_command(paths: Sequence[str], *, checksums: bool = False) -> HostCommand:
    """Stat (and hash) every path in one command; arguments quoted by testinfra."""
    marks = " ".join(["%s"] * len(paths))
    command = f"LC_ALL=C stat -c %s -- {marks}"
    args = [STAT_FORMAT, *paths]
    if checksums:
        command += f"; echo %s; sha256sum -- {marks}"
        args += [SECTION_MARK, *paths]
    return HostCommand(command, tuple(args))


def read_file_facts(host: CommandHost, paths: Sequence[str], *,
                    checksums: bool = False) -> dict[str, FileFacts]:
    return file_facts(host.run(*file_facts_command(paths, checksums=checksums)).stdout)


def files_in_every_subdirectory_command(directory: str, names: Sequence[str]) -> HostCommand:
    """Stat ``names`` in every subdirectory of ``directory`` in one command, links followed
    (as ``test -f`` and testinfra's ``mode`` see them): for a check whose subdirectory is
    only known when it runs (the wanted release), yet is read ahead. Parse with
    :func:`stat_lines`; a missing file has no line."""
    globs = " ".join(["%s/*/%s"] * len(names))
    return HostCommand(f"LC_ALL=C stat -L -c %s -- {globs}",
                       (STAT_FORMAT, *(a for name in names for a in (directory, name))))


def entries_command(directory: str) -> HostCommand:
    """The entries of ``directory`` as ``ls`` lists them (no dot files), each with its type
    with links followed as ``test -d`` sees it (find's ``%Y``: ``d`` directory, ``f`` regular
    file, ``N`` a dangling link, ...), in one command. Parse with :func:`entry_types`."""
    return HostCommand("LC_ALL=C find %s -mindepth 1 -maxdepth 1 ! -name %s -printf %s",
                       (directory, ".*", "%f|%Y\\n"))


def entry_types(output: str) -> dict[str, str]:
    """``find -printf '%f|%Y\\n'``: each entry's name and type letter."""
    return dict(line.rsplit("|", 1) for line in output.splitlines() if "|" in line)
