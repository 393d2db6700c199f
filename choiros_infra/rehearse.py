"""Runbook procedures as rehearsals: which steps run where, with which values, and what a
failure points at. Pure: nothing here runs a command (``rehearse_run`` does).

The syntax is documented in ``docs/runbooks/50-testing/rehearsal.md``. In short:

- a **procedure** is a section of a procedure runbook (any runbook outside ``90-reference/``;
  the section is a heading and its text up to the next heading) that holds at least one
  shell block (```` ```sh ````, ``bash``, ``shell``, ``console``);
- a shell block is a **step** when its info string says where it runs: ```` ```sh rehearse
  host ```` (on the host, over SSH, as its admin user) or ```` ```sh rehearse workstation ````
  (on the operator's machine, against the kitchen cloud and the kitchen host);
- a procedure is **rehearsed** when every one of its shell blocks is a step; one that cannot
  run in the kitchen says why in a line ``Not rehearsed: <why>`` in its section;
- ``<name>`` placeholders in steps (``<public_ip>``, ``<stack>``, ``<version>``, ...) are bound
  from the kitchen host and its stack (``PLACEHOLDERS``).

Every problem (an unmarked block without a reason, an unknown place or placeholder, a reason
beside a step) is a ``MarkingError`` at its ``file:line``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from choiros_infra import markdown_doc

SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})
REHEARSE = "rehearse"
PLACES = ("host", "workstation")
NOT_REHEARSED = "Not rehearsed:"
REFERENCE_DIR = "90-reference"
# What a step may name in angle brackets, and what it is bound to.
PLACEHOLDERS: Mapping[str, str] = {
    "name": "the kitchen host's name (--name)",
    "public_ip": "the host's address",
    "user": "the host's SSH login (admin)",
    "stack": "the stack's name (choiros:stack)",
    "stack_file": "the stack file the host was built from",
    "region": "the stack's AWS region",
    "account_id": "the AWS account id (the kitchen cloud's)",
    "bucket": "the backups bucket",
    "artifacts_bucket": "the artifacts bucket",
    "backup_prefix": "the stack's prefix in the backups bucket",
    "version": "the release the host runs when the rehearsal starts",
    "time": "a moment in UTC (2026-11-25T14:05:00Z): when the step starts",
    "ssh_key": "the private half of choiros:ssh_public_key (the kitchen host's own key)",
    "target": "what the host was rendered for: aws (EC2), kitchen (a kitchen host)",
    "secret_value": "a secret's new value (the kitchen's test value: its other hosts keep theirs)",
    "copy": "the URL `choiros-backup --copy` printed last (captured from an earlier step)",
    "instance_id": "the host's EC2 instance id (its record in the kitchen cloud)",
    "outputs": "the stack's outputs saved by `pulumi stack output --json` (the kitchen's)",
    "sandbox": "the application's built backend binary (the kitchen's stand-in app)",
    "dist": "the application's built frontend directory (the kitchen's stand-in app's)",
    "new_version": "a version not yet published for the stack (one per rehearsal)",
    "scratch": "a kitchen host of the procedure's own, which it boots (the rehearsal's second "
               "host, removed at its end)",
    "scratch_stack_file": "the stack file <scratch> is built from (a copy of the example "
                          "under a stack name of its own)",
    "production": "a second running kitchen host, of another stack, playing production "
                  "(<scratch>, booted by the rehearsal if no earlier step did)",
}
# Placeholders bound from an earlier step's output, not from the host: the last match of the
# pattern's group in the output of any step before, in the same rehearsal.
CAPTURED: Mapping[str, re.Pattern[str]] = {
    "copy": re.compile(r"^backup: uploaded (s3://\S+)$", re.M),
}
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9_]*)>")
# A bound value is substituted into a shell line as is: it must be one plain word.
SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/@+-]+")


@dataclass(frozen=True)
class MarkingError:
    """A rehearsal marking that does not hold, at ``file:line``."""

    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


@dataclass(frozen=True)
class Step:
    """One marked shell block: where it runs and its lines, numbered as in the file."""

    file: str
    line: int
    where: str
    lines: tuple[tuple[int, str], ...]

    def bound(self, values: Mapping[str, str]) -> tuple[tuple[int, str], ...]:
        """The lines with their placeholders replaced by ``values``."""
        return tuple((n, PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), text))
                     for n, text in self.lines)

    def names(self) -> frozenset[str]:
        """The placeholders the step names."""
        return frozenset(m[1] for _, text in self.lines for m in PLACEHOLDER.finditer(text))


@dataclass(frozen=True)
class Procedure:
    """A section with shell blocks: rehearsed (all of them steps) or not, and why."""

    file: str
    line: int
    title: str
    steps: tuple[Step, ...]
    why: str | None
    blocks: int  # its shell blocks, steps or not

    @property
    def rehearsed(self) -> bool:
        return self.why is None and len(self.steps) == self.blocks

    def as_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "why": self.why}


@dataclass(frozen=True)
class Runbook:
    """One runbook's procedures, in document order, and its marking problems."""

    file: str
    path: Path
    procedures: tuple[Procedure, ...]
    errors: tuple[MarkingError, ...] = field(default=())

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for p in self.procedures if p.rehearsed for s in p.steps)


@dataclass
class _Section:
    line: int
    title: str
    shell: list[markdown_doc.Fence] = field(default_factory=list)
    reasons: list[tuple[int, str]] = field(default_factory=list)


def is_procedure_runbook(name: str) -> bool:
    """Reference pages describe; procedure runbooks (everything else) are followed."""
    return not name.startswith(REFERENCE_DIR + "/")


def read_runbook(path: Path, name: str) -> Runbook:
    """``path``'s procedures and marking problems (``name``: how messages name the file)."""
    doc = markdown_doc.parse(path.read_text(encoding="utf-8"))
    if not is_procedure_runbook(name):
        return Runbook(name, path, ())
    sections = [_Section(0, "(before the first heading)")]
    sections += [_Section(h.line, h.text) for h in doc.headings]
    starts = [s.line for s in sections]

    def section_at(line: int) -> _Section:
        index = max(i for i, start in enumerate(starts) if start <= line)
        return sections[index]

    for fence in doc.fences:
        if fence.lang in SHELL_LANGS:
            section_at(fence.line).shell.append(fence)
    for line, text in doc.lines_starting(NOT_REHEARSED):
        section_at(line).reasons.append((line, text.removeprefix(NOT_REHEARSED).strip()))
    procedures: list[Procedure] = []
    errors: list[MarkingError] = []
    for section in sections:
        procedure = _procedure(name, section, errors)
        if procedure is not None:
            procedures.append(procedure)
    return Runbook(name, path, tuple(procedures), tuple(errors))


def _procedure(name: str, section: _Section, errors: list[MarkingError]) -> Procedure | None:
    for line, reason in section.reasons:
        if not section.shell:
            errors.append(MarkingError(name, line, f"'{NOT_REHEARSED}' in a section without "
                                       "shell blocks: there is nothing to rehearse here"))
        elif not reason:
            errors.append(MarkingError(name, line, f"'{NOT_REHEARSED}' says no reason; write "
                                       "why in a few words, e.g. 'Not rehearsed: needs real "
                                       "AWS.'"))
    if not section.shell:
        return None
    why = section.reasons[0][1] if section.reasons else None
    steps: list[Step] = []
    for fence in section.shell:
        words = fence.words
        if not words or words[0] != REHEARSE:
            if why is None:
                errors.append(MarkingError(
                    name, fence.line, f"shell block in '{section.title}' is neither "
                    f"rehearsed nor explained: mark it ```{fence.lang} {REHEARSE} host (or "
                    f"workstation), or say why in the section: '{NOT_REHEARSED} <why>'"))
            continue
        if why is not None:
            errors.append(MarkingError(
                name, fence.line, f"step in '{section.title}' beside '{NOT_REHEARSED} {why}': "
                "a procedure is rehearsed whole or not at all"))
            continue
        where = words[1] if len(words) > 1 else ""
        if where not in PLACES or len(words) > 2:
            errors.append(MarkingError(
                name, fence.line, f"```{fence.info}: a step says where it runs, "
                f"```{fence.lang} {REHEARSE} host or ```{fence.lang} {REHEARSE} workstation"))
            continue
        for line, text in fence.numbered():
            unknown = [m[1] for m in PLACEHOLDER.finditer(text) if m[1] not in PLACEHOLDERS]
            if unknown:
                errors.append(MarkingError(
                    name, line, f"unknown placeholder <{unknown[0]}>; a step may use "
                    + ", ".join(f"<{p}>" for p in PLACEHOLDERS)))
        steps.append(Step(name, fence.line, where, tuple(fence.numbered())))
    return Procedure(name, section.line, section.title, tuple(steps), why, len(section.shell))


def read_runbooks(root: Path, only: Sequence[Path] = ()) -> list[Runbook]:
    """Every runbook under ``root`` (the index excluded), or only those in ``only``."""
    paths = sorted(p.resolve() for p in only) if only else sorted(
        p for p in root.rglob("*.md") if p.name != "README.md" or p.parent != root)
    return [read_runbook(p, p.relative_to(root.resolve()).as_posix()
                         if p.is_relative_to(root.resolve()) else p.as_posix())
            for p in paths]


@dataclass(frozen=True)
class Coverage:
    procedures: int
    rehearsed: int
    not_rehearsed: tuple[Procedure, ...]

    @property
    def percent(self) -> float:
        return 100.0 * self.rehearsed / self.procedures if self.procedures else 100.0

    def as_json(self) -> dict[str, object]:
        return {"procedures": self.procedures, "rehearsed": self.rehearsed,
                "not_rehearsed": [p.as_json() for p in self.not_rehearsed]}

    def __str__(self) -> str:
        return (f"{self.rehearsed} of {self.procedures} procedures rehearsed "
                f"({self.percent:.0f} %)")


def coverage(runbooks: Sequence[Runbook]) -> Coverage:
    procedures = [p for r in runbooks for p in r.procedures]
    return Coverage(len(procedures), sum(p.rehearsed for p in procedures),
                    tuple(p for p in procedures if not p.rehearsed))


# --- running a step: the script and what a failure points at ----------------------------------

# Prepended to every step, on its own first line: stop at the first failing command (as an
# operator would), a failing pipeline included (a wrong flag before `| grep` fails the step),
# except for a writer stopped by a reader that had enough (`| head`: SIGPIPE, 141), and say
# at which line of the step it failed.
_FAILED_AT = "rehearse-failed-at-line"
PREAMBLE = ("set -o pipefail; trap 'rc=$?; [ $rc -eq 141 ] || "
            f"{{ echo \"{_FAILED_AT} $LINENO exit $rc\" >&2; exit $rc; }}' ERR")
_MARK = re.compile(rf"^{_FAILED_AT} (\d+) exit (\d+)$", re.M)


def script(lines: Sequence[tuple[int, str]]) -> str:
    """The bash script for a step's (bound) lines: the preamble, then the lines as written."""
    return "\n".join([PREAMBLE, *(text for _, text in lines)]) + "\n"


def captured(output: str) -> dict[str, str]:
    """The ``CAPTURED`` placeholders a step's output binds: each pattern's last match."""
    found = {key: pattern.findall(output) for key, pattern in CAPTURED.items()}
    return {key: matches[-1] for key, matches in found.items() if matches}


def unbound(step: Step, values: Mapping[str, str]) -> str | None:
    """None when ``values`` bind every placeholder ``step`` names; else why not, as the output
    of a step that failed (exit 2) at the first line naming one (``locate_failure`` reads it)."""
    for index, (_, text) in enumerate(step.lines):
        names = [m[1] for m in PLACEHOLDER.finditer(text) if m[1] not in values]
        if names:
            name = names[0]
            why = (f"it is captured from an earlier step's output ({CAPTURED[name].pattern}), "
                   "and no step before this one printed it" if name in CAPTURED
                   else "this host does not give it")
            # Script line 1 is the preamble.
            return f"rehearse: <{name}> has no value: {why}\n{_FAILED_AT} {index + 2} exit 2"
    return None


def bind(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` checked: every one a plain word, so substituting it cannot change a command."""
    for key, value in values.items():
        if not SAFE_VALUE.fullmatch(value):
            raise ValueError(f"<{key}> would be {value!r}, which is not one plain word")
    return dict(values)


@dataclass(frozen=True)
class StepFailure:
    """Where a step failed: the file's line, the command as written there, its exit status and
    the tail of its output (without the rehearsal's own marker)."""

    file: str
    line: int
    command: str
    status: int
    tail: str

    def __str__(self) -> str:
        return (f"{self.file}:{self.line}: step failed (exit {self.status}): {self.command}\n"
                + "\n".join(f"    {t}" for t in self.tail.splitlines()))


def locate_failure(step: Step, status: int, output: str, tail_lines: int = 20) -> StepFailure:
    """What failed in ``step``: the line the shell reported, else the step's last line."""
    marks = list(_MARK.finditer(output))
    clean = _MARK.sub("", output).rstrip("\n")
    tail = "\n".join(line for line in clean.splitlines()[-tail_lines:])
    number = step.lines[-1][0] if step.lines else step.line
    if marks:
        offset = int(marks[-1][1]) - 2  # script line 1 is the preamble
        if 0 <= offset < len(step.lines):
            number = step.lines[offset][0]
    return StepFailure(step.file, number, command_at(step, number), status, tail)


def command_at(step: Step, line: int) -> str:
    """The command that ends at ``line``: with the lines a trailing backslash joins to it."""
    texts = dict(step.lines)
    first = line
    while first - 1 in texts and texts[first - 1].rstrip().endswith("\\"):
        first -= 1
    last = line
    while texts.get(last, "").rstrip().endswith("\\") and last + 1 in texts:
        last += 1
    return " ".join(texts[n].strip().removesuffix("\\").strip() for n in range(first, last + 1))
