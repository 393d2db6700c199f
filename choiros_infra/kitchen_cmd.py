"""``choiros-infra kitchen``: boot, inspect and remove local kitchen hosts.

A kitchen host is a systemd-nspawn container converged by the real cloud-init from the same
user-data EC2 gets (see :mod:`kitchen`). These commands are thin: all the work is in
:mod:`kitchen.lifecycle`; here is only argument parsing, a progress line per phase, and
errors printed as ``Error: ...`` / ``Try: ...``.

Exit codes: 0 ok, 1 the operation failed (e.g. the host did not converge), 2 the command could
not run (not root, missing tools, bad or taken name). ``ssh`` exits with the remote status.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from choiros_infra import diagnose_cmd, release_cmd, release_flow
from choiros_infra.errors import EXIT_FAILED, EXIT_UNUSABLE, fail, refusals, refuse
from choiros_infra.host_access import HostAccess
from choiros_infra.kitchen_drill import DrillResult, run_drill
from choiros_infra.kitchen_stack import (
    DEFAULT_STACK_FILE,
    built_from,
    replace_host,
    stack_up,
)
from choiros_infra.options import KitchenNameOption as NameOption
from choiros_infra.stack_target import StackTarget, kitchen_target
from choiros_infra.verify import KITCHEN_WORKERS
from choiros_infra.verify_cmd import execute
from infra.config import load_stack_file
from kitchen import cloud, lifecycle, preflight
from kitchen.lifecycle import PhaseEvent
from kitchen.ssh_access import ssh_argv, ssh_config
from kitchen.state import HostState

DEFAULT_NAME = "default"

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

kitchen_app = typer.Typer(
    name="kitchen",
    help="Local test hosts: systemd-nspawn containers booted from the host's cloud-init "
    "user-data, with a local apt mirror and a moto stand-in for AWS. Needs root.\n\n"
    "Exit codes: 0 ok, 1 the operation failed, 2 the command could not run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")


def _prerequisites() -> None:
    """Every kitchen command needs root and the kitchen's tools; say so before anything.
    (Not a group callback: that would also run for `--help`.)"""
    with refusals():
        preflight.check()


def register(app: typer.Typer) -> None:
    """Add the ``kitchen`` command group to the CLI."""
    app.add_typer(kitchen_app, name="kitchen")


class PhasePrinter:
    """Progress callback: a spinner while a phase runs, then one line with its duration."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Status | None = None
        self.started = time.monotonic()

    def __call__(self, event: PhaseEvent) -> None:
        if event.status == "start":
            self.status = self.console.status(f"{event.phase}…")
            self.status.start()
            return
        if self.status is not None:
            self.status.stop()
            self.status = None
        mark = "[green]✓[/]" if event.status == "done" else "[red]✗[/]"
        self.console.print(f"{mark} {event.phase:<10} {event.seconds:6.1f}s", markup=True)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _interruptible() -> Iterator[None]:
    """Treat SIGTERM (a CI timeout, `kill`) like Ctrl-C, so a half-made host is rolled back."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_phased(action: Callable[[PhasePrinter], T], interrupted: str) -> T:
    """Run a long kitchen operation with a progress line per phase; its refusal, or an
    interruption (what was cleaned up: ``interrupted``), is reported once the spinner stopped."""
    printer = PhasePrinter(stderr)
    try:
        with refusals():
            try:
                with _interruptible():
                    return action(printer)
            finally:
                printer.close()
    except KeyboardInterrupt:
        raise typer.Exit(refuse(f"interrupted; {interrupted}", None, code=EXIT_FAILED)) from None


def _summary(st: HostState) -> None:
    stderr.print(
        f"kitchen [bold]{st.name}[/] {st.state}: {st.ssh_user}@{st.address} "
        f"({lifecycle.CLI} ssh --name {st.name})",
        markup=True,
    )


StackFileOption = Annotated[Path, typer.Option(
    "--stack-file", help="Stack file the host is built from (its kitchen rendering).")]
BuiltFromOption = Annotated[Path | None, typer.Option(
    "--stack-file", help="Stack file the host was built from (default: the one `kitchen up` "
    "used).", show_default=False)]


def _built_from(name: str, given: Path | None) -> Path:
    if given is not None:
        return given
    with refusals():
        return built_from(lifecycle.status(name))


def _up(name: str, stack_file: Path) -> HostState:
    return _run_phased(lambda printer: stack_up(name, stack_file, progress=printer),
                       "the half-created host was removed")


@kitchen_app.command()
def up(name: NameOption = DEFAULT_NAME,
       stack_file: StackFileOption = DEFAULT_STACK_FILE,
       replace: Annotated[bool, typer.Option(
           "--replace", help="Destroy a host of that name first instead of refusing.")] = False,
       ) -> None:
    """Create a kitchen host from the stack's kitchen user-data and wait until it converged.

    Seeds the kitchen cloud with the stack's buckets, SSM parameters (test values) and, for
    a stack that wants no release yet, the stand-in app's first release as its wanted release;
    then boots the host, which deploys the wanted release, and waits for cloud-init.
    """
    _prerequisites()
    if replace:
        with refusals():
            lifecycle.destroy(name, progress=PhasePrinter(stderr))
    st = _up(name, stack_file)
    _summary(st)
    stderr.print(f"  ssh:     {' '.join(ssh_argv(st))}\n"
                 f"  verify:  {lifecycle.CLI} verify --name {name}\n"
                 f"  destroy: {lifecycle.CLI} destroy --name {name}")


def _verify(name: str, stack_file: Path, extra: tuple[str, ...], *,
            junit: Path | None = None, report: Path | None = None,
            as_json: Path | None = None, workers: int = KITCHEN_WORKERS) -> int:
    """``choiros-infra verify`` against a kitchen host, through the host's own ssh_config."""
    with refusals():
        st = lifecycle.status(name)
        lifecycle.running_guest(name)
    access = HostAccess(url=f"ssh://{st.ssh_user}@{st.address}", ssh_config=ssh_config(st))
    return execute(access, stack_file, "kitchen", junit=junit, report=report, as_json=as_json,
                   workers=workers, extra=extra)


@kitchen_app.command(context_settings={"allow_interspersed_args": False})
def verify(name: NameOption = DEFAULT_NAME,
           stack_file: BuiltFromOption = None,
           junit: Annotated[Path | None, typer.Option(
               "--junit", help="Write the results as JUnit XML to this file.")] = None,
           report: Annotated[Path | None, typer.Option(
               "--report", help="Write the Markdown report (by runbook) to this file.")]
               = None,
           as_json: Annotated[Path | None, typer.Option(
               "--json", help="Write one JSON object per check to this file (as `verify "
               "--json`).")] = None,
           workers: Annotated[int, typer.Option(
               "-n", "--workers", min=0, help="Parallel pytest workers (pytest-xdist's -n); "
               "0 runs serially.")] = KITCHEN_WORKERS,
           pytest_args: Annotated[list[str] | None, typer.Argument(
               help="Extra pytest arguments (after --), e.g. -k health.")] = None) -> None:
    """Run `choiros-infra verify` against a kitchen host: the host suites, the runbook
    expectations and the managed-file check.

    Exit codes: 0 every check passed, 1 a check failed, 2 the verify could not run.
    """
    _prerequisites()
    raise typer.Exit(_verify(name, _built_from(name, stack_file), tuple(pytest_args or ()),
                             junit=junit, report=report, as_json=as_json,
                             workers=workers))


@kitchen_app.command()
def diagnose(name: NameOption = DEFAULT_NAME,
             out: Annotated[Path | None, typer.Option(
                 "--out", help="Write the Markdown here (default: standard output).")]
                 = None) -> None:
    """Run `choiros-infra diagnose` against a kitchen host: its incident evidence in one
    Markdown file (read-only).

    Exit codes: 0 the file was written, 2 the diagnose could not run.
    """
    _prerequisites()
    with refusals():
        st = lifecycle.status(name)
        lifecycle.running_guest(name)
        secrets = load_stack_file(built_from(st)).secrets
    access = HostAccess(url=f"ssh://{st.ssh_user}@{st.address}", ssh_config=ssh_config(st))
    raise typer.Exit(diagnose_cmd.execute(access, out, secrets=secrets))


def _release_command(name: str, flow: Callable[[StackTarget, HostAccess], int]) -> NoReturn:
    """A release flow (deploy, rollback) against a kitchen host, through its ssh_config."""
    with refusals():
        lifecycle.running_guest(name)
        stack = kitchen_target(name)
        code = flow(stack, stack.access())
    raise typer.Exit(code)


@kitchen_app.command("deploy")
def deploy_(version: Annotated[str, typer.Argument(help="A version published to the kitchen "
                                                   "cloud's artifacts bucket of the host's "
                                                   "stack.", show_default=False)],
            name: NameOption = DEFAULT_NAME) -> None:
    """`choiros-infra deploy VERSION` for a kitchen host: check the release in the bucket, set
    the stack's wanted release, deploy, health-check, run the application checks.

    Exit codes: as `choiros-infra deploy --help` says (0 live and checked, 1 failed and
    switched back, 2 usage, 3 refused, 4 needs an operator).
    """
    _prerequisites()
    _release_command(name, lambda stack, access: release_flow.deploy(
        stack, access, version, check=release_cmd.app_checks, say=release_cmd.say))


@kitchen_app.command("rollback")
def rollback_(name: NameOption = DEFAULT_NAME) -> None:
    """`choiros-infra rollback` for a kitchen host: back to its previous release, which
    becomes the stack's wanted release.

    Exit codes: as `choiros-infra rollback --help` says.
    """
    _prerequisites()
    _release_command(name, lambda stack, access: release_flow.rollback(
        stack, access, check=release_cmd.app_checks, say=release_cmd.say))


@kitchen_app.command("promote")
def promote_(version: Annotated[str, typer.Argument(help="The version the staging host runs "
                                                    "and verified.", show_default=False)],
             from_name: Annotated[str, typer.Option("--from", help="The staging kitchen host.",
                                                    show_default=False)],
             to_name: Annotated[str, typer.Option("--to", help="The production kitchen host.",
                                                  show_default=False)]) -> None:
    """`choiros-infra promote VERSION` between two kitchen hosts of two stacks: the exact
    bytes the staging host runs and verified, deployed to the production host.

    Exit codes: as `choiros-infra promote --help` says.
    """
    _prerequisites()
    with refusals():
        for name in (from_name, to_name):
            lifecycle.running_guest(name)
        staging, production = kitchen_target(from_name), kitchen_target(to_name)
        code = release_flow.promote(version, staging, staging.access(), production,
                                    production.access(), check=release_cmd.app_checks,
                                    say=release_cmd.say)
    raise typer.Exit(code)


class DestroyWhen(StrEnum):
    """Test Kitchen's --destroy: when `kitchen test` removes its host."""

    passing = "passing"
    always = "always"
    never = "never"


@kitchen_app.command()
def test(name: NameOption = "test",
         stack_file: StackFileOption = DEFAULT_STACK_FILE,
         destroy_when: Annotated[DestroyWhen, typer.Option(
             "--destroy", help="When to remove the host: always (default), passing (only when "
             "verify passed: a failed one stays up for debugging), never.")]
             = DestroyWhen.always,
         junit: Annotated[Path | None, typer.Option(
             "--junit", help="Write verify's results as JUnit XML to this file.")] = None,
         report: Annotated[Path | None, typer.Option(
             "--report", help="Write verify's Markdown report to this file.")] = None) -> None:
    """Up, verify, destroy: one throwaway host. Exit code: verify's (2 if up failed)."""
    _prerequisites()
    code = EXIT_UNUSABLE
    try:
        _up(name, stack_file)
        code = _verify(name, stack_file, (), junit=junit, report=report)
    finally:
        if destroy_when is DestroyWhen.always or (
                destroy_when is DestroyWhen.passing and code == 0):
            lifecycle.destroy(name, progress=PhasePrinter(stderr))
        else:
            stderr.print(f"kept {name} for debugging: {lifecycle.CLI} ssh --name {name}; "
                         f"{lifecycle.CLI} destroy --name {name} when done")
    raise typer.Exit(code)


@kitchen_app.command()
def status(
    name: NameOption = DEFAULT_NAME,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: name, state, address, "
                                          "ssh_user, ssh_key, ssh_port, known_hosts, "
                                          "started_at, instance_id.")] = False,
) -> None:
    """Show one kitchen host's state and how to reach it."""
    _prerequisites()
    with refusals():
        st = lifecycle.status(name)
    if as_json:
        typer.echo(json.dumps(st.public(), indent=2, sort_keys=True))
        return
    for key, value in st.public().items():
        stdout.print(f"{key:<11} {value}")
    if st.error:
        stdout.print(f"{'error':<11} {st.error}")


@kitchen_app.command(context_settings={"allow_interspersed_args": False})
def ssh(
    name: NameOption = DEFAULT_NAME,
    command: Annotated[list[str] | None, typer.Argument(
        help="Command to run on the host (after --); an interactive shell without one.")] = None,
) -> None:
    """SSH into a kitchen host as its default user, with its key."""
    _prerequisites()
    with refusals():
        st = lifecycle.status(name)
        lifecycle.running_guest(name)
    result = subprocess.run(ssh_argv(st, command or []), check=False)
    raise typer.Exit(result.returncode)


@kitchen_app.command("list")
def list_(as_json: Annotated[bool, typer.Option(
        "--json", help="Print {\"hosts\": [kitchen status --json of each], \"cloud\": "
        "{\"state\", \"apt_proxy\", \"aws_endpoint\"}}.")] = False) -> None:
    """List kitchen hosts and the kitchen cloud."""
    _prerequisites()
    hosts = lifecycle.list_hosts()
    info = cloud.cloud_info()
    state = "running" if cloud.cloud_running() else "stopped"
    if as_json:
        print(json.dumps({"hosts": [st.public() for st in hosts],
                          "cloud": {"state": state, "apt_proxy": info.apt_proxy_url,
                                    "aws_endpoint": info.endpoint_url}}, indent=2))
        return
    table = Table(title="kitchen hosts")
    for column in ("name", "state", "address", "ssh", "started_at"):
        table.add_column(column)
    for st in hosts:
        table.add_row(st.name, str(st.state), st.address,
                      f"{st.ssh_user}@{st.address}" if st.address else "", st.started_at or "")
    if hosts:
        stdout.print(table)
    else:
        stdout.print("no kitchen hosts")
    stdout.print(f"cloud {state}: apt proxy {info.apt_proxy_url}, AWS endpoint "
                 f"{info.endpoint_url}")


@kitchen_app.command()
def reboot(name: NameOption = DEFAULT_NAME) -> None:
    """Reboot a kitchen host and wait until it is back with systemd running."""
    _prerequisites()
    st = _run_phased(lambda printer: lifecycle.reboot(name, progress=printer),
                     f"the host may be down; see `{lifecycle.CLI} status --name {name}`")
    if st is not None:
        _summary(st)


@kitchen_app.command()
def destroy(
    name: Annotated[str | None, typer.Option("--name", help="Kitchen host name "
                                             f"(default: {DEFAULT_NAME}).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Destroy every kitchen host and stop "
                                       "the kitchen cloud.")] = False,
) -> None:
    """Remove a kitchen host (or all of them and the cloud); safe to repeat."""
    _prerequisites()
    if all_ and name is not None:
        fail("--name and --all exclude each other",
             f"{lifecycle.CLI} destroy --name NAME, or --all")
    with refusals():
        if all_:
            removed = lifecycle.destroy_all(progress=PhasePrinter(stderr))
            stderr.print(f"destroyed {len(removed)} host(s); kitchen cloud stopped")
            return
        target = name or DEFAULT_NAME
        existed = lifecycle.destroy(target, progress=PhasePrinter(stderr))
        stderr.print(f"destroyed {target}" if existed else f"nothing to destroy for {target}")


@kitchen_app.command("replace")
def replace_(name: NameOption = DEFAULT_NAME,
             stack_file: BuiltFromOption = None,
             hard: Annotated[bool, typer.Option(
                 "--hard", help="Kill every process of the host at once (a lost instance) "
                 "instead of an orderly shutdown.")] = False) -> None:
    """Replace a kitchen host by a new one from the stack, as a config change replaces the EC2
    instance: the old host goes first, the new one restores its database at boot.

    Exit codes: 0 replaced and converged, 1 the new host failed, 2 the command could not run.
    """
    _prerequisites()
    built = _built_from(name, stack_file)
    st = _run_phased(lambda printer: replace_host(name, built, hard=hard, progress=printer),
                     f"see `{lifecycle.CLI} status --name {name}`")
    if st is not None:
        _summary(st)


@kitchen_app.command()
def drill(stack_file: StackFileOption = DEFAULT_STACK_FILE,
          db_mb: Annotated[int, typer.Option(
              "--db-mb", min=0, help="Grow the database by this many MiB first (through the "
              "app, 0.9 MiB events).")] = 0,
          write_seconds: Annotated[float, typer.Option(
              "--write-seconds", min=1, help="How long events are written before the kill.")]
          = 10.0,
          as_json: Annotated[bool, typer.Option(
              "--json", help="Print JSON: rpo_seconds, rto_seconds, events_acknowledged, "
              "events_lost, db_bytes, restore_seconds, fill_seconds, stack, host.")] = False,
          ) -> None:
    """Restore drill: boot a throwaway host (a copy of the stack named drill-<hex>), write
    events continuously, kill the host hard, replace it, and measure RPO and RTO.

    The host and the throwaway stack's buckets are removed afterwards.
    Exit codes: 0 measured, 1 the drill failed, 2 the command could not run.
    """
    _prerequisites()
    result: DrillResult = _run_phased(
        lambda printer: run_drill(stack_file, db_mb=db_mb, write_seconds=write_seconds,
                                  progress=printer),
        "the drill host and its stack were removed")
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        return
    for key, value in result.as_dict().items():
        stdout.print(f"{key:<20} {value}")
