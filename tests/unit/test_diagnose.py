"""choiros-infra diagnose: the Markdown it assembles, and that it only ever reads."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from choiros_infra import diagnose, diagnose_cmd
from choiros_infra.cli import app
from choiros_infra.diagnose import SECTIONS, Probe, Result, collect, render_markdown
from choiros_infra.host_access import HostAccess
from choiros_infra.host_batch import HOST_PROGRAM

pytestmark = pytest.mark.unit

READ_ONLY = {"curl", "journalctl", "systemctl", "tail", "df", "du", "free", "uptime", "ss",
             "ufw", "readlink", "fail2ban-client", "ls"}


def _fake_one(probe: Probe) -> Result:
    if probe.argv[0] == "readlink":
        return Result(probe, 1, "releases/1.0.0\n")
    if probe.argv[0] == "tail" and probe.argv[-1].endswith("backend.log"):
        return Result(probe, 0, "a line with ``` in it\n")
    return Result(probe, 0, f"output of {probe.argv[0]}\n")


def _fake(probes: Sequence[Probe]) -> list[Result]:
    return [_fake_one(p) for p in probes]


def test_the_report_has_every_section_in_order_with_a_table_of_contents() -> None:
    text = render_markdown(collect(_fake), host="admin@10.0.0.1", generated="2026-01-01T00:00Z")
    titles = ["Health", "Units", "Logs", "Disk and memory", "Listening ports",
              "Deploys and rollbacks", "fail2ban bans", "Backup freshness"]
    assert [s.title for s in SECTIONS] == titles
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == titles
    assert "- [Disk and memory](#disk-and-memory)" in text
    assert text.startswith("# Diagnose: admin@10.0.0.1\n")
    for title in ("journal of caddy.service", "journal of choiros-litestream.service",
                  "/opt/choiros/logs/backend.log", "/opt/choiros/logs/backend-error.log",
                  "deploy history", "sshd jail", "TCP listeners", "backend /health"):
        assert f"### {title}" in text, title


def test_a_failed_command_is_marked_and_output_with_backticks_stays_fenced() -> None:
    text = render_markdown(collect(_fake), host="h", generated="t")
    assert "### current and previous (exit 1)" in text
    assert "````text\na line with ``` in it\n````" in text
    assert "`readlink /opt/choiros/current /opt/choiros/previous`" in text


def test_every_probe_only_reads() -> None:
    for section in SECTIONS:
        for probe in section.probes:
            assert probe.argv[0] in READ_ONLY, probe
            if probe.argv[0] == "systemctl":
                assert probe.argv[1] in ("list-units", "--failed", "list-timers"), probe
            if probe.argv[0] == "ufw" or probe.argv[0] == "fail2ban-client":
                assert probe.argv[1] == "status", probe


def test_the_ssh_runner_runs_every_probe_through_sudo_and_the_host_program_at_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One SSH round trip: ``sudo -n -- python3 -c HOST_PROGRAM ...``, which here runs for
    real on this machine in place of the host (ssh's part is left out)."""
    seen: list[list[str]] = []
    real_run = subprocess.run
    log = tmp_path / "a b.log"
    log.write_text("one\ntwo\n")

    def fake_ssh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        remote = shlex.split(argv[-1])
        assert remote[:3] == ["sudo", "-n", "--"]
        return real_run(remote[3:], **kw)

    monkeypatch.setattr(diagnose.subprocess, "run", fake_ssh)
    config = tmp_path / "ssh_config"
    config.write_text("")
    run = diagnose.ssh_runner(HostAccess(url="ssh://admin@10.0.0.1", ssh_config=config))
    tail, missing = run([Probe("x", ("tail", "-n", "1", str(log))),
                         Probe("y", ("ls", str(tmp_path / "nothing")))])
    assert (tail.exit_code, tail.output) == (0, "two\n")
    assert missing.exit_code == 2 and "No such file" in missing.output  # stderr merged
    assert len(seen) == 1
    assert seen[0][:3] == ["ssh", "-F", str(config)] and "admin@10.0.0.1" in seen[0]
    assert shlex.split(seen[0][-1])[3:6] == ["python3", "-c", HOST_PROGRAM]


def test_a_failed_round_trip_gives_every_probe_the_reason(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(diagnose.subprocess, "run", lambda argv, **kw: (
        subprocess.CompletedProcess(argv, 1, "", "sudo: a password is required")))
    run = diagnose.ssh_runner(HostAccess(url="ssh://admin@10.0.0.1"))
    results = run([Probe("x", ("uptime",)), Probe("y", ("free", "-m"))])
    assert [r.exit_code for r in results] == [255, 255]
    assert all("a password is required" in r.output for r in results)


@pytest.mark.parametrize(("out", "says"), [
    ("missing/diagnose.md", "does not exist"),
    (".", "is a directory"),
])
def test_a_bad_out_path_is_refused_before_anything_is_collected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, says: str) -> None:
    contacted: list[object] = []
    monkeypatch.setattr(diagnose_cmd, "check_reachable", contacted.append)
    monkeypatch.setattr(diagnose_cmd, "collect", contacted.append)
    code = diagnose_cmd.execute(HostAccess("ssh://admin@10.213.9.2", ssh_config=tmp_path / "c"),
                                tmp_path / out)
    assert code == 2 and contacted == []
    result = CliRunner().invoke(app, ["diagnose", "--host", "ssh://admin@10.213.9.2",
                                      "--out", str(tmp_path / out)])
    assert result.exit_code == 2 and says in result.output and "Try:" in result.output
