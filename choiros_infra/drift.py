"""Drift: does what runs still match the code? Three parts, each with its own outcome.

- **cloud**: ``pulumi preview --refresh --expect-no-changes`` through the Automation API. The
  verdict is read from the structured result (the engine's ``resourcePreEvent`` steps and the
  summary's ``resourceChanges``), never from the CLI's exit number: with ``expect_no_changes``
  a preview that finds changes *raises* ``CommandError`` just like one that could not run, so
  the steps seen before the error decide between "drift" and "failed". Where the Pulumi CLI or
  credentials are missing the part is ``not-checked``, which is never "no drift".
- **host**: ``verify``'s suites and managed-file checks against the host, each failure named
  (runbook, title, message).
- **docs**: the runbook ``expect`` statements that fail on the host, by file and line (the same
  verify run: a statement's result carries its file and line).

The cloud part runs behind :data:`PreviewRunner` (a callable that feeds engine events and
returns a ``PreviewResult`` or raises ``CommandError``), so unit tests replay recorded
Automation API outputs (:class:`RecordedPreview`) instead of a real stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Protocol

from choiros_infra.errors import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from choiros_infra.verify_report import UNMAPPED, CheckResult

Outcome = Literal["no-drift", "drift", "failed", "not-checked"]

# Steps that change nothing: the resource is as declared (same), only read, or its state was
# refreshed from the cloud (the refresh itself is not drift; the diff it reveals shows up as an
# update or replace step of the same resource).
NO_CHANGE_OPS = frozenset({"same", "read", "refresh", "discard", "discard-replaced"})

# The CLI's words for "changes were found although none were expected" (stderr of the
# CommandError); read only to name the cause in the report, never to decide the outcome.
EXPECT_NO_CHANGES_TEXT = re.compile(r"no changes were expected but changes were proposed", re.I)
CREDENTIAL_ENV = ("PULUMI_ACCESS_TOKEN", "PULUMI_BACKEND_URL")


# --- the result ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceDrift:
    """One resource the preview would change: its URN, the operation, the changed keys."""

    urn: str
    type: str
    op: str
    properties: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloudDrift:
    checked: bool
    outcome: Outcome
    reason: str
    resources: tuple[ResourceDrift, ...] = ()
    change_summary: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HostItem:
    """A failed host check: the runbook it proves, its title, what the host showed."""

    runbook: str
    where: str
    title: str
    message: str


@dataclass(frozen=True)
class DocItem:
    """A runbook statement that does not hold on the host, by file and line."""

    file: str  # relative to the repository, e.g. docs/runbooks/30-operations/04-security.md
    line: int
    statement: str
    message: str


@dataclass(frozen=True)
class PartDrift:
    """The host or docs part: checked or not, its outcome, why, and the drifted items."""

    checked: bool
    outcome: Outcome
    reason: str
    items: tuple[HostItem, ...] | tuple[DocItem, ...] = ()
    checks: int = 0


@dataclass(frozen=True)
class DriftReport:
    cloud: CloudDrift
    host: PartDrift
    docs: PartDrift

    @property
    def exit_code(self) -> int:
        return exit_code(self)

    def to_json(self) -> dict[str, Any]:
        """The structured result (``--json``); see the schema in the module's tests."""
        out: dict[str, Any] = {
            "cloud": _plain(asdict(self.cloud)),
            "host": _plain(asdict(self.host)),
            "docs": _plain(asdict(self.docs)),
            "exit_code": self.exit_code,
        }
        return out


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as plain dicts: what ``json.dumps`` and the schema expect."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def exit_code(report: DriftReport) -> int:
    """1 if any part found drift (even if another part could not run: the drift is real);
    else 2 if a requested part failed to run or nothing at all was checked; else 0. A part
    that was not checked (no Pulumi CLI, no --host) does not fail the run, but is never "no
    drift": the output says so."""
    parts = (report.cloud.outcome, report.host.outcome, report.docs.outcome)
    if "drift" in parts:
        return EXIT_FAILED
    if "failed" in parts or all(p == "not-checked" for p in parts):
        return EXIT_UNUSABLE
    return EXIT_OK


# --- cloud: the preview and its summary ------------------------------------------------------


OnEvent = Callable[[Any], None]


class PreviewRunner(Protocol):
    """Runs one preview: calls ``on_event`` with each engine event, returns a PreviewResult
    (``.change_summary``), raises ``pulumi.automation.errors.CommandError`` on failure."""

    def __call__(self, on_event: OnEvent) -> Any: ...


def _op(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def _op_counts(summary: Mapping[Any, int] | None) -> dict[str, int]:
    return {_op(k): int(v) for k, v in (summary or {}).items()}


def resource_changes(events: Iterable[Any]) -> list[ResourceDrift]:
    """The steps of a preview that change a resource, from its ``resourcePreEvent``s, in engine
    order, one per (URN, op); the changed keys from ``diffs`` (or ``detailedDiff``)."""
    found: dict[tuple[str, str], ResourceDrift] = {}
    for event in events:
        pre = getattr(event, "resource_pre_event", None)
        if pre is None:
            continue
        meta = pre.metadata
        op = _op(meta.op)
        if op in NO_CHANGE_OPS:
            continue
        keys = list(meta.diffs or []) or list((meta.detailed_diff or {}).keys())
        key = (meta.urn, op)
        if key not in found:
            found[key] = ResourceDrift(urn=meta.urn, type=meta.type, op=op,
                                       properties=tuple(sorted(set(keys))))
    return list(found.values())


def _diagnostics(events: Iterable[Any]) -> list[str]:
    lines = []
    for event in events:
        diag = getattr(event, "diagnostic_event", None)
        if diag is not None and diag.severity == "error":
            lines.append(re.sub(r"\x1b\[[0-9;]*m|<\{%[^%]*%\}>", "", diag.message).strip())
    return [line for line in lines if line]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("error:", "stderr:")) and stripped not in ("stderr:",):
            return stripped.removeprefix("stderr:").strip()
    return next((s.strip() for s in text.splitlines() if s.strip()), "")


def summarise_preview(run: PreviewRunner) -> CloudDrift:
    """Run the preview and decide: ``drift`` when a step would change a resource (whether the
    preview returned or raised under ``expect_no_changes``), ``failed`` when it raised and no
    step changes anything, ``no-drift`` when it returned and nothing changes."""
    from pulumi.automation.errors import CommandError

    events: list[Any] = []
    try:
        result = run(events.append)
    except CommandError as error:
        changes = resource_changes(events)
        summary = next((_op_counts(e.summary_event.resource_changes) for e in events
                        if getattr(e, "summary_event", None) is not None), {})
        changed = sum(n for op, n in summary.items() if op not in NO_CHANGE_OPS)
        if changes or changed:
            why = ("the preview proposed changes (expect-no-changes)"
                   if EXPECT_NO_CHANGES_TEXT.search(str(error)) else "the preview proposed "
                   "changes")
            return CloudDrift(True, "drift", why, tuple(changes), summary)
        cause = "; ".join(_diagnostics(events)) or _first_line(str(error))
        return CloudDrift(True, "failed", f"pulumi preview failed: {cause}", (), summary)
    summary = _op_counts(getattr(result, "change_summary", None))
    changes = resource_changes(events)
    changed = sum(n for op, n in summary.items() if op not in NO_CHANGE_OPS)
    if changes or changed:
        return CloudDrift(True, "drift", "the preview proposed changes", tuple(changes), summary)
    return CloudDrift(True, "no-drift", "pulumi preview --refresh proposed no changes", (),
                      summary)


class RecordedPreview:
    """A preview replayed from a recording: ``{"events": [engine events as the CLI writes them
    to its event log], "change_summary": {op: n} | null, "error": null | {"stdout", "stderr",
    "code"}}``. Events go through ``EngineEvent.from_json`` like the Automation API's own."""

    def __init__(self, recording: Mapping[str, Any]) -> None:
        self.recording = recording

    @classmethod
    def load(cls, path: Path) -> RecordedPreview:
        return cls(json.loads(path.read_text()))

    def __call__(self, on_event: OnEvent) -> Any:
        from pulumi.automation import EngineEvent, PreviewResult
        from pulumi.automation._cmd import CommandResult
        from pulumi.automation.errors import CommandError

        for raw in self.recording.get("events", []):
            on_event(EngineEvent.from_json(raw))
        error = self.recording.get("error")
        if error:
            raise CommandError(CommandResult(error.get("stdout", ""), error.get("stderr", ""),
                                             int(error.get("code", 255))))
        return PreviewResult(stdout="", stderr="",
                             change_summary=self.recording.get("change_summary") or {})


def pulumi_credentials_present(home: Path | None = None,
                               env: Mapping[str, str] | None = None) -> bool:
    """A backend to read the stack's state from: a token or backend URL in the environment, or
    a ``pulumi login`` recorded in ``~/.pulumi/credentials.json`` (or PULUMI_HOME's)."""
    env = os.environ if env is None else env
    if any(env.get(name) for name in CREDENTIAL_ENV):
        return True
    pulumi_home = Path(env["PULUMI_HOME"]) if env.get("PULUMI_HOME") else (
        (home or Path.home()) / ".pulumi")
    credentials = pulumi_home / "credentials.json"
    try:
        return bool(json.loads(credentials.read_text()).get("current"))
    except (OSError, ValueError, AttributeError):
        return False


def cloud_precondition(target: str, which: Callable[[str], str | None] = shutil.which,
                       credentials: Callable[[], bool] = pulumi_credentials_present,
                       ) -> str | None:
    """Why the cloud part cannot be checked here, or None when it can."""
    if target != "aws":
        return f"target {target} has no cloud stack"
    if which("pulumi") is None:
        return "no Pulumi CLI"
    if not credentials():
        return ("no Pulumi credentials (PULUMI_ACCESS_TOKEN, PULUMI_BACKEND_URL or "
                "`pulumi login`)")
    return None


def not_checked_cloud(reason: str) -> CloudDrift:
    return CloudDrift(False, "not-checked", reason)


def automation_preview(stack: str, work_dir: Path, config_file: Path) -> PreviewRunner:
    """The real runner: select the stack in the project and preview it with refresh and
    expect-no-changes, its config read from ``config_file`` (the stack file given)."""

    def run(on_event: OnEvent) -> Any:
        from pulumi import automation as auto

        selected = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        return selected.preview(refresh=True, expect_no_changes=True, diff=True,
                                on_event=on_event, config_file=str(config_file.resolve()))

    return run


# --- host and docs: from one verify run ------------------------------------------------------

RUNBOOK_PREFIX = "docs/runbooks/"
_LINE = re.compile(r"^line (\d+)$")


def is_statement(result: CheckResult) -> bool:
    """A runbook statement's result: a runbook file and a line (not a suite test's section)."""
    return result.runbook != UNMAPPED and bool(_LINE.match(result.where))


def split_results(results: Sequence[CheckResult]) -> tuple[PartDrift, PartDrift]:
    """A verify run as the host part (suites, managed files) and the docs part (statements)."""
    suites = [r for r in results if not is_statement(r)]
    statements = [r for r in results if is_statement(r)]
    host_items = tuple(HostItem(r.runbook, r.where, r.title, r.message)
                       for r in suites if r.bad)
    doc_items = tuple(DocItem(f"{RUNBOOK_PREFIX}{r.runbook}", int(r.where.split()[1]),
                              r.title, r.message) for r in statements if r.bad)

    def part(items: tuple[Any, ...], checks: int, what: str) -> PartDrift:
        if items:
            return PartDrift(True, "drift", f"{len(items)} of {checks} {what} failed", items,
                             checks)
        return PartDrift(True, "no-drift", f"all {checks} {what} passed", (), checks)

    return (part(host_items, len(suites), "host checks"),
            part(doc_items, len(statements), "runbook statements"))


def not_checked_part(reason: str, outcome: Outcome = "not-checked") -> PartDrift:
    return PartDrift(outcome != "not-checked", outcome, reason)


# --- output ------------------------------------------------------------------------------------


def status_line(name: str, checked: bool, outcome: Outcome, reason: str) -> str:
    if not checked:
        return f"{name}: not checked ({reason})"
    return f"{name}: {outcome} ({reason})"


def text_lines(report: DriftReport) -> list[str]:
    """The plain summary: one status line per part, then each drifted item."""
    cloud, host, docs = report.cloud, report.host, report.docs
    lines = [status_line("cloud", cloud.checked, cloud.outcome, cloud.reason)]
    for res in cloud.resources:
        props = f" [{', '.join(res.properties)}]" if res.properties else ""
        lines.append(f"  {res.op} {res.urn}{props}")
    lines.append(status_line("host", host.checked, host.outcome, host.reason))
    for item in host.items:
        assert isinstance(item, HostItem)
        where = f" ({item.where})" if item.where else ""
        lines.append(f"  {item.runbook}{where} {item.title}: {item.message}")
    lines.append(status_line("docs", docs.checked, docs.outcome, docs.reason))
    for doc in docs.items:
        assert isinstance(doc, DocItem)
        lines.append(f"  {doc.file}:{doc.line} {doc.statement}: {doc.message}")
    lines.append(f"exit code {report.exit_code}")
    return lines


def render_markdown(report: DriftReport, *, stack_file: str, host: str | None) -> str:
    """The Markdown report: a verdict, then the Cloud, Host and Docs sections."""
    verdict = {EXIT_OK: "no drift found in what was checked", EXIT_FAILED: "DRIFT FOUND",
               EXIT_UNUSABLE: "the check could not run"}[report.exit_code]
    out = [f"# Drift report: {host or stack_file}", "",
           f"- stack file: `{stack_file}`; host: {f'`{host}`' if host else 'none given'}",
           f"- result: **{verdict}** (exit code {report.exit_code})", ""]
    cloud = report.cloud
    out += ["## Cloud", "", status_line("cloud", cloud.checked, cloud.outcome, cloud.reason), ""]
    if not cloud.checked:
        out += ["Cloud drift was **not checked**; this is not a finding of no drift.", ""]
    if cloud.resources:
        out += ["| op | URN | changed properties |", "|---|---|---|"]
        out += [f"| {r.op} | `{r.urn}` | {', '.join(r.properties) or '-'} |"
                for r in cloud.resources]
        out.append("")
    host_part = report.host
    out += ["## Host", "",
            status_line("host", host_part.checked, host_part.outcome, host_part.reason), ""]
    for item in host_part.items:
        assert isinstance(item, HostItem)
        where = f" ({item.where})" if item.where else ""
        out.append(f"- **{item.runbook}**{where} `{item.title}`: {item.message}")
    if host_part.items:
        out.append("")
    docs = report.docs
    out += ["## Docs", "", status_line("docs", docs.checked, docs.outcome, docs.reason), ""]
    for doc in docs.items:
        assert isinstance(doc, DocItem)
        out.append(f"- `{doc.file}:{doc.line}` `{doc.statement}`: {doc.message}")
    if docs.items:
        out.append("")
    return "\n".join(out)
