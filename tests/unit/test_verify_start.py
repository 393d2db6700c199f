"""verify starts pytest while it proves the host reachable (choiros_infra/verify.py,
``run_checked``): pytest imports and configures meanwhile, and runs no check before the proof;
an unreachable host stops pytest without a line of output, and the reachability error is
what the caller sees. Real pytest runs, on a small suite that reads no host."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from choiros_infra.host_access import HostAccess, UsageProblem
from choiros_infra.verify import PROJECT_ROOT, VerifyRun, run_checked
from infra.config import load_stack_file

pytestmark = pytest.mark.unit

STACK_FILE = PROJECT_ROOT / "Pulumi.example.yaml"
# The options verify passes that tests/infra's conftest registers; the runbook plugin
# registers the rest.
CONFTEST = '''
pytest_plugins = ["choiros_infra.expect.plugin"]

def pytest_addoption(parser):
    for name in ("--stack-file", "--target", "--account-id", "--connect-timeout"):
        parser.addoption(name)
'''
CHECK = '''
import os, time
from pathlib import Path

def test_runs_after_the_proof():
    Path(os.environ["CHOIROS_TEST_MARKS"], "check").write_text(str(time.time()))
'''


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VerifyRun:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_after_proof.py").write_text(CHECK)
    monkeypatch.setenv("CHOIROS_TEST_MARKS", str(tmp_path))
    # A host nothing answers for: the read-ahead cannot start and says so; no check asks it.
    access = HostAccess(url="ssh://admin@192.0.2.1", ssh_config=tmp_path / "no_ssh_config")
    (tmp_path / "no_ssh_config").write_text("Host *\n  ConnectTimeout 1\n")
    verify_run = VerifyRun.for_stack(access, STACK_FILE, "kitchen", load_stack_file(STACK_FILE),
                                     workers=0)
    return replace(verify_run, paths=(suite,))


def pytest_started() -> bool:
    """Whether a pytest waiting for verify's word runs now."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"--host-ready-fd=" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def test_pytest_starts_before_the_proof_and_checks_only_after_it(
        run: VerifyRun, tmp_path: Path) -> None:
    seen: list[bool] = []

    def reachable() -> None:
        deadline = time.monotonic() + 20
        while not pytest_started() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(pytest_started())
        time.sleep(0.5)  # pytest has imported meanwhile, and waits
        (tmp_path / "proven").write_text(str(time.time()))

    assert run_checked(run, reachable) == 0
    assert seen == [True], "pytest was running while the host was proven"
    assert float((tmp_path / "check").read_text()) > float((tmp_path / "proven").read_text())


def test_an_unreachable_host_stops_pytest_without_output(
        run: VerifyRun, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def unreachable() -> None:
        deadline = time.monotonic() + 20
        while not pytest_started() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise UsageProblem("no answer from 192.0.2.1 within 30s", "check the address")

    with pytest.raises(UsageProblem, match=r"no answer from 192\.0\.2\.1"):
        run_checked(run, unreachable)
    assert not pytest_started()
    assert not (tmp_path / "check").exists()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
