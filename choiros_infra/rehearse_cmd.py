"""``choiros-infra rehearse``: follow the runbooks' marked procedures on a kitchen host, as
written, then check each runbook's expect blocks (syntax: 50-testing/rehearsal.md)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from choiros_infra import verify_cmd
from choiros_infra.errors import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE, fail, refusals
from choiros_infra.host_access import UsageProblem, run_on_host
from choiros_infra.kitchen_stack import test_secret_value
from choiros_infra.options import KitchenNameOption
from choiros_infra.redaction import Redactor
from choiros_infra.rehearse import Runbook, coverage, read_runbooks
from choiros_infra.rehearse_run import Rehearsal, RehearsalHost
from choiros_infra.rehearse_scratch import scratch_host
from choiros_infra.runbook_stamp import stamp, valid_label
from choiros_infra.verify import RUNBOOKS, SUITES

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True, emoji=False)

HELP = (
    "Rehearse the runbooks on a kitchen host: run the marked steps of each runbook in "
    "document order (```sh rehearse host on the host over SSH, ```sh rehearse workstation "
    "here, against the kitchen cloud), with <placeholders> bound from the host and its stack, "
    "then check that runbook's expect blocks. A failing step is reported at its file:line "
    "with the command and the tail of its output, and the host is marked spoiled (a later "
    "rehearsal refuses it until it is replaced). Syntax: docs/runbooks/50-testing/"
    "rehearsal.md.\n\n"
    "--list needs no host: every procedure, rehearsed or not and why, and the coverage.\n\n"
    "Exit codes: 0 every step and check passed (or the list was printed); 1 a step or a check "
    "failed; 2 the rehearsal could not run (a runbook's marking is wrong, no such runbook or "
    "kitchen host, the host is spoiled)."
)


def register(app: typer.Typer) -> None:
    app.command(help=HELP, short_help="Follow the runbooks' marked procedures on a kitchen "
                "host and check their expect blocks.")(rehearse)


def rehearse(
    runbooks: Annotated[list[Path] | None, typer.Argument(
        help="Runbooks to rehearse (default: every runbook under docs/runbooks).",
        show_default=False)] = None,
    name: KitchenNameOption = "default",
    list_only: Annotated[bool, typer.Option(
        "--list", help="List the procedures, whether each is rehearsed and if not why; "
        "no host needed.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: with --list {procedures, rehearsed, not_rehearsed: "
        "[{file, line, why}]}; else one object per runbook rehearsed.")] = False,
    stamp_runbooks: Annotated[str | None, typer.Option(
        "--stamp-runbooks", metavar="LABEL", help="Rewrite the `Last verified:` line of every "
        "runbook whose steps and checks all passed, e.g. --stamp-runbooks kitchen.")] = None,
) -> None:
    selected = _select(runbooks or [])
    errors = [e for r in selected for e in r.errors]
    if errors:
        stderr.print("\n".join(escape(str(e)) for e in errors))
        fail(f"{len(errors)} rehearsal marking(s) do not hold",
             "fix them as docs/runbooks/50-testing/rehearsal.md says")
    if list_only:
        _list(selected, as_json)
        raise typer.Exit(EXIT_OK)
    if stamp_runbooks is not None and not valid_label(stamp_runbooks):
        fail(f"--stamp-runbooks {stamp_runbooks!r} is not a short label",
             "letters, digits, spaces and ._:/- (at most 61), e.g. --stamp-runbooks kitchen")
    def say(text: str) -> None:
        stderr.print(escape(text))

    with refusals():
        host = kitchen_host(name)
        with scratch_host(name, say) as scratch:
            rehearsal = Rehearsal(replace(host, values={**host.values, **scratch.values}),
                                  say=say, check=_check, before=scratch.before)
            ok = rehearsal.run(selected)
    for result in rehearsal.results:
        if result.failure is not None:
            stderr.print(f"[bold red]FAILED[/] {escape(str(result.failure))}", markup=True)
        elif result.checks_failed:
            stderr.print(f"[bold red]FAILED[/] {escape(result.file)}: the steps ran, its "
                         "expect blocks fail afterwards (listed above)", markup=True)
    if not ok:
        stderr.print(f"kitchen host {name} is marked spoiled; replace it: choiros-infra "
                     f"kitchen up --replace --name {name}")
    passed = [r.file for r in rehearsal.results if r.passed]
    if as_json:
        stdout.print_json(json.dumps({"host": name, "passed": ok,
                                      "runbooks": [r.as_json() for r in rehearsal.results]}))
    else:
        steps = sum(r.steps for r in rehearsal.results)
        stdout.print(f"rehearsed {len(passed)} of {len(rehearsal.results)} runbooks "
                     f"({steps} steps) on kitchen host {name}: "
                     f"{'passed' if ok else 'FAILED'}")
    if ok and stamp_runbooks is not None:
        for path in stamp(RUNBOOKS, passed, stamp_runbooks, datetime.now(UTC).date()):
            stderr.print(f"stamped: {path.relative_to(RUNBOOKS)}")
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


def _select(paths: list[Path]) -> list[Runbook]:
    root = RUNBOOKS.resolve()
    for path in paths:
        if not path.is_file() or path.suffix != ".md":
            fail(f"runbook {path} does not exist", "name a Markdown file under docs/runbooks, "
                 "e.g. docs/runbooks/30-operations/02-logs.md (or none for all)")
        if not path.resolve().is_relative_to(root):
            fail(f"{path} is not under {RUNBOOKS}", "rehearse the project's own runbooks")
    return read_runbooks(root, paths)


def _list(selected: list[Runbook], as_json: bool) -> None:
    cover = coverage(selected)
    if as_json:
        stdout.print_json(json.dumps(cover.as_json()))
        return
    for runbook in selected:
        for p in runbook.procedures:
            state = (f"rehearsed ({len(p.steps)} steps)" if p.rehearsed
                     else f"not rehearsed: {p.why}")
            stdout.print(escape(f"{p.file}:{p.line}  {p.title}  {state}"))
    stdout.print(str(cover))


def kitchen_host(name: str) -> RehearsalHost:
    """The kitchen host ``name`` and the values its steps are bound to."""
    from choiros_infra.stack_target import kitchen_target
    from infra.user_data import bucket_names
    from kitchen import cloud, lifecycle
    from kitchen.errors import KitchenError
    from kitchen.paths import HostPaths
    from kitchen.release import FIXTURE_DIR

    try:
        lifecycle.running_guest(name)
        target = kitchen_target(name)
        aws_env = cloud.cloud_info().aws_env()
    except KitchenError as exc:
        raise UsageProblem(exc.message, exc.fix or f"choiros-infra kitchen up --name {name}"
                           ) from None
    access = target.access()
    st = lifecycle.status(name)
    outputs = HostPaths(name).outputs_file
    code, out = run_on_host(access, ["readlink", "/opt/choiros/current"], timeout=30,
                            echo=lambda _line: None)
    version = out.strip().rsplit("/", 1)[-1] if code == 0 else ""
    cfg = target.cfg
    buckets = bucket_names(cfg, target.account_id)
    values = {"name": name, "public_ip": access.address, "user": access.user,
              "stack": cfg.stack, "stack_file": str(target.stack_file), "region": cfg.region,
              "account_id": target.account_id, "bucket": buckets.backups,
              "artifacts_bucket": buckets.artifacts, "backup_prefix": cfg.backup_prefix,
              "version": version, "ssh_key": str(st.ssh_key or ""), "target": "kitchen",
              "secret_value": test_secret_value(cfg.secrets[0]) if cfg.secrets else "",
              "instance_id": st.instance_id,
              "outputs": str(outputs) if outputs.is_file() else "",
              # The application's build is the stand-in app's; the version to ship is new to
              # the bucket on every rehearsal (never E's 1.4.2), as a real release's is.
              "sandbox": str(FIXTURE_DIR / "sandbox.py"), "dist": str(FIXTURE_DIR / "dist"),
              "new_version": f"rehearsal-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"}
    # What a step's output must never show: the stack's secrets (by name, and the kitchen's
    # values of them) and the kitchen cloud's admin key.
    redact = Redactor(names=Redactor.for_parameters(cfg.secrets).names,
                      values=(*(test_secret_value(p) for p in cfg.secrets),
                              aws_env["AWS_SECRET_ACCESS_KEY"]))
    return RehearsalHost(name, access, target.stack_file,
                         {k: v for k, v in values.items() if v}, aws_env, redact=redact)


@contextlib.contextmanager
def _stdout_on_stderr() -> Iterator[None]:
    """Everything written to standard output, by Python or a child (verify's pytest), goes to
    standard error instead: stdout carries only the rehearsal's own result (--json)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _check(host: RehearsalHost, runbook: Path) -> int:
    """The runbook's expect blocks against the host (verify's output on stderr)."""
    with _stdout_on_stderr():
        # The suites' directory brings the options verify passes; -k keeps this runbook only.
        code = verify_cmd.execute(host.access, host.stack_file, "kitchen",
                                  paths=(SUITES, runbook), workers=0,
                                  extra=("-k", runbook.name))
    return code if code in (EXIT_OK, EXIT_FAILED) else EXIT_UNUSABLE
