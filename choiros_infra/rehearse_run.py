"""Running a runbook's rehearsal against a kitchen host: each step where it says (host steps
over the host's SSH connection as its admin user, workstation steps here, against the kitchen
cloud), then the runbook's expect blocks; a failure marks the host spoiled.

Workstation steps run as an operator's shell would, from the project's root, with four
things an operator's machine has configured: ``ssh`` reaches the kitchen host (a wrapper on
PATH adds the host's own ssh_config), the AWS CLI (``.venv/bin/aws``, installed by ``make
setup``) is on PATH, it and the SDKs talk to the kitchen cloud (``AWS_ENDPOINT_URL`` and its
test credentials), and the stack's region is the default.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from choiros_infra.expect import RunbookSyntaxError, parse_file
from choiros_infra.host_access import HostAccess, UsageProblem, run_on_host
from choiros_infra.redaction import Redactor
from choiros_infra.rehearse import (
    Runbook,
    Step,
    StepFailure,
    bind,
    captured,
    locate_failure,
    script,
    unbound,
)
from choiros_infra.verify import PROJECT_ROOT, RUNBOOKS

STEP_TIMEOUT = 600.0
# On the host: present while an earlier rehearsal left it in an unknown state.
SPOILED = "/var/lib/choiros-rehearse/spoiled"


@dataclass(frozen=True)
class RehearsalHost:
    """A kitchen host and what its steps are bound to."""

    name: str
    access: HostAccess
    stack_file: Path
    values: Mapping[str, str]
    aws_env: Mapping[str, str]
    # Applied to every step's output before it is shown or stored (choiros_infra.redaction).
    redact: Redactor = field(default_factory=Redactor)
    # How a command reaches the host: over SSH (None), or given (a test's own machine).
    transport: Callable[[list[str], float], tuple[int, str]] | None = None
    spoiled_mark: str = SPOILED

    def on_host(self, argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` on the host: (exit status, the output's tail)."""
        if self.transport is not None:
            return self.transport(argv, timeout)
        return run_on_host(self.access, argv, timeout=timeout, echo=lambda _line: None)


@dataclass
class RunbookResult:
    file: str
    steps: int
    checks: int | None = None  # the verify exit code of its expect blocks; None: it has none
    failure: StepFailure | None = None
    checks_failed: bool = False

    @property
    def passed(self) -> bool:
        return self.failure is None and not self.checks_failed

    def as_json(self) -> dict[str, object]:
        failure = None if self.failure is None else {
            "file": self.failure.file, "line": self.failure.line,
            "command": self.failure.command, "status": self.failure.status,
            "tail": self.failure.tail}
        return {"file": self.file, "steps": self.steps, "passed": self.passed,
                "failure": failure, "checks_failed": self.checks_failed}


@dataclass
class Rehearsal:
    """One run over some runbooks on one host; stops at the first failure."""

    host: RehearsalHost
    say: Callable[[str], None]
    check: Callable[[RehearsalHost, Path], int]
    # Called before each step (the scratch host boots here for a step that needs it).
    before: Callable[[Step], None] = lambda _step: None
    results: list[RunbookResult] = field(default_factory=list)
    # The CAPTURED placeholders earlier steps' output bound (e.g. <copy>).
    captured: dict[str, str] = field(default_factory=dict)

    def run(self, runbooks: Sequence[Runbook]) -> bool:
        spoiled = spoiled_by(self.host)
        if spoiled:
            raise UsageProblem(f"kitchen host {self.host.name} is spoiled: {spoiled}",
                               f"replace it: choiros-infra kitchen up --replace --name "
                               f"{self.host.name}")
        with workstation_env(self.host) as env:
            for runbook in runbooks:
                if not runbook.steps:
                    continue
                result = self._runbook(runbook, env)
                self.results.append(result)
                if not result.passed:
                    why = (str(result.failure) if result.failure is not None
                           else f"{runbook.file}: its expect blocks fail after the procedure")
                    mark_spoiled(self.host, why.splitlines()[0])
                    return False
        return True

    def _runbook(self, runbook: Runbook, env: Mapping[str, str]) -> RunbookResult:
        result = RunbookResult(runbook.file, len(runbook.steps))
        for step in runbook.steps:
            first = next((t.strip() for _, t in step.lines if t.strip()), "")
            self.say(f"rehearse: {step.file}:{step.line} ({step.where}) {first}")
            self.before(step)
            started = time.monotonic()
            status, output = self._step(step, env)
            self.say(f"  exit {status} after {time.monotonic() - started:.1f} s")
            if status != 0:
                output = self.host.redact(output)
                result.failure = locate_failure(step, status, output)
                return result
            self.captured.update(captured(output))
        if has_expectations(runbook.path):
            self.say(f"rehearse: {runbook.file}: checking its expect blocks")
            code = self.check(self.host, runbook.path)
            result.checks = code
            result.checks_failed = code != 0
        return result

    def _step(self, step: Step, env: Mapping[str, str]) -> tuple[int, str]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        values = {**self.host.values, **self.captured, "time": now}
        missing = unbound(step, values)
        if missing is not None:
            return 2, missing
        text = script(step.bound(bind(values)))
        if step.where == "host":
            return self.host.on_host(["bash", "-c", text], STEP_TIMEOUT)
        try:
            done = subprocess.run(["bash", "-c", text], cwd=PROJECT_ROOT, env=dict(env),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", timeout=STEP_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else ""
            return 124, out + f"\n(killed after {STEP_TIMEOUT:g} s)"
        return done.returncode, done.stdout[-8192:]


def has_expectations(path: Path) -> bool:
    try:
        return bool(parse_file(path, RUNBOOKS))
    except RunbookSyntaxError:
        return True  # the check run reports the syntax error


@contextmanager
def workstation_env(host: RehearsalHost) -> Iterator[dict[str, str]]:
    """The environment of workstation steps: ``ssh`` to the kitchen host through its own
    ssh_config, AWS calls to the kitchen cloud."""
    tools = Path(tempfile.mkdtemp(prefix="choiros-rehearse-"))
    try:
        real_ssh = shutil.which("ssh") or "/usr/bin/ssh"
        wrapper = tools / "ssh"
        config = host.access.ssh_config
        extra = f"-F {shlex.quote(str(config))} " if config is not None else ""
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(real_ssh)} {extra}"$@"\n')
        wrapper.chmod(0o755)
        region = host.values.get("region", "")
        path = os.pathsep.join([str(tools), str(Path(sys.executable).parent),
                                os.environ.get("PATH", "")])
        env = {**os.environ, **host.aws_env, "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
               "PATH": path}
        yield env
    finally:
        shutil.rmtree(tools, ignore_errors=True)


def spoiled_by(host: RehearsalHost) -> str:
    """Why the host is spoiled ("" when it is not)."""
    code, out = host.on_host(["cat", host.spoiled_mark])
    return out.strip() if code == 0 else ""


def mark_spoiled(host: RehearsalHost, why: str) -> None:
    """Leave the reason on the host: the next rehearsal refuses it until it is replaced (a
    replaced host starts without it)."""
    host.on_host(["sudo", "sh", "-c", 'mkdir -p "${1%/*}" && printf "%s\\n" "$2" > "$1"',
                  "sh", host.spoiled_mark, why])
