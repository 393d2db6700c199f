"""``choiros-infra verify``: hold one live host (EC2 or kitchen) to its stack file.

Runs the host suites (tests/infra), every runbook expectation (docs/runbooks) and the
managed-file check in one pytest run over one shared SSH connection, then prints the counts per
runbook and writes the Markdown report and JUnit when asked. ``kitchen verify`` calls
:func:`execute` with the kitchen host's ssh_config.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from choiros_infra.errors import EXIT_FAILED, EXIT_UNUSABLE, refusals, refuse, report_config
from choiros_infra.host_access import (
    HostAccess,
    UsageProblem,
    access_from_options,
    check_access_options,
    check_files,
    check_output_dirs,
    check_reachable,
    open_access,
    run_on_host,
)
from choiros_infra.options import (
    AccountOption,
    HostOption,
    KeyOption,
    KnownHostsOption,
    OutputsOption,
    SshConfigOption,
    StackFileOption,
    StackOption,
    TargetOption,
)
from choiros_infra.redaction import Redactor, scrub
from choiros_infra.stack_target import resolve
from choiros_infra.targets import TargetChoice
from choiros_infra.verify import (
    DEFAULT_WORKERS,
    KITCHEN_WORKERS,
    VerifyRun,
    run_checked,
    verdict,
)
from choiros_infra.verify_report import (
    CheckResult,
    group_by_runbook,
    read_junit,
    render_json,
    render_markdown,
    total,
)
from infra.config import ConfigError, StackConfig, load_stack_file

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True, emoji=False)

HELP = (
    "Verify a host against its stack file: the host suites (tests/infra), every runbook "
    "expectation (docs/runbooks) and every managed file (rendered sha256, mode, owner), in "
    "one pytest run over one shared SSH connection.\n\n"
    "The login user needs passwordless sudo (the checks read the host as root). With "
    "--ssh-key (or neither key nor config), an ssh_config sharing one connection is written "
    "to a private temporary directory; a new host key is accepted and remembered in "
    "~/.ssh/known_hosts, a changed one is refused; a kitchen host's key is checked against "
    "that host's own known_hosts file and never written to ~/.ssh.\n\n"
    "Exit codes: 0 every check passed; 1 a check failed (the summary and the report name "
    "it); 2 the verify could not run (bad arguments, invalid stack file, host unreachable "
    "or no sudo, pytest usage error)."
)




def _load(stack_file: Path) -> StackConfig | None:
    try:
        return load_stack_file(stack_file)
    except ConfigError as error:
        report_config(error)
        return None


def summarize(results: list[CheckResult]) -> None:
    """Counts per runbook (failures first) and each failed check, on stdout."""
    table = Table(title="verify: checks per runbook", title_justify="left")
    for column in ("runbook", "checks", "failed", "passed", "skipped"):
        table.add_column(column, justify="left" if column == "runbook" else "right")
    for group in group_by_runbook(results):
        c = group.counts
        style = "red" if c.failed else None
        table.add_row(escape(group.runbook), str(c.total), str(c.failed), str(c.passed),
                      str(c.skipped), style=style)
    counts = total(results)
    table.add_row("total", str(counts.total), str(counts.failed), str(counts.passed),
                  str(counts.skipped), style="bold")
    stdout.print(table)
    for result in (r for g in group_by_runbook(results) for r in g.results if r.bad):
        where = f" ({result.where})" if result.where else ""
        text = escape(f"{result.runbook}{where} {result.title}: {result.message}")
        stdout.print(f"[red]FAILED[/] {text}", markup=True)


def execute(access: HostAccess, stack_file: Path, target: str, *,
            account_id: str | None = None, junit: Path | None = None,
            report: Path | None = None, workers: int | None = None,
            known_hosts: Path | None = None, extra: tuple[str, ...] = (),
            paths: tuple[Path, ...] | None = None,
            as_json: Path | None = None, wait: float = 0.0) -> int:
    """Verify one host; print the summary; return the exit code (0, 1, 2). ``access`` without
    an ssh_config gets a generated, multiplexing one for the run (checking the host key
    against ``known_hosts`` if given). ``paths`` narrows the run to some suites and runbooks
    (the deploy commands' application checks); None runs them all."""
    cfg = _load(stack_file)
    if cfg is None:
        return EXIT_UNUSABLE
    try:
        check_output_dirs((junit, "--junit"), (report, "--report"), (as_json, "--json"))
    except UsageProblem as problem:
        return refuse(problem.problem, problem.fix)
    workdir = Path(tempfile.mkdtemp(prefix="chv-"))
    try:
        with open_access(access, known_hosts) as access:
            started = time.monotonic()
            deadline = started + wait
            results_file = junit or workdir / "junit.xml"
            run = VerifyRun.for_stack(access, stack_file, target, cfg, account_id=account_id,
                                      workers=workers, junit=results_file, extra=extra)
            if paths is not None:
                run = replace(run, paths=paths)
            while True:
                code = verdict(run_checked(run, lambda: wait_for_host(access, deadline)))
                if code != EXIT_FAILED or time.monotonic() + RETRY_PAUSE >= deadline:
                    break
                left = deadline - time.monotonic()
                stderr.print(f"waiting: checks failed; again in {RETRY_PAUSE:g} s ({left:.0f} s "
                             "left of --wait)")
                time.sleep(RETRY_PAUSE)
            seconds = time.monotonic() - started
            if code == EXIT_UNUSABLE or not results_file.exists():
                return refuse("pytest could not run the checks (its output above says why)",
                              "run again with -- --collect-only to see what was collected")
            # The run's reports are masked already (verify_batch); the rows are masked again here,
            # so that no report written from them can hold a secret assignment.
            results = scrub(read_junit(results_file), Redactor.for_parameters(cfg.secrets))
            summarize(results)
            stdout.print(f"{len(results)} checks in {seconds:.1f} s against {access.url}")
            if report is not None:
                report.write_text(render_markdown(results, host=access.url, target=target,
                                                  stack_file=str(stack_file), seconds=seconds))
                stdout.print(f"report: {report}")
            if junit is not None:
                stdout.print(f"junit: {junit}")
            if as_json is not None:
                as_json.write_text(render_json(results, host=access.url, target=target,
                                               stack_file=str(stack_file), seconds=seconds))
                stdout.print(f"json: {as_json}")
            return EXIT_FAILED if total(results).failed else code
    except UsageProblem as problem:
        return refuse(problem.problem, problem.fix)
    except KeyboardInterrupt:
        return refuse("interrupted; no verdict", "run the verify again")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# Between two runs of the checks under --wait.
RETRY_PAUSE = 5.0


def wait_for_host(access: HostAccess, deadline: float) -> None:
    """Until ``deadline`` (monotonic), wait for SSH with sudo and for cloud-init to finish,
    a progress line saying which; past it, raise the last UsageProblem. Without a deadline
    in the future, check once."""
    with stderr.status(f"connecting to {access.destination}…") as status:
        while True:
            try:
                check_reachable(access)
                if time.monotonic() >= deadline:
                    return  # no --wait: whatever cloud-init says, the checks run now
                _, out = run_on_host(access, ["cloud-init", "status"], echo=lambda _line: None,
                                     timeout=30)
                converging = any(f"status: {s}" in out for s in ("running", "not started"))
                if not converging or time.monotonic() >= deadline:
                    return  # a failed or unfinished converge is for the checks to report
                what = f"cloud-init is still running on {access.address}"
            except UsageProblem as problem:
                if time.monotonic() >= deadline:
                    raise
                what = f"no SSH yet ({problem.problem})"
            left = deadline - time.monotonic()
            status.update(f"waiting: {escape(what)} ({left:.0f} s left of --wait)")
            time.sleep(min(RETRY_PAUSE, max(left, 0.1)))


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to the CLI."""
    app.command(help=HELP, short_help="Check a host (EC2 or kitchen) against its stack file "
                "and its runbooks.",
                context_settings={"allow_interspersed_args": False})(verify)


def verify(
    host: HostOption = None,
    stack: StackOption = None,
    stack_file: StackFileOption = None,
    target: TargetOption = TargetChoice.aws,
    outputs: OutputsOption = None,
    ssh_key: KeyOption = None,
    ssh_config: SshConfigOption = None,
    known_hosts: KnownHostsOption = None,
    account_id: AccountOption = None,
    junit: Annotated[Path | None, typer.Option(
        "--junit", help="Write the results as JUnit XML to this file.")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write the Markdown report (by runbook, failures first) here.")]
        = None,
    as_json: Annotated[Path | None, typer.Option(
        "--json", help="Write one JSON object per check here (id, runbook, line, subject, "
        "status, expected, observed, seconds); --junit, --report and --json combine.")] = None,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, metavar="SECONDS", help="Right after `pulumi up`: retry until SSH "
        "answers, cloud-init has finished and the checks pass, or SECONDS have passed (like "
        "goss validate --retry-timeout).")] = 0.0,
    workers: Annotated[int | None, typer.Option(
        "-n", "--workers", min=0, help=f"Parallel pytest workers (pytest-xdist); 0 runs "
        f"serially. Default: {DEFAULT_WORKERS} for aws, {KITCHEN_WORKERS} for kitchen (the "
        "kitchen host shares this machine's CPUs).", show_default=False)] = None,
    pytest_args: Annotated[list[str] | None, typer.Argument(
        help="Extra pytest arguments (after --), e.g. -- -k security.md.",
        show_default=False)] = None,
) -> None:
    with refusals():
        check_access_options(ssh_key=ssh_key, ssh_config=ssh_config, known_hosts=known_hosts)
        check_files((outputs, "--outputs"))
        if target is TargetChoice.kitchen and host is None:
            raise UsageProblem("--target kitchen needs --host",
                               "use `choiros-infra kitchen verify --name N` for a kitchen host")
        resolved = resolve(stack=stack, stack_file=stack_file, target=target, outputs=outputs,
                           host=host, account_id=account_id)
        access = access_from_options(resolved.access().url, ssh_key=ssh_key,
                                     ssh_config=ssh_config)
    raise typer.Exit(execute(access, resolved.stack_file, target.value,
                             account_id=resolved.account_id if target is TargetChoice.aws
                             else account_id, junit=junit, report=report, workers=workers,
                             known_hosts=known_hosts and known_hosts.resolve(),
                             extra=tuple(pytest_args or ()),
                             as_json=as_json, wait=wait))
