"""The runbook pytest plugin, run in a pytester sandbox laid out like the repository with the
repository's own docs/runbooks/conftest.py: collection needs no host, items are named after
file:line, a bad statement is a collection error at file:line, running without --hosts stops
with a usage error, and failures read `path:line: subject: expected X, observed Y`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
CONFTEST = REPO / "docs" / "runbooks" / "conftest.py"

SECURITY = """\
# Security

The backend runs behind Caddy.

```expect
service choiros-backend: enabled, running
port 8080: closed from outside
```

```text
service not-checked: running
```
"""


@pytest.fixture
def runbooks(pytester: pytest.Pytester) -> Path:
    """docs/runbooks with the real conftest and one runbook, rootdir at the sandbox's top."""
    pytester.makeini("[pytest]\n")
    root = pytester.path / "docs" / "runbooks"
    (root / "30-operations").mkdir(parents=True)
    (root / "conftest.py").write_text(CONFTEST.read_text())
    (root / "30-operations" / "security.md").write_text(SECURITY)
    return root


def test_collect_only_needs_no_host_and_names_items_by_file_and_line(
        pytester: pytest.Pytester, runbooks: Path) -> None:
    result = pytester.runpytest("docs/runbooks", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "docs/runbooks/30-operations/security.md::"
        "30-operations/security.md:6 service choiros-backend: enabled, running",
        "docs/runbooks/30-operations/security.md::"
        "30-operations/security.md:7 port 8080: closed from outside",
        "2 tests collected*",
    ])
    assert "not-checked" not in result.stdout.str()


def test_a_bad_statement_is_a_collection_error_at_file_and_line(
        pytester: pytest.Pytester, runbooks: Path) -> None:
    (runbooks / "30-operations" / "security.md").write_text(
        SECURITY.replace("enabled, running", "enabled, runing"))
    result = pytester.runpytest("docs/runbooks", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "*ERROR collecting docs/runbooks/30-operations/security.md*",
        "docs/runbooks/30-operations/security.md:6: unknown service assertion 'runing' "
        "(did you mean 'running'?)",
        "    service choiros-backend: enabled, runing",
        "    expected one of: enabled, disabled, running, stopped, not running",
    ])
    assert "Traceback" not in result.stdout.str()


def test_running_without_hosts_is_a_usage_error(pytester: pytest.Pytester,
                                                runbooks: Path) -> None:
    result = pytester.runpytest("docs/runbooks")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: runbook expectations check a host: pass testinfra's "
                                 "--hosts*"])
    assert "passed" not in result.stdout.str()


def test_items_pass_and_fail_against_a_host_with_concise_messages(
        pytester: pytest.Pytester, runbooks: Path, tmp_path: Path) -> None:
    conf = tmp_path / "10-choiros.conf"
    conf.write_text("PasswordAuthentication no\n")
    conf.chmod(0o600)
    (runbooks / "30-operations" / "security.md").write_text(f"""\
# Files

```expect
file {conf}: contains "PasswordAuthentication no"
file {conf}: mode 0644, contains "PermitRootLogin no"
command "echo hi": contains hi
```
""")
    result = pytester.runpytest("docs/runbooks", "--hosts=local://")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        f"*30-operations/security.md:5 file {conf}: mode 0644, contains*",
        f"docs/runbooks/30-operations/security.md:5: file {conf}: "
        f"expected mode 0644, observed 0600",
        f"docs/runbooks/30-operations/security.md:5: file {conf}: "
        f'expected contains "PermitRootLogin no", observed "PasswordAuthentication no\\n"',
    ])
    output = result.stdout.str()
    assert "Traceback" not in output and "plugin.py" not in output and "raise " not in output


def test_an_unreachable_host_fails_every_item_with_the_same_connection_error(
        pytester: pytest.Pytester, runbooks: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: the connection is refused at once
    # -rN: no short summary, whose width (and so its repeats of the message) depends on the tty
    result = pytester.runpytest("docs/runbooks", f"--hosts=paramiko://nobody@127.0.0.1:{port}",
                                "-rN")
    result.assert_outcomes(failed=2)
    lines = [line for line in result.stdout.lines
             if line.startswith("could not probe the host: cannot connect")]
    assert len(lines) == 2, result.stdout.str()
    assert f"paramiko://nobody@127.0.0.1:{port}" in lines[0]


def test_several_hosts_are_refused(pytester: pytest.Pytester, runbooks: Path) -> None:
    result = pytester.runpytest("docs/runbooks", "--hosts=local://,local://x")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*runbook expectations check one host at a time*"])


def test_runbook_options_are_offered(pytester: pytest.Pytester, runbooks: Path) -> None:
    result = pytester.runpytest("docs/runbooks", "--help")
    result.stdout.fnmatch_lines(["*--runbook-scheme={https,http}*", "*--runbook-address=ADDR*"])


def test_the_repository_runbooks_collect_without_a_host() -> None:
    """The real docs/runbooks (this grammar's own document included) collect cleanly."""
    from choiros_infra.expect import lint_runbooks, runbook_files

    root = REPO / "docs" / "runbooks"
    assert root / "50-testing" / "expect-grammar.md" in runbook_files(root)
    assert [str(e) for e in lint_runbooks(root)] == []
