"""One host-access layer: every command that reaches a host (verify, drift, diagnose, deploy,
rollback) checks the same options with the same words before it does anything, and opens the
connection the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from choiros_infra.cli import app
from choiros_infra.host_access import (
    HostAccess,
    UsageProblem,
    access_from_options,
    check_access_options,
    check_output_dirs,
    open_access,
)

pytestmark = pytest.mark.unit

STACK = ["--stack-file", "Pulumi.example.yaml"]
HOST = ["--host", "ssh://admin@203.0.113.10"]
# Each command reaching a host, with the arguments it needs besides the access options.
COMMANDS = {
    "verify": ["verify", *STACK, *HOST, "--account-id", "123456789012"],
    "drift": ["drift", *STACK, *HOST, "--account-id", "123456789012"],
    "diagnose": ["diagnose", *STACK, *HOST],
    "deploy": ["deploy", "1.0.0", *STACK, *HOST, "--account-id", "123456789012"],
    "rollback": ["rollback", *STACK, *HOST, "--account-id", "123456789012"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_key_file_is_refused_in_the_same_words_everywhere(command: str) -> None:
    result = CliRunner().invoke(app, [*COMMANDS[command], "--ssh-key", "/no/such/key"])
    assert result.exit_code == 2, result.output
    assert "Error: --ssh-key /no/such/key is not a readable file" in result.output
    assert "Try: give --ssh-key the path of an existing file" in result.output


@pytest.mark.parametrize("command", ["verify", "diagnose"])
def test_an_ssh_config_excludes_a_key_everywhere(command: str, tmp_path: Path) -> None:
    key, config = tmp_path / "key", tmp_path / "ssh_config"
    key.write_text("k")
    config.write_text("Host *\n")
    result = CliRunner().invoke(app, [*COMMANDS[command], "--ssh-key", str(key),
                                      "--ssh-config", str(config)])
    assert result.exit_code == 2, result.output
    assert "Error: --ssh-key and --ssh-config exclude each other" in result.output


def test_the_options_are_checked_in_order(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n")
    with pytest.raises(UsageProblem, match="--known-hosts and --ssh-config exclude"):
        check_access_options(ssh_config=config, known_hosts=tmp_path / "kh")
    with pytest.raises(UsageProblem, match=r"--known-hosts .*/kh is not a readable file"):
        check_access_options(known_hosts=tmp_path / "kh")
    with pytest.raises(UsageProblem, match=r"--report .*: directory .*/none does not exist"):
        check_output_dirs((tmp_path / "j.xml", "--junit"), (tmp_path / "none" / "r.md",
                                                              "--report"))
    with pytest.raises(UsageProblem, match="ssh://"):
        access_from_options("admin@203.0.113.10")


def test_access_from_options_resolves_the_files(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_text("k")
    monkeypatch.chdir(tmp_path)
    access = access_from_options("ssh://admin@203.0.113.10:2222", ssh_key=Path("key"))
    assert access == HostAccess(url="ssh://admin@203.0.113.10:2222", ssh_key=tmp_path / "key")


def test_open_access_gives_a_private_multiplexing_config_and_removes_it(
        tmp_path: Path) -> None:
    key, known = tmp_path / "key", tmp_path / "known_hosts"
    key.write_text("k")
    known.write_text("")
    with open_access(HostAccess("ssh://admin@203.0.113.10", ssh_key=key), known) as access:
        assert access.ssh_config is not None and access.ssh_key is None
        text = access.ssh_config.read_text()
        assert f"IdentityFile {key}" in text and "ControlMaster" in text
        assert f"UserKnownHostsFile {known}" in text
        workdir = access.ssh_config.parent
        assert workdir.stat().st_mode & 0o077 == 0
    assert not workdir.exists()
    given = HostAccess("ssh://admin@203.0.113.10", ssh_config=tmp_path / "own")
    with open_access(given) as access:
        assert access is given
