"""`choiros-infra verify` against a real ChoirOS host: it passes on a fresh kitchen, and a hand
edit of a managed file, a stopped service and an opened port each fail it with the specific
check named in the report. One host for the module; each case restores the host after itself.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_kit import healthy, host_name, stack_host, wait_until
from typer.testing import CliRunner

from choiros_infra.cli import app
from choiros_infra.expect.kinds import fail2ban as fail2ban_kind
from choiros_infra.expect.probes import HostCommand
from choiros_infra.host_access import HostAccess
from choiros_infra.host_batch import Answer, HostSecrets, decode_answers, program_argv
from choiros_infra.kitchen_cmd import kitchen_app
from choiros_infra.verify import PROJECT_ROOT
from choiros_infra.verify_cmd import execute
from choiros_infra.verify_report import CheckResult, read_junit
from kitchen import lifecycle
from kitchen.state import HostState

pytestmark = pytest.mark.kitchen

EDITED = "/etc/fail2ban/jail.local"  # fail2ban is not reloaded: the edit is only drift


@pytest.fixture(scope="module")
def host(stack_file: Path) -> Iterator[HostState]:
    with stack_host(host_name("verify"), stack_file) as host:
        yield host


def on_host(host: HostState, *argv: str) -> None:
    result = lifecycle.exec_in(host.name, list(argv))
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"


def run_verify(host: HostState, out: Path, stack_file: Path,
               ) -> tuple[int, list[CheckResult], str]:
    """verify through its front door with the host's key: exit code, checks, report."""
    junit, report = out / "junit.xml", out / "report.md"
    access = HostAccess(url=f"ssh://{host.ssh_user}@{host.address}",
                        ssh_key=Path(host.ssh_key))
    code = execute(access, stack_file, "kitchen", junit=junit, report=report,
                   known_hosts=Path(host.known_hosts))
    return code, read_junit(junit), report.read_text()


def failed(results: list[CheckResult]) -> set[str]:
    return {r.title for r in results if r.bad}


def test_verify_passes_on_a_fresh_kitchen(host: HostState, tmp_path: Path,
                                          stack_file: Path) -> None:
    junit, report = tmp_path / "junit.xml", tmp_path / "report.md"
    result = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"), "verify",
         "--host", f"ssh://{host.ssh_user}@{host.address}", "--ssh-key", host.ssh_key,
         "--known-hosts", host.known_hosts, "--stack-file", str(stack_file),
         "--target", "kitchen", "--junit", str(junit), "--report", str(report),
         "--json", str(tmp_path / "checks.json")],
        capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Every host fact of the real suites and runbooks is read ahead: a check that asks the
    # host itself (a round trip each) shows here.
    facts = [line for line in (result.stdout + result.stderr).splitlines()
             if line.startswith("host facts")]
    assert len(facts) == 1 and " read in one round trip (" in facts[0], facts
    assert "asked one by one" not in facts[0], facts[0]
    checks = read_junit(junit)
    assert len(checks) >= 150
    assert not failed(checks)
    as_json = json.loads((tmp_path / "checks.json").read_text())
    assert len(as_json["checks"]) == len(checks) == as_json["counts"]["total"]
    assert {c["status"] for c in as_json["checks"]} <= {"passed", "skipped"}
    text = report.read_text()
    assert "**PASSED**: 0 of" in text
    assert "30-operations/04-security.md" in text  # suites grouped by their runbook
    assert "50-testing/expect-grammar.md" in text  # runbook statements in the same run


def test_the_host_program_answers_fail2ban_queries_as_fail2ban_client_prints_them(
        host: HostState) -> None:
    """verify's fail2ban queries are answered inside the host program, through fail2ban's own
    client library: word for word what fail2ban-client prints. With no fail2ban-client on
    the program's PATH, only the in-process answers can succeed; the same queries behind
    ``command`` are not queries to it, and run the real client."""
    queries = [fail2ban_kind.STATUS, fail2ban_kind.get("sshd", "maxretry"),
               fail2ban_kind.get("sshd", "journalmatch"), fail2ban_kind.get("sshd", "actions"),
               HostCommand("fail2ban-client status sshd")]
    lines = [q.template % tuple(shlex.quote(a) for a in q.args) for q in queries]  # as planned
    real = [line.replace("fail2ban-client", "command fail2ban-client", 1) for line in lines]

    def answers(commands: list[str], path: str) -> list[Answer]:
        argv = ["env", f"PATH={path}", "/usr/bin/python3",
                *program_argv(commands, HostSecrets())[1:]]
        result = lifecycle.exec_in(host.name, argv)
        assert result.returncode == 0, result.stderr[-2000:]
        return decode_answers(result.stdout, len(commands))

    in_process = answers(lines, "/nonexistent")
    by_client = answers(real, "/usr/sbin:/usr/bin:/sbin:/bin")
    for line, mine, theirs in zip(lines, in_process, by_client, strict=True):
        assert (mine.rc, mine.stdout, mine.stderr) == (0, theirs.stdout, ""), line
        assert theirs.rc == 0 and theirs.stdout.strip(), line
    assert "Jail list:\tsshd" in in_process[0].stdout
    # A query the server refuses is fail2ban-client's own error, exit code and text.
    [refused] = answers(["fail2ban-client get nojail maxretry"], "/nonexistent")
    assert refused.rc == 127, refused  # not answered in-process: the (absent) client ran


def test_a_kitchen_host_key_never_reaches_the_operators_known_hosts(
        host: HostState, stack_file: Path) -> None:
    """Without --known-hosts, verify checks a kitchen host against that host's own file; the
    next kitchen host at the same address must not look like a changed host key."""
    known = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "known_hosts"
    before = known.read_text() if known.exists() else None
    result = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"), "verify",
         "--host", f"ssh://{host.ssh_user}@{host.address}", "--ssh-key", host.ssh_key,
         "--stack-file", str(stack_file), "--target", "kitchen", "--",
         "-k", "test_the_host_runs_the_wanted_release"],
        capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = known.read_text() if known.exists() else None
    assert after == before, f"{known} changed"
    assert host.address not in (after or "")


def test_a_hand_edited_managed_file_fails_by_path(host: HostState, tmp_path: Path,
                                                  stack_file: Path) -> None:
    on_host(host, "cp", "-a", EDITED, f"{EDITED}.verify-backup")
    try:
        on_host(host, "sh", "-c", f"echo '# edited by hand' >> {EDITED}")
        code, checks, report = run_verify(host, tmp_path, stack_file)
    finally:
        on_host(host, "mv", f"{EDITED}.verify-backup", EDITED)
    assert code == 1
    assert failed(checks) == {f"test_managed_file[{EDITED}]"}
    assert f"**FAIL** `test_managed_file[{EDITED}]`" in report
    assert f"{EDITED}: content changed (sha256" in report


def test_a_stopped_service_fails_the_service_checks(host: HostState, tmp_path: Path,
                                                    stack_file: Path) -> None:
    on_host(host, "systemctl", "stop", "choiros-backend")
    try:
        junit, report = tmp_path / "junit.xml", tmp_path / "report.md"
        result = CliRunner().invoke(kitchen_app, ["verify", "--name", host.name, "--junit",
                                                  str(junit), "--report", str(report)])
    finally:
        on_host(host, "systemctl", "start", "choiros-backend")
        wait_until("the host recovered: backend /health", lambda: healthy(host), 60, 0.5)
    assert result.exit_code == 1, result.output
    titles = failed(read_junit(junit))
    assert "test_service_is_enabled_and_running[choiros-backend.service]" in titles
    assert "service choiros-backend: enabled, running" in titles  # the runbooks' statement
    text = report.read_text()
    assert "**FAIL** `test_service_is_enabled_and_running[choiros-backend.service]`" in text
    assert "choiros-backend.service is not running" in text
    assert "service choiros-backend: expected running, observed inactive" in text


def test_an_opened_port_fails_the_firewall_checks(host: HostState, tmp_path: Path,
                                                  stack_file: Path) -> None:
    on_host(host, "ufw", "allow", "8080/tcp")  # the backend listens on 0.0.0.0:8080
    try:
        code, checks, report = run_verify(host, tmp_path, stack_file)
    finally:
        on_host(host, "ufw", "delete", "allow", "8080/tcp")
    assert code == 1
    titles = failed(checks)
    assert {"test_backend_port_is_closed_from_outside", "test_ufw_allows_nothing_else"} <= titles
    assert "port 8080: closed from outside" in titles
    assert "port 8080 from outside: open (connected to" in report
    assert "ufw allows more than" in report


def test_the_host_passes_again_after_the_cases(host: HostState, stack_file: Path) -> None:
    """Every case restored what it changed (checked through `choiros-infra kitchen verify`)."""
    result = CliRunner().invoke(app, ["kitchen", "verify", "--name", host.name,
                                      "--stack-file", str(stack_file)])
    assert result.exit_code == 0, result.output
