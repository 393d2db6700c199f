"""Verifying one host: the suites (tests/infra), the runbook expectations (docs/runbooks) and
the managed-file check, in ONE pytest run over one shared SSH connection.

This module is the runner and the report; ``verify_cmd`` (``choiros-infra verify``) and
``kitchen verify`` are thin front ends to it.

- Access: testinfra's ssh backend with an ssh_config that multiplexes (ControlMaster,
  ControlPath, ControlPersist): the first command opens the connection (the reachability check
  does, before pytest starts), every later one, from every xdist worker, reuses it. A kitchen
  host has such a config already; for ``--ssh-key`` one is written to a private temporary
  directory.
- Speed: checks read facts with one command per module (tests/infra/host_facts.py); each
  connect from outside is made once per run and started at collection, in the background
  (tests/infra/outside_connect.py: a closed port costs the whole connect timeout); xdist
  workers (``-n``) run the rest side by side.
- Results: pytest writes JUnit; :func:`read_junit` turns it into :class:`CheckResult` rows
  grouped by runbook (tests/infra/conftest.py records each check's runbook, and a title, as
  JUnit properties: the suites' from their docstrings, the runbook statements' from their
  source; a JUnit file without them falls back on the statement items' names,
  ``<file>:<line> <statement>``), and :func:`render_markdown` writes the report: failures
  first, counts per runbook and a total.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from choiros_infra.errors import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from infra.config import StackConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SUITES = PROJECT_ROOT / "tests" / "infra"
RUNBOOKS = PROJECT_ROOT / "docs" / "runbooks"

# xdist workers by default. Against a remote host the run waits on SSH round trips, so more
# workers than cores pay off; a kitchen host shares this machine's CPUs with the checks, and
# beyond 2 workers their start-up (about 1 s of CPU each) eats the gain (measured on 2 cores:
# 0 workers 10.0 s, 2: 7.9 s, 3: 7.9 s, 4: 8.3 s for 270 checks).
DEFAULT_WORKERS = 4
KITCHEN_WORKERS = 2
CONNECT_TIMEOUT = 10
CONTROL_PERSIST = "120s"

Outcome = Literal["passed", "failed", "error", "skipped", "xfailed"]
UNMAPPED = "(no runbook)"


# --- access ----------------------------------------------------------------------------------


class UsageProblem(Exception):
    """The verify cannot run: what is wrong, and what to try."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class HostAccess:
    """How testinfra reaches the host: ``ssh://USER@ADDR[:PORT]`` and an ssh_config or a key."""

    url: str
    ssh_config: Path | None = None
    ssh_key: Path | None = None

    @property
    def user(self) -> str:
        return parse_host_url(self.url)[0]

    @property
    def address(self) -> str:
        return parse_host_url(self.url)[1]

    @property
    def port(self) -> int | None:
        return parse_host_url(self.url)[2]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}"


def parse_host_url(url: str) -> tuple[str, str, int | None]:
    """``ssh://USER@ADDR[:PORT]`` -> (user, address, port); UsageProblem otherwise."""
    fix = "give the host as ssh://USER@ADDR, e.g. ssh://admin@203.0.113.10"
    parts = urlsplit(url)
    if parts.scheme != "ssh" or parts.path not in ("", "/") or parts.query:
        raise UsageProblem(f"--host {url!r} is not an ssh:// URL", fix)
    try:
        port = parts.port
    except ValueError:
        raise UsageProblem(f"--host {url!r} has an invalid port", fix) from None
    if not parts.hostname:
        raise UsageProblem(f"--host {url!r} names no address", fix)
    if not parts.username:
        raise UsageProblem(f"--host {url!r} names no user",
                           "add the login: admin on Debian images, ubuntu on Ubuntu")
    return parts.username, parts.hostname, port


def ssh_config_text(*, ssh_key: Path | None, control_dir: Path | None,
                    known_hosts: Path | None = None) -> str:
    """An ssh_config for verify. ``control_dir`` set: one shared connection (ControlMaster);
    None: a new connection per command (the naive configuration the benchmark compares)."""
    lines = ["Host *", "    BatchMode yes", f"    ConnectTimeout {CONNECT_TIMEOUT}",
             "    ServerAliveInterval 15", "    LogLevel ERROR"]
    if ssh_key is not None:
        lines += [f"    IdentityFile {ssh_key}", "    IdentitiesOnly yes"]
    if known_hosts is not None:
        lines += [f"    UserKnownHostsFile {known_hosts}", "    StrictHostKeyChecking yes"]
    else:
        lines += ["    StrictHostKeyChecking accept-new"]
    if control_dir is not None:
        lines += ["    ControlMaster auto", f"    ControlPath {control_dir}/%C",
                  f"    ControlPersist {CONTROL_PERSIST}"]
    else:
        lines += ["    ControlMaster no", "    ControlPath none"]
    return "\n".join(lines) + "\n"


def write_ssh_config(directory: Path, *, ssh_key: Path | None, multiplex: bool = True,
                     known_hosts: Path | None = None) -> Path:
    """Write ``directory/ssh_config`` (``directory`` private: it also holds the control
    socket) and return its path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "ssh_config"
    path.write_text(ssh_config_text(ssh_key=ssh_key, control_dir=directory if multiplex else None,
                                    known_hosts=known_hosts))
    return path


def _ssh_options(access: HostAccess) -> list[str]:
    argv = ["ssh"]
    if access.ssh_config is not None:
        argv += ["-F", str(access.ssh_config)]
    if access.ssh_key is not None:
        argv += ["-i", str(access.ssh_key)]
    if access.port is not None:
        argv += ["-p", str(access.port)]
    return [*argv, "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]


def explain_ssh_failure(access: HostAccess, stderr: str) -> UsageProblem:
    """ssh's complaint as a problem and a fix."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else "no message"
    if "Permission denied" in text:
        return UsageProblem(f"SSH refused the login as {access.destination}: {last}",
                            "check --ssh-key (the key of the stack's choiros:ssh_public_key) "
                            "and the user (admin on Debian, ubuntu on Ubuntu)")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification" in text:
        return UsageProblem(f"the host key of {access.address} does not match the known one",
                            f"if the host was replaced (a config change replaces it), forget "
                            f"the old key: ssh-keygen -R {access.address}")
    if "Could not resolve" in text:
        return UsageProblem(f"cannot resolve {access.address}: {last}",
                            "check the address (pulumi stack output public_ip)")
    if "refused" in text:
        return UsageProblem(f"{access.address} refuses SSH connections: {last}",
                            "is the host up? (choiros-infra kitchen status, or the EC2 console)")
    return UsageProblem(f"cannot reach {access.destination} over SSH: {last}",
                        "check the address, that the host is up, and that your IP is in the "
                        "stack's choiros:admin_cidrs")


def check_reachable(access: HostAccess, timeout: float = 30.0) -> None:
    """Log in and prove root through sudo, as every check will; raise UsageProblem otherwise.
    With a multiplexing ssh_config this also opens the connection the run then shares."""
    try:
        result = subprocess.run([*_ssh_options(access), access.destination, "sudo", "-n", "true"],
                                capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UsageProblem(f"no answer from {access.address} within {timeout:g}s",
                           "check the address and that your IP is in the stack's "
                           "choiros:admin_cidrs (the security group)") from None
    except FileNotFoundError:
        raise UsageProblem("the ssh client is not installed",
                           "apt-get install openssh-client") from None
    if result.returncode == 255:
        raise explain_ssh_failure(access, result.stderr)
    if result.returncode != 0:
        raise UsageProblem(f"{access.user} logged in but cannot sudo without a password: "
                           f"{result.stderr.strip()}",
                           "verify reads the host as root through sudo: use the image's "
                           "admin user (admin on Debian, ubuntu on Ubuntu)")


def close_shared_connection(access: HostAccess) -> None:
    """Stop the ControlMaster a run started (for a generated ssh_config)."""
    subprocess.run([*_ssh_options(access), "-O", "exit", access.destination],
                   capture_output=True, timeout=10, check=False)


# --- the run ---------------------------------------------------------------------------------


def runbook_scheme(cfg: StackConfig, target: str) -> Literal["http", "https"]:
    """How Caddy answers: the kitchen always serves HTTPS (internal CA); an AWS host does
    unless tls_mode is off."""
    return "https" if target == "kitchen" or cfg.tls_mode != "off" else "http"


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

    @classmethod
    def for_stack(cls, access: HostAccess, stack_file: Path, target: str, cfg: StackConfig, *,
                  account_id: str | None = None, workers: int | None = None,
                  junit: Path | None = None, extra: tuple[str, ...] = ()) -> VerifyRun:
        """A run for a host built from ``cfg``: Caddy's scheme and name follow its TLS mode;
        ``workers`` None is the target's default."""
        return cls(access=access, stack_file=stack_file, target=target, account_id=account_id,
                   scheme=runbook_scheme(cfg, target), address=runbook_address(cfg, target),
                   workers=default_workers(target) if workers is None else workers,
                   junit=junit, extra=extra)


def pytest_argv(run: VerifyRun) -> list[str]:
    """The pytest command line of a run: both trees, one host, JUnit if asked."""
    access = run.access
    host = f"ssh://{access.destination}" + (f":{access.port}" if access.port else "")
    # Not the project's addopts: its -ra lists every xfail and skip again after the summary.
    argv = [
        sys.executable, "-m", "pytest", *(str(p) for p in run.paths),
        f"--rootdir={PROJECT_ROOT}", "-p", "no:cacheprovider", "-o", "addopts=--strict-markers",
        "-q", "-rN", "--tb=short", "--continue-on-collection-errors",
        f"--hosts={host}", "--sudo",
        f"--stack-file={run.stack_file.resolve()}", f"--target={run.target}",
        f"--runbook-scheme={run.scheme}",
        "-n", str(run.workers),
    ]
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


def run_pytest(run: VerifyRun) -> int:
    """Run the checks, pytest's output on this terminal; return pytest's exit code."""
    return subprocess.run(pytest_argv(run), check=False, cwd=PROJECT_ROOT).returncode


def run_suites(access: HostAccess, stack_file: Path, target: str,
               extra: tuple[str, ...] = ()) -> int:
    """The whole verify (suites, runbook expectations, managed files) against a host, output
    to the terminal; return verify's exit code (0, 1, 2)."""
    from infra.config import load_stack_file

    run = VerifyRun.for_stack(access, stack_file, target, load_stack_file(stack_file),
                              extra=extra)
    try:
        check_reachable(access)
    except UsageProblem as problem:
        print(f"Error: {problem.problem}\nTry: {problem.fix}", file=sys.stderr)
        return EXIT_UNUSABLE
    return verdict(run_pytest(run))


# --- results and the report ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One check as the report shows it."""

    runbook: str  # e.g. 30-operations/security.md, or UNMAPPED
    where: str  # the section (suite tests) or "line N" (runbook statements)
    title: str
    outcome: Outcome
    message: str = ""
    detail: str = ""
    seconds: float = 0.0
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def bad(self) -> bool:
        return self.outcome in ("failed", "error")


# A runbook statement's item name: "<file relative to docs/runbooks>:<line> <statement>".
_STATEMENT_ITEM = re.compile(r"^(?P<file>[^\s:]+\.md):(?P<line>\d+) (?P<text>.*)$", re.S)
# A runbook that does not parse: "docs/runbooks/<file>:<line>: <problem>".
_COLLECTION_ERROR = re.compile(r"(?:^|/)runbooks/(?P<file>\S+?\.md):(?P<line>\d+): ")
_HIDDEN_PROPERTIES = frozenset({"runbook", "title", "line"})


def _one_line(text: str) -> str:
    """A failure's first line, without the exception name or the statement's file:line
    (the report shows both already)."""
    line = next((s for s in (t.strip() for t in text.splitlines()) if s), "")
    line = re.sub(r"^(AssertionError|Failed): ", "", line)
    return re.sub(r"^\S+\.md:\d+: ", "", line)


def _dotted_runbooks(runbooks: Path) -> dict[str, str]:
    """How JUnit spells a runbook file's collection error (``docs.runbooks.a.b.md``)."""
    if not runbooks.is_dir():
        return {}
    return {".".join(p.relative_to(runbooks.parent.parent).parts): p.relative_to(runbooks)
            .as_posix() for p in runbooks.rglob("*.md")}


def read_junit(path: Path, runbooks: Path = RUNBOOKS) -> list[CheckResult]:
    """Every testcase of a pytest JUnit file (xunit1 or xunit2) as a CheckResult."""
    dotted = _dotted_runbooks(runbooks)
    results: list[CheckResult] = []
    root = ET.parse(path).getroot()  # noqa: S314 - pytest's own output, not untrusted input
    for case in root.iter("testcase"):
        props = tuple((p.get("name", ""), p.get("value", ""))
                      for p in case.iter("property"))
        named = dict(props)
        name, classname = case.get("name", ""), case.get("classname", "")
        outcome: Outcome = "passed"
        message = detail = ""
        for tag, kind in (("skipped", "skipped"), ("error", "error"), ("failure", "failed")):
            element = case.find(tag)
            if element is not None:
                xfail = element.get("type") == "pytest.xfail"
                outcome = "xfailed" if xfail else kind  # type: ignore[assignment]
                message = element.get("message", "")
                detail = (element.text or "").strip()
        statement = _STATEMENT_ITEM.match(name)
        if "runbook" in named:
            runbook, _, section = named["runbook"].partition("#")
            where = f"line {named['line']}" if "line" in named else (
                f"#{section}" if section else "")
            title = named.get("title", name)
        elif statement:
            runbook, where, title = (statement["file"], f"line {statement['line']}",
                                     statement["text"])
        elif not classname and (located := _COLLECTION_ERROR.search(detail)):
            runbook, where = located["file"], f"line {located['line']}"
            title = "the runbook's expect blocks do not parse"
        elif not classname and name in dotted:
            runbook, where, title = dotted[name], "", "the runbook could not be collected"
        else:
            runbook, where = UNMAPPED, ""
            title = f"{classname}::{name}" if classname else name
        results.append(CheckResult(
            runbook=runbook, where=where, title=title, outcome=outcome,
            message=_one_line(detail if message in ("", "collection failure") else message),
            detail=detail,
            seconds=float(case.get("time", "0") or 0),
            properties=tuple(p for p in props if p[0] not in _HIDDEN_PROPERTIES)))
    return results


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def add(self, result: CheckResult) -> None:
        if result.bad:
            self.failed += 1
        elif result.outcome in ("skipped", "xfailed"):
            self.skipped += 1
        else:
            self.passed += 1


@dataclass
class RunbookGroup:
    runbook: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def counts(self) -> Counts:
        counts = Counts()
        for result in self.results:
            counts.add(result)
        return counts


def _order(result: CheckResult) -> tuple[int, str, int, str]:
    rank = 0 if result.bad else 1 if result.outcome == "xfailed" else (
        3 if result.outcome == "skipped" else 2)
    line = re.match(r"line (\d+)$", result.where)
    return rank, "" if line else result.where, int(line[1]) if line else 0, result.title


def group_by_runbook(results: Iterable[CheckResult]) -> list[RunbookGroup]:
    """Groups with failures first (most failures first), then by runbook path; inside a
    group failures first, then known issues (xfail), passed, skipped."""
    groups: dict[str, RunbookGroup] = {}
    for result in results:
        groups.setdefault(result.runbook, RunbookGroup(result.runbook)).results.append(result)
    for group in groups.values():
        group.results.sort(key=_order)
    return sorted(groups.values(), key=lambda g: (-g.counts.failed, g.runbook == UNMAPPED,
                                                  g.runbook))


def total(results: Iterable[CheckResult]) -> Counts:
    counts = Counts()
    for result in results:
        counts.add(result)
    return counts


_MARK = {"passed": "pass", "failed": "**FAIL**", "error": "**ERROR**", "skipped": "skip",
         "xfailed": "known issue (xfail)"}
DETAIL_LINES = 30


def _fence(text: str) -> str:
    lines = text.splitlines()
    if len(lines) > DETAIL_LINES:
        lines = [*lines[:DETAIL_LINES], f"... ({len(lines) - DETAIL_LINES} more lines)"]
    body = "\n".join("    " + line for line in lines)
    return f"  ```text\n{body}\n  ```"


def render_markdown(results: Sequence[CheckResult], *, host: str, target: str,
                    stack_file: str, seconds: float | None = None) -> str:
    """The Markdown report: verdict and totals, a table of counts per runbook, then each
    runbook's checks, failures first with what the host showed."""
    groups = group_by_runbook(results)
    counts = total(results)
    verdict_word = "FAILED" if counts.failed else "PASSED" if counts.total else "NO CHECKS"
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    out = [
        f"# Verify report: {host}",
        "",
        f"- target: {target}; stack file: `{stack_file}`",
        f"- result: **{verdict_word}**: {counts.failed} of {counts.total} checks failed "
        f"({counts.passed} passed, {counts.skipped} skipped){took}",
        "",
        "| runbook | checks | failed | passed | skipped |",
        "|---|--:|--:|--:|--:|",
    ]
    for group in groups:
        c = group.counts
        out.append(f"| [{group.runbook}](#{_anchor(group.runbook)}) | {c.total} | {c.failed} "
                   f"| {c.passed} | {c.skipped} |")
    out += [f"| **total** | {counts.total} | {counts.failed} | {counts.passed} "
            f"| {counts.skipped} |", ""]
    for group in groups:
        c = group.counts
        out += [f"## {group.runbook}", "",
                f"{c.failed} failed, {c.passed} passed, {c.skipped} skipped", ""]
        for result in group.results:
            where = f" ({result.where})" if result.where else ""
            extra = "".join(f"; {k} {v}" for k, v in result.properties)
            line = f"- {_MARK[result.outcome]} `{result.title}`{where}{extra}"
            if result.outcome != "passed":
                line += f": {result.message}" if result.message else ""
            out.append(line)
            if result.bad and result.detail:
                out.append(_fence(result.detail))
        out.append("")
    return "\n".join(out)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a ``##`` heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
