"""What a runbook statement claims, in the terms every subject kind shares.

A statement is ``SUBJECT: ASSERTION, ASSERTION, ...``. Each subject kind (one file under
``choiros_infra/expect/kinds/``) has one ``...Check`` class holding the subject and a tuple of
assertion objects; ``str()`` of an assertion is its canonical spelling in the grammar, so
"expected X" in a failure reads like the runbook. Here: the statement and its source, the
spelling helpers, and the assertions several kinds share (text matches, existence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol


def quote(text: str) -> str:
    """``text`` as a grammar string literal (the escapes the parser reads back)."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\t", "\\t"))
    return f'"{escaped}"'


def regex_literal(pattern: str) -> str:
    """``pattern`` as a grammar regex literal: ``/.../`` with ``/`` escaped."""
    return "/" + pattern.replace("/", "\\/") + "/"


def value_literal(text: str) -> str:
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


class Check(Protocol):
    """What every kind's check is: a subject as the grammar spells it and its assertions, each
    of which ``str()``-s to its own spelling. The kinds live in ``choiros_infra/expect/kinds/``."""

    @property
    def subject(self) -> str: ...

    @property
    def expect(self) -> tuple[Any, ...]: ...


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
