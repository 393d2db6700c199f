"""``choiros-infra drift``: is the cloud, the host and its runbooks still what the code says?

The logic and the report live in :mod:`choiros_infra.drift`; this module is the command line
and the host run (verify's pieces, with pytest's output on stderr so ``--json`` keeps stdout
for the result).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from choiros_infra import drift
from choiros_infra.errors import EXIT_UNUSABLE, refuse, report_config
from choiros_infra.host_access import (
    HostAccess,
    UsageProblem,
    access_from_options,
    check_access_options,
    check_files,
    check_output_dirs,
    check_reachable,
    open_access,
)
from choiros_infra.options import (
    AccountOption,
    KeyOption,
    KnownHostsOption,
    OutputsOption,
    StackFileOption,
    StackOption,
)
from choiros_infra.redaction import Redactor, scrub
from choiros_infra.stack_target import resolve, stack_file_for
from choiros_infra.targets import TargetChoice
from choiros_infra.verify import PROJECT_ROOT, VerifyRun, run_checked, verdict
from choiros_infra.verify_report import read_junit
from infra.config import ConfigError, StackConfig, load_stack_file

HELP = (
    "Look for drift between the code and what runs, in three parts.\n\n"
    "cloud: `pulumi preview --refresh --expect-no-changes` through the Automation API, each "
    "resource that would change named (URN, operation, changed properties); where the Pulumi "
    "CLI or credentials are missing (or for --target kitchen) the output says cloud drift was "
    "NOT checked, which is never reported as no drift.\n\n"
    "host: verify's suites and managed files against --host, each failed check named.\n\n"
    "docs: the runbook expectations that fail on the host, by file:line.\n\n"
    "Exit codes: 0 no drift found in what was checked (a part not checked is said so); 1 drift "
    "found in any part; 2 the check could not run (bad input, invalid stack file, host "
    "unreachable, preview failed, or nothing could be checked)."
)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def check_cloud(stack: str | None, target: str, stack_file: Path,
                runner: drift.PreviewRunner | None = None) -> drift.CloudDrift:
    """The cloud part: not checked when its preconditions are missing, else the preview."""
    if runner is None:
        why = drift.cloud_precondition(target)
        if why is not None:
            return drift.not_checked_cloud(why)
        if stack is None:
            return drift.not_checked_cloud("no stack name (give --stack)")
        runner = drift.automation_preview(stack, PROJECT_ROOT, stack_file)
    try:
        return drift.summarise_preview(runner)
    except Exception as error:  # any other failure (no stack, plugin, CLI) is "could not run"
        return drift.CloudDrift(True, "failed", f"pulumi preview could not run: {error}")


def check_host(access: HostAccess, stack_file: Path, target: str, cfg: StackConfig, *,
               account_id: str | None, known_hosts: Path | None,
               junit: Path | None) -> tuple[drift.PartDrift, drift.PartDrift]:
    """One verify run against the host, split into the host and docs parts."""
    workdir = Path(tempfile.mkdtemp(prefix="chd-"))
    try:
        with open_access(access, known_hosts) as access:
            results_file = junit or workdir / "junit.xml"
            run = VerifyRun.for_stack(access, stack_file, target, cfg, account_id=account_id,
                                      junit=results_file)
            try:
                code = run_checked(run, lambda: check_reachable(access),
                                   stdout=sys.stderr.fileno())
            except UsageProblem as problem:
                refuse(problem.problem, problem.fix)
                failed = drift.not_checked_part(f"host unreachable: {problem.problem}",
                                                "failed")
                return failed, drift.not_checked_part("host unreachable", "failed")
            if verdict(code) == EXIT_UNUSABLE or not results_file.exists():
                why = f"verify could not run the checks (pytest exit {code})"
                return (drift.not_checked_part(why, "failed"),
                        drift.not_checked_part(why, "failed"))
            return drift.split_results(read_junit(results_file))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add the ``drift`` command to the CLI."""
    app.command("drift", help=HELP, short_help="Look for drift: cloud (pulumi preview), "
                "host (verify) and runbooks.")(drift_command)


def drift_command(
    stack: StackOption = None,
    stack_file: StackFileOption = None,
    target: Annotated[TargetChoice, typer.Option(
        "--target", help="aws (EC2 and the cloud stack) or kitchen (host only).")]
        = TargetChoice.aws,
    outputs: OutputsOption = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="The host to check: ssh://USER@ADDR[:PORT] (default: from the stack's "
        "outputs; with neither, the host and docs parts are not checked).")] = None,
    ssh_key: KeyOption = None,
    known_hosts: KnownHostsOption = None,
    account_id: AccountOption = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write the Markdown report (Cloud, Host, Docs) here.")] = None,
    junit: Annotated[Path | None, typer.Option(
        "--junit", help="Write the host checks' JUnit XML here.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the structured result as JSON on stdout.")] = False,
) -> None:
    raise typer.Exit(run_drift(stack_file=stack_file, stack=stack, target=target.value,
                               host=host, ssh_key=ssh_key, known_hosts=known_hosts,
                               account_id=account_id, report=report, junit=junit,
                               as_json=as_json, outputs=outputs))


def run_drift(*, stack_file: Path | None, stack: str | None, target: str, host: str | None,
              ssh_key: Path | None = None, known_hosts: Path | None = None,
              account_id: str | None = None, report: Path | None = None,
              junit: Path | None = None, as_json: bool = False,
              runner: drift.PreviewRunner | None = None, outputs: Path | None = None) -> int:
    """The whole drift check; prints the summary (or JSON); returns the exit code."""
    try:
        check_access_options(ssh_key=ssh_key, known_hosts=known_hosts)
        check_files((outputs, "--outputs"))
        check_output_dirs((junit, "--junit"), (report, "--report"))
        stack_file = stack_file_for(stack, stack_file)
        cfg = load_stack_file(stack_file)
        if host is None and (outputs is not None or (
                target == "aws" and shutil.which("pulumi") is not None)):
            found = resolve(stack_file=stack_file, target=TargetChoice(target), outputs=outputs,
                            account_id=account_id)
            host, account_id = found.host_url, found.account_id
    except UsageProblem as problem:
        return refuse(problem.problem, problem.fix)
    except ConfigError as error:
        return report_config(error)
    access = None
    if host is not None:
        try:
            access = access_from_options(host, ssh_key=ssh_key, known_hosts=known_hosts)
        except UsageProblem as problem:
            return refuse(problem.problem, problem.fix)
        if target == "aws" and account_id is None:
            return refuse("--host with --target aws needs --account-id: the buckets are "
                          "named for it",
                          "--account-id $(aws sts get-caller-identity --query Account "
                          "--output text)")
    cloud = check_cloud(cfg.stack, target, stack_file, runner)
    if access is None:
        host_part = drift.not_checked_part("no --host given")
        docs_part = drift.not_checked_part("no --host given")
    else:
        host_part, docs_part = check_host(
            access, stack_file, target, cfg, account_id=account_id,
            known_hosts=known_hosts and known_hosts.resolve(),
            junit=junit and junit.resolve())
    # Every text of the report (a failed check's observed output, the preview's error) with
    # the stack's secret assignments masked, before any of it is printed or written.
    result = scrub(drift.DriftReport(cloud=cloud, host=host_part, docs=docs_part),
                   Redactor.for_parameters(cfg.secrets))
    if not (cloud.checked or host_part.checked or docs_part.checked):
        refuse(f"nothing could be checked: cloud {cloud.reason}; host and docs: no host",
               "give the host (--host ssh://admin@ADDR --ssh-key K, or the stack's outputs "
               "with --outputs F), and for the cloud part a Pulumi CLI with credentials")
    if report is not None:
        report.write_text(drift.render_markdown(result, stack_file=str(stack_file), host=host))
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        for line in drift.text_lines(result):
            print(line)
        if report is not None:
            print(f"report: {report}")
        if junit is not None:
            print(f"junit: {junit}")
    return result.exit_code
