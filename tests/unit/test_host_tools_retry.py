"""choiros-retry: first-boot steps retried within a deadline, then one clear FAILED line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sample_stack import stack_config

from infra.user_data import render_for
from provisioning.render import CONVERGE_SCRIPT, RETRY
from provisioning.target import AWS

pytestmark = pytest.mark.unit

RETRY_TOOL = Path(__file__).resolve().parents[2] / "provisioning" / "host_tools" / "choiros-retry"


def flaky(tmp_path: Path, failures: int, status: int = 3) -> list[str]:
    """A command that fails ``failures`` times with ``status``, then succeeds."""
    counter = tmp_path / "attempts"
    script = tmp_path / "flaky"
    script.write_text(f"""#!/bin/sh
n=$(cat {counter} 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > {counter}
[ "$n" -gt {failures} ] || {{ echo "AccessDenied (attempt $n)" >&2; exit {status}; }}
echo "fetched"
""")
    script.chmod(0o755)
    return [str(script)]


def retry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RETRY_TOOL), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def attempts(tmp_path: Path) -> int:
    return int((tmp_path / "attempts").read_text())


def test_a_step_that_fails_a_few_times_then_succeeds_converges(tmp_path: Path) -> None:
    done = retry("--every", "0", "fetching the artifacts", "--", *flaky(tmp_path, 3))
    assert done.returncode == 0, done.stderr
    assert attempts(tmp_path) == 4
    assert done.stderr.count("choiros-retry: fetching the artifacts failed (exit 3") == 3
    assert "succeeded at attempt 4" in done.stdout and "fetched" in done.stdout


def test_a_step_that_keeps_failing_gives_up_at_the_deadline_with_one_clear_line(
        tmp_path: Path) -> None:
    done = retry("--for", "2", "--every", "1", "reading the SSM parameters", "--",
                 *flaky(tmp_path, 1000))
    assert done.returncode == 3
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("choiros-retry: FAILED: reading the SSM parameters still failing "
                           f"after {attempts(tmp_path)} attempts in "), last
    assert last.endswith("(last exit 3); fix the cause above, then run: sudo choiros-converge")
    assert 2 <= attempts(tmp_path) <= 4


@pytest.mark.parametrize("status", [2, 4])
def test_a_final_status_is_not_retried(tmp_path: Path, status: int) -> None:
    done = retry("--every", "0", "--final", "2 4", "fetching the artifacts", "--",
                 *flaky(tmp_path, 5, status))
    assert done.returncode == status
    assert attempts(tmp_path) == 1
    assert "not retried" in done.stderr.splitlines()[-1]


def test_usage_errors_exit_2() -> None:
    assert retry("no command").returncode == 2
    assert retry("--bogus", "x", "--", "true").returncode == 2


def test_the_converge_retries_the_fetch_and_the_secrets_unit_retries_ssm() -> None:
    rendering = render_for(stack_config(), AWS, "a", "b")
    converge = rendering.file(CONVERGE_SCRIPT).content
    assert f'{RETRY} --final "2 4" "fetching the artifacts" -- ' in converge
    assert "trap " in converge and "then run: sudo choiros-converge" in converge
    unit = rendering.file("/etc/systemd/system/choiros-secrets.service").content
    assert f'ExecStart={RETRY} "reading the SSM parameters" -- /usr/local/sbin/choiros-secrets' \
        in unit
    assert rendering.file(RETRY).delivery == "inline"
    assert rendering.file(RETRY).content == RETRY_TOOL.read_text()


def test_the_converge_says_it_failed_and_how_to_resume(tmp_path: Path) -> None:
    """The trap's last line, exercised on the converge's own preamble."""
    converge = render_for(stack_config(), AWS, "a", "b").file(CONVERGE_SCRIPT).content
    preamble = converge.split('echo "choiros-converge: artifacts"')[0]
    script = tmp_path / "converge.sh"
    script.write_text(preamble + "false\n")
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "choiros-converge: FAILED (exit 1); fix the cause above, then run: sudo choiros-converge")
