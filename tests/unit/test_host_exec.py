"""Commands the host program starts without a shell (choiros_infra/host_exec.py): only those
the shell would merely split into words, and each answers exactly as ``/bin/sh -c`` would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import testinfra

from choiros_infra.host_batch import ReadAhead
from choiros_infra.host_exec import exit_status, simple_command

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("command, expected", [
    ("LC_ALL=C stat -c '%F|%a|%U|%G' -- /etc/caddy/Caddyfile",
     ({"LC_ALL": "C"}, ["stat", "-c", "%F|%a|%U|%G", "--", "/etc/caddy/Caddyfile"])),
    ("systemctl show --property=LoadState,ActiveState -- caddy.service",
     ({}, ["systemctl", "show", "--property=LoadState,ActiveState", "--", "caddy.service"])),
    ("A=1 B='x y' cmd 'it''s' '' a''b",
     ({"A": "1", "B": "x y"}, ["cmd", "its", "", "ab"])),
    ("  /usr/sbin/sshd   -T\t", ({}, ["/usr/sbin/sshd", "-T"])),
    ("curl -w %{http_code} x", None),  # braces: plain to dash, but not in the plain set
])
def test_one_program_with_literal_arguments_runs_without_the_shell(
        command: str, expected: Any) -> None:
    assert simple_command(command) == expected


@pytest.mark.parametrize("command", [
    "ps -o user= -p \"$(systemctl show -p MainPID --value x)\"",  # expansion, double quotes
    "echo $HOME", "ls *.conf", "logrotate -d /etc/x 2>&1", "a && b", "a; b", "a | b",
    "find / ! -type l", "cat ~/x", "printf 'a\\n'", "echo a\\ b", "x # comment",
    "test -L /opt/choiros/current", "true", "cd /tmp", "exec ls", "if", "LC_ALL=C",
    "stat 'unterminated", "", "   ",
])
def test_anything_the_shell_does_more_than_split_goes_to_the_shell(command: str) -> None:
    assert simple_command(command) is None


def test_a_signal_is_reported_as_the_shell_reports_it() -> None:
    assert exit_status(-15) == 143 and exit_status(0) == 0 and exit_status(3) == 3


def test_the_host_program_answers_as_the_shell_would(tmp_path: Path,
                                                     read_ahead: ReadAhead) -> None:
    """The same lines, through the host program and through ``/bin/sh -c``: the same exit
    code and outputs, whether the program ran directly, was missing or was not executable."""
    (tmp_path / "a file").write_text("x\n")
    not_executable = tmp_path / "plain"
    not_executable.write_text("echo no\n")
    commands = [
        f"LC_ALL=C stat -c '%F|%a' -- '{tmp_path}/a file'",
        f"LC_ALL=C stat -c '%F' -- {tmp_path}/absent",
        "choiros-no-such-program --help",
        str(not_executable),
        f"sh -c 'kill -TERM $$' -- {tmp_path}",
        f"readlink -f -- {tmp_path}/absent/x",
    ]
    environment = "LC_ALL=C LANG=C env"  # and through the shell, in the same program:
    assert all(simple_command(c) is not None for c in [*commands, environment])
    host = testinfra.get_host("local://")
    read_ahead.read(host, [*commands, environment, "LC_ALL=C LANG=C exec env"])
    for command in commands:
        answered = host.run(command)
        by_shell = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, check=False)
        assert (answered.rc, answered.stdout, answered.stderr) == (
            by_shell.returncode, by_shell.stdout, by_shell.stderr), command
    direct, by_shell = (set(host.check_output(c).splitlines()) - {f"PWD={os.getcwd()}"}
                        for c in (environment, "LC_ALL=C LANG=C exec env"))
    assert direct == by_shell and {"LC_ALL=C", "LANG=C"} <= direct
