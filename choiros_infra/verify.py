"""Verifying one host: the suites (tests/infra), the runbook expectations (docs/runbooks) and
the managed-file check, in ONE pytest run over one shared SSH connection.

This module is the runner; ``verify_cmd`` (``choiros-infra verify``), ``drift`` and ``kitchen
verify`` are thin front ends to it. How the host is reached is ``host_access``; how the results
are read and reported is ``verify_report``.

- Access: testinfra's ssh backend with the multiplexing ssh_config of ``host_access``: the
  reachability check opens the connection while pytest starts (pytest asks the host nothing
  before it has passed: ``run_checked``), every later command, from every xdist worker,
  reuses it.
- Speed: every host fact the checks will ask is read in ONE round trip, a stream that starts
  with collection (``verify_batch``, ``host_batch``: the host runs each command as collection
  declares it and sends each answer back as soon as it is done; the checks' ``host.run`` is
  answered from them); each connect from outside is made once per run and started at
  collection, in the background (tests/infra/outside_connect.py: a closed port costs the
  whole connect timeout). xdist workers (``-n``) each read ahead for themselves, so they only
  pay off where the outside checks dominate (a remote host).
- Results: pytest writes JUnit, which ``verify_report`` turns into rows and a report.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from choiros_infra.errors import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from choiros_infra.host_access import HostAccess, UsageProblem, check_reachable
from infra.config import StackConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SUITES = PROJECT_ROOT / "tests" / "infra"
RUNBOOKS = PROJECT_ROOT / "docs" / "runbooks"

# xdist workers by default. With the host's facts read ahead, a check costs no round trip;
# what is left to wait on is the outside checks (HTTP through Caddy, TCP connects). Against a
# remote host those are network round trips, and workers still pay off; a kitchen host is on
# this machine, where a worker's start-up (about 1 s of CPU each) and its own read-ahead cost
# more than they save (see bench/verify_speed.py).
DEFAULT_WORKERS = 4
KITCHEN_WORKERS = 0
# How long a connect from outside waits before the port counts as closed. ufw drops, so every
# "closed from outside" check costs the whole timeout (they all run at once, in the
# background). Across the internet an answer can take a second; a kitchen host is on this
# machine's own veth link, where an open port answers in under a millisecond.
CONNECT_TIMEOUT = 3.0
KITCHEN_CONNECT_TIMEOUT = 1.0
# The plugin that reads the host's facts ahead (choiros_infra/verify_batch.py).
READ_AHEAD_PLUGIN = "choiros_infra.verify_batch"
# What run_checked writes to pytest once the host is reachable (verify_batch waits for it).
HOST_READY = b"reachable"


def runbook_scheme(cfg: StackConfig, target: str) -> Literal["http", "https"]:
    """How Caddy answers: HTTPS unless the stack's tls_mode is off (the kitchen converges the
    stack's own mode, only acme becomes its internal CA)."""
    return "http" if cfg.tls_mode == "off" else "https"


def runbook_address(cfg: StackConfig, target: str) -> str | None:
    """The name to reach Caddy by: with tls_mode acme its certificate is for the domain."""
    return cfg.domain if target == "aws" and cfg.tls_mode == "acme" else None


def default_workers(target: str) -> int:
    return KITCHEN_WORKERS if target == "kitchen" else DEFAULT_WORKERS


@dataclass(frozen=True)
class VerifyRun:
    """One verify: the host, what it was built from, and how to run the checks."""

    access: HostAccess
    stack_file: Path
    target: str
    account_id: str | None = None
    scheme: str = "https"
    address: str | None = None
    workers: int = DEFAULT_WORKERS
    junit: Path | None = None
    paths: tuple[Path, ...] = (SUITES, RUNBOOKS)
    extra: tuple[str, ...] = ()
    read_ahead: bool = True
    connect_timeout: float = CONNECT_TIMEOUT

    @classmethod
    def for_stack(cls, access: HostAccess, stack_file: Path, target: str, cfg: StackConfig, *,
                  account_id: str | None = None, workers: int | None = None,
                  junit: Path | None = None, extra: tuple[str, ...] = ()) -> VerifyRun:
        """A run for a host built from ``cfg``: Caddy's scheme and name follow its TLS mode;
        ``workers`` None is the target's default."""
        return cls(access=access, stack_file=stack_file, target=target, account_id=account_id,
                   scheme=runbook_scheme(cfg, target), address=runbook_address(cfg, target),
                   workers=default_workers(target) if workers is None else workers,
                   junit=junit, extra=extra,
                   connect_timeout=KITCHEN_CONNECT_TIMEOUT if target == "kitchen"
                   else CONNECT_TIMEOUT)


def pytest_argv(run: VerifyRun) -> list[str]:
    """The pytest command line of a run: both trees, one host, JUnit if asked."""
    access = run.access
    host = f"ssh://{access.destination}" + (f":{access.port}" if access.port else "")
    # Not the project's addopts: its -ra lists every xfail and skip again after the summary.
    # Not pytest's unraisable-exception warnings: they cost two full garbage collections at
    # the end of every run (about 0.1 s) and only ever add a warning, never a check.
    argv = [
        sys.executable, "-m", "pytest", *(str(p) for p in run.paths),
        f"--rootdir={PROJECT_ROOT}", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
        "-o", "addopts=--strict-markers",
        "-q", "-rN", "--tb=short", "--continue-on-collection-errors",
        f"--hosts={host}", "--sudo",
        f"--stack-file={run.stack_file.resolve()}", f"--target={run.target}",
        f"--runbook-scheme={run.scheme}", f"--connect-timeout={run.connect_timeout:g}",
        "-n", str(run.workers),
    ]
    if run.read_ahead:
        argv += ["-p", READ_AHEAD_PLUGIN]
    if run.account_id:
        argv.append(f"--account-id={run.account_id}")
    if run.address:
        argv.append(f"--runbook-address={run.address}")
    if access.ssh_config is not None:
        argv.append(f"--ssh-config={access.ssh_config}")
    if access.ssh_key is not None:
        argv.append(f"--ssh-identity-file={access.ssh_key}")
    if run.junit is not None:
        argv += [f"--junitxml={run.junit.resolve()}", "-o", "junit_suite_name=choiros-verify"]
    return [*argv, *run.extra]


def verdict(pytest_code: int) -> int:
    """pytest's exit code as verify's: 0 all passed, 1 a check failed, 2 no run (usage error,
    internal error, interrupted, nothing collected)."""
    if pytest_code in (EXIT_OK, EXIT_FAILED):
        return pytest_code
    return EXIT_UNUSABLE


def run_checked(run: VerifyRun, reachable: Callable[[], None],
                stdout: int | None = None) -> int:
    """``reachable()`` (the reachability check, which also opens the shared connection), then
    the checks; return pytest's exit code. pytest starts first and imports and configures
    meanwhile (about 0.3 s of a kitchen verify), but touches the host only once
    ``reachable`` has passed: it waits for the word on a pipe (verify_batch's
    ``--host-ready-fd``). When ``reachable`` raises, pytest ends without a word and the
    exception goes on. Without the read-ahead plugin, or with xdist workers, one after the
    other."""
    if not run.read_ahead or run.workers:
        reachable()
        return subprocess.run(pytest_argv(run), check=False, cwd=PROJECT_ROOT,
                              stdout=stdout).returncode
    ready, go = os.pipe()
    try:
        proc = subprocess.Popen([*pytest_argv(run), f"--host-ready-fd={ready}"],
                                cwd=PROJECT_ROOT, stdout=stdout, pass_fds=(ready,))
    except BaseException:
        os.close(go)
        raise
    finally:
        os.close(ready)
    try:
        reachable()
        with contextlib.suppress(BrokenPipeError):  # pytest ended already (a usage error)
            os.write(go, HOST_READY)
    except BaseException:
        os.close(go)  # pytest reads the end of the pipe without the word: it stops quietly
        proc.wait()
        raise
    os.close(go)
    return proc.wait()


def run_suites(access: HostAccess, stack_file: Path, target: str,
               extra: tuple[str, ...] = ()) -> int:
    """The whole verify (suites, runbook expectations, managed files) against a host, output
    to the terminal; return verify's exit code (0, 1, 2)."""
    from infra.config import load_stack_file

    run = VerifyRun.for_stack(access, stack_file, target, load_stack_file(stack_file),
                              extra=extra)
    try:
        return verdict(run_checked(run, lambda: check_reachable(access)))
    except UsageProblem as problem:
        print(f"Error: {problem.problem}\nTry: {problem.fix}", file=sys.stderr)
        return EXIT_UNUSABLE
