"""What a runbook statement claims: typed, frozen data, with no knowledge of how it is probed.

A statement is ``SUBJECT: ASSERTION, ASSERTION, ...``. Each subject kind has one ``...Check``
class holding the subject and a tuple of assertion objects; ``str()`` of an assertion is its
canonical spelling in the grammar, so "expected X" in a failure reads like the runbook.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


def quote(text: str) -> str:
    """``text`` as a grammar string literal (the escapes the parser reads back)."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\t", "\\t"))
    return f'"{escaped}"'


def regex_literal(pattern: str) -> str:
    """``pattern`` as a grammar regex literal: ``/.../`` with ``/`` escaped."""
    return "/" + pattern.replace("/", "\\/") + "/"


def _value(text: str) -> str:
    """A value as written: bare when it is one plain word, quoted otherwise."""
    if text and re.fullmatch(r"[^\s,\"#]+", text):
        return text
    return quote(text)


@dataclass(frozen=True)
class Source:
    """Where a statement is written: ``path`` as the caller gave it, ``name`` relative to the
    runbooks root (what items are named after), ``line`` 1-based."""

    path: Path
    name: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


# --- assertions shared by several subjects -------------------------------------------------


@dataclass(frozen=True)
class TextMatch:
    """``contains "TEXT"`` / ``matches /REGEX/``, optionally negated with ``not``.
    Regexes are searched with ``re.MULTILINE`` (``^`` and ``$`` match at every line)."""

    kind: Literal["contains", "matches"]
    pattern: str
    negated: bool = False

    def hit(self, text: str) -> re.Match[str] | None:
        """The first occurrence in ``text``, as a match object, or None."""
        if self.kind == "contains":
            return re.search(re.escape(self.pattern), text)
        return re.search(self.pattern, text, re.MULTILINE)

    def holds(self, text: str) -> bool:
        return (self.hit(text) is not None) != self.negated

    def __str__(self) -> str:
        prefix = "not " if self.negated else ""
        if self.kind == "contains":
            return f"{prefix}contains {quote(self.pattern)}"
        return f"{prefix}matches {regex_literal(self.pattern)}"


@dataclass(frozen=True)
class Exists:
    """``exists`` (present=True) or ``absent`` (present=False): files and users."""

    present: bool

    def __str__(self) -> str:
        return "exists" if self.present else "absent"


# --- service ---------------------------------------------------------------------------------


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


# --- port ------------------------------------------------------------------------------------


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


# --- file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IsDirectory:
    def __str__(self) -> str:
        return "directory"


@dataclass(frozen=True)
class SymlinkTo:
    target: str

    def __str__(self) -> str:
        return f"symlink to {_value(self.target)}"


@dataclass(frozen=True)
class Mode:
    mode: int

    def __str__(self) -> str:
        return f"mode {self.mode:04o}"


@dataclass(frozen=True)
class Owner:
    name: str

    def __str__(self) -> str:
        return f"owner {self.name}"


@dataclass(frozen=True)
class Group:
    name: str

    def __str__(self) -> str:
        return f"group {self.name}"


FileAssertion = Exists | IsDirectory | SymlinkTo | Mode | Owner | Group | TextMatch


@dataclass(frozen=True)
class FileCheck:
    path: str
    expect: tuple[FileAssertion, ...]

    @property
    def subject(self) -> str:
        return f"file {_value(self.path)}"


# --- http ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    code: int

    def __str__(self) -> str:
        return str(self.code)


@dataclass(frozen=True)
class JsonEquals:
    """``json KEY = VALUE``: KEY is a dotted path (``checks.db``, ``items.0``); a JSON string is
    compared as is, any other JSON value by its JSON text (``true``, ``3``, ``null``)."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"json {self.key} = {_value(self.value)}"


@dataclass(frozen=True)
class HeaderEquals:
    name: str
    value: str

    def __str__(self) -> str:
        return f"header {self.name} = {_value(self.value)}"


@dataclass(frozen=True)
class HeaderPresent:
    name: str
    present: bool

    def __str__(self) -> str:
        return f"header {self.name} {'present' if self.present else 'absent'}"


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    match: TextMatch

    def __str__(self) -> str:
        return f"header {self.name} {self.match}"


@dataclass(frozen=True)
class Body:
    match: TextMatch

    def __str__(self) -> str:
        return f"body {self.match}"


HttpAssertion = Status | JsonEquals | HeaderEquals | HeaderPresent | HeaderMatch | Body
Via = Literal["caddy", "direct"]


@dataclass(frozen=True)
class HttpCheck:
    method: str
    path: str
    via: Via
    expect: tuple[HttpAssertion, ...]

    @property
    def subject(self) -> str:
        route = "via caddy" if self.via == "caddy" else "direct"
        return f"http {self.method} {self.path} {route}"


# --- command ---------------------------------------------------------------------------------


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


# --- user ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shell:
    path: str

    def __str__(self) -> str:
        return f"shell {self.path}"


@dataclass(frozen=True)
class Home:
    path: str

    def __str__(self) -> str:
        return f"home {self.path}"


@dataclass(frozen=True)
class InGroup:
    group: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{'not ' if self.negated else ''}in group {self.group}"


@dataclass(frozen=True)
class UserCheck:
    name: str
    expect: tuple[Exists | Shell | Home | InGroup, ...]

    @property
    def subject(self) -> str:
        return f"user {self.name}"


# --- package ---------------------------------------------------------------------------------


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


Check = (ServiceCheck | PortCheck | FileCheck | HttpCheck | CommandCheck | UserCheck
         | PackageCheck)


@dataclass(frozen=True)
class Statement:
    """One line of an ``expect`` block: where it is written, its text, and what it claims."""

    source: Source
    text: str
    check: Check

    @property
    def title(self) -> str:
        """The test item's name: ``30-operations/security.md:42 service x: running``."""
        return f"{self.source.name}:{self.source.line} {self.text}"
