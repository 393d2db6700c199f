"""Secret values never leave the host: the one redaction of everything verify, drift and
diagnose print or write.

It works in two places, with this one module:

- **On the host, by value.** The workstation does not know the secrets' values and must
  never learn them. So every command verify and diagnose run on a host goes through the host
  program of :mod:`choiros_infra.host_batch`, which starts with this module's source: before
  any output leaves the host, :func:`host_redactor` collects the values the host holds (the
  variables of its secret env files, ``backend.env``, and of the same and the stack's secret
  names in every running process's environment, so a value removed from the file but still in
  the backend is known) and every occurrence in stdout and stderr becomes :data:`MASK`.
- **On the workstation, by name.** Wherever a report is written (pytest's terminal and JUnit,
  verify's and drift's reports and JSON, diagnose's file), an assignment to one of the stack's
  secret names (``OPENAI_API_KEY=...``, ``"OPENAI_API_KEY": "..."``) is masked, whatever
  its value.

Values shorter than :data:`MIN_VALUE_LENGTH` are masked only in assignments: masking a
two-letter value everywhere would garble every output, and no real credential is that short.

This module must run on the host's own python3 with nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar, cast

T = TypeVar("T")

MASK = "[redacted]"
MIN_VALUE_LENGTH = 8
# An EnvironmentFile line: NAME=value, the value bare, "double" (\ escapes) or 'single' quoted.
_ENV_LINE = re.compile(r'^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*'
                       r'("(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\n]*)', re.M | re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)


def variable_of(parameter: str) -> str:
    """The environment variable an SSM parameter fills: its name's last part."""
    return parameter.rstrip("/").rsplit("/", 1)[-1]


def parse_env(text: str) -> list[tuple[str, str, str]]:
    """Each assignment of an EnvironmentFile as (name, value as written, value as read)."""
    found = []
    for match in _ENV_LINE.finditer(text):
        name, written = match[1], match[2]
        if written[:1] == '"' and written[-1:] == '"' and len(written) > 1:
            read = _UNESCAPE.sub(r"\1", written[1:-1])
            written = written[1:-1]
        elif written[:1] == "'" and written[-1:] == "'" and len(written) > 1:
            read = written = written[1:-1]
        else:
            read = written = written.strip()
        found.append((name, written, read))
    return found


@dataclass(frozen=True)
class Redactor:
    """Masks ``values`` wherever they occur and assignments to ``names`` whatever their value.
    A Redactor with neither returns text unchanged."""

    names: frozenset[str] = frozenset()
    values: tuple[str, ...] = ()
    _assignment: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                                compare=False)

    def __post_init__(self) -> None:
        wanted = {v for value in self.values for v in (value, *value.splitlines())
                  if len(v.strip()) >= MIN_VALUE_LENGTH}
        object.__setattr__(self, "values", tuple(sorted(wanted, key=lambda v: (-len(v), v))))
        if self.names:
            names = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
            object.__setattr__(self, "_assignment", re.compile(
                rf"(?<![A-Za-z0-9_])((?:{names})[\"']?[ \t]*[=:][ \t]*)"
                r"(\"(?:[^\"\\\n]|\\.)*\"?|'[^'\n]*'?|[^\s\"',;]*)"))

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
        if self._assignment is not None:
            text = self._assignment.sub(lambda m: m[1] + MASK, text)
        return text

    def __bool__(self) -> bool:
        return bool(self.names or self.values)

    @classmethod
    def for_parameters(cls, parameters: Iterable[str]) -> Redactor:
        """The workstation's: the stack's secret names (``choiros:secrets``), no values."""
        return cls(names=frozenset(variable_of(p) for p in parameters))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _environments(names: frozenset[str], proc: str) -> Iterable[str]:
    """The values of ``names`` in every process's environment under ``proc``."""
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:
            continue  # gone, or a kernel thread
        for entry in entries:
            name, sep, value = entry.decode("utf-8", "replace").partition("=")
            if sep and name in names:
                yield value


def host_redactor(env_files: Iterable[str] = (), names: Iterable[str] = (),
                  host_config: str | None = None, proc: str = "/proc") -> Redactor:
    """The host's own: every value of ``env_files`` (as written and as read), and of their
    names, ``names`` and the secrets ``host_config`` (host.json) lists, in any process's
    environment. Run as root on the host (verify and diagnose do, through sudo)."""
    files, wanted = list(env_files), set(names)
    if host_config:
        try:
            config = json.loads(_read(host_config) or "{}")
        except ValueError:
            config = {}
        if isinstance(config, dict):
            wanted.update(variable_of(str(p)) for p in config.get("secrets") or ())
            if config.get("env_file"):
                files.append(str(config["env_file"]))
    values: set[str] = set()
    for path in dict.fromkeys(files):
        for name, written, read in parse_env(_read(path)):
            wanted.add(name)
            values.update((written, read))
    all_names = frozenset(wanted)
    values.update(_environments(all_names, proc))
    return Redactor(names=all_names, values=tuple(values))


def scrub(value: T, redact: Redactor) -> T:
    """``value`` with every string in it redacted: strings, lists (in place), tuples, dicts
    and dataclasses (a frozen one copied, another one changed in place: pytest's failure
    representations are such)."""
    return cast(T, _scrub(value, redact))


def _scrub(value: Any, redact: Redactor) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        value[:] = [_scrub(v, redact) for v in value]
        return value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_scrub(v, redact) for v in value)
    if isinstance(value, dict):
        return {k: _scrub(v, redact) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        if value.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            return replace(value, **{f.name: _scrub(getattr(value, f.name), redact)
                                     for f in fields(value) if f.init})
        for f in fields(value):
            setattr(value, f.name, _scrub(getattr(value, f.name), redact))
    return value
