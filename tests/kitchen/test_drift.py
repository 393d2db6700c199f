"""`choiros-infra drift` against a real ChoirOS host: a clean kitchen host is exit 0 and says the
cloud was not checked; a stopped service, a changed file mode and a hand-edited managed file are
exit 1 with each item named (host part by runbook and title, docs part by file:line). One host
(``dr-<hex>``, from a throwaway copy of the example stack) for the module, destroyed after.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_kit import stack_host

from choiros_infra.kitchen_stack import remove_stack_objects, throwaway_stack
from choiros_infra.verify import PROJECT_ROOT
from infra.config import load_stack_file
from kitchen import cloud, lifecycle
from kitchen.state import HostState

pytestmark = pytest.mark.kitchen

CLI = PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"
EDITED = "/etc/fail2ban/jail.local"  # fail2ban is not reloaded: the edit is only drift
CHMODDED = "/etc/apt/apt.conf.d/20auto-upgrades"  # rendered 0644
STOPPED = "choiros-backend"


@pytest.fixture(scope="module")
def drift_stack(kitchen_cloud: cloud.CloudInfo,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = throwaway_stack(PROJECT_ROOT / "Pulumi.example.yaml",
                           tmp_path_factory.mktemp("drift-stack"), prefix="dr")
    try:
        yield path
    finally:
        remove_stack_objects(load_stack_file(path))


@pytest.fixture(scope="module")
def host(drift_stack: Path) -> Iterator[HostState]:
    with stack_host(f"dr-{secrets.token_hex(2)}", drift_stack) as host:
        yield host


def on_host(host: HostState, *argv: str) -> None:
    result = lifecycle.exec_in(host.name, list(argv))
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"


def drift(host: HostState, stack_file: Path, out: Path,
          *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "drift", "--stack-file", str(stack_file), "--target", "kitchen",
         "--host", f"ssh://{host.ssh_user}@{host.address}", "--ssh-key", host.ssh_key,
         "--known-hosts", host.known_hosts, "--report", str(out / "drift.md"),
         "--junit", str(out / "drift.xml"), *extra],
        capture_output=True, text=True, check=False, timeout=300)


def not_checked_reason() -> str:
    """A kitchen stack has no cloud part, whether or not a Pulumi CLI is installed."""
    return "target kitchen has no cloud stack"


def test_a_clean_host_is_exit_0_and_says_cloud_was_not_checked(
        host: HostState, drift_stack: Path, tmp_path: Path) -> None:
    result = drift(host, drift_stack, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"cloud: not checked ({not_checked_reason()})" in result.stdout
    assert "host: no-drift (all " in result.stdout
    assert "docs: no-drift (all " in result.stdout
    report = (tmp_path / "drift.md").read_text()
    assert "not a finding of no drift" in report
    assert "**no drift found in what was checked**" in report


def test_a_stopped_service_a_mode_and_an_edit_are_exit_1_each_named(
        host: HostState, drift_stack: Path, tmp_path: Path) -> None:
    on_host(host, "cp", "-a", EDITED, f"{EDITED}.drift-backup")
    try:
        on_host(host, "sh", "-c", f"echo '# edited by hand' >> {EDITED}")
        on_host(host, "chmod", "0600", CHMODDED)
        on_host(host, "systemctl", "stop", STOPPED)
        result = drift(host, drift_stack, tmp_path, "--json")
    finally:
        on_host(host, "mv", f"{EDITED}.drift-backup", EDITED)
        on_host(host, "chmod", "0644", CHMODDED)
        on_host(host, "systemctl", "start", STOPPED)
        end = time.monotonic() + 60
        while lifecycle.exec_in(host.name, ["curl", "-fsS", "http://127.0.0.1:8080/health"]
                                ).returncode != 0:
            assert time.monotonic() < end, "the backend did not come back"
            time.sleep(0.5)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(result.stdout)  # --json: stdout holds only the result
    assert data["exit_code"] == 1
    assert data["cloud"] == {"checked": False, "outcome": "not-checked",
                             "reason": not_checked_reason(), "resources": [],
                             "change_summary": {}}
    assert data["host"]["outcome"] == "drift"
    host_items = {(i["title"], i["message"]) for i in data["host"]["items"]}
    titles = {title for title, _ in host_items}
    assert f"test_managed_file[{EDITED}]" in titles
    assert f"test_managed_file[{CHMODDED}]" in titles
    assert f"test_service_is_enabled_and_running[{STOPPED}.service]" in titles
    messages = " | ".join(message for _, message in host_items)
    assert f"{EDITED}: content changed (sha256" in messages
    assert f"{CHMODDED}: mode 0600, rendered 0644" in messages
    assert all(i["runbook"] for i in data["host"]["items"])
    assert data["docs"]["outcome"] == "drift"
    statements = {(d["statement"], d["message"]) for d in data["docs"]["items"]}
    assert (f"service {STOPPED}: enabled, running",
            f"service {STOPPED}: expected running, observed inactive") in statements
    for doc in data["docs"]["items"]:
        assert doc["file"].startswith("docs/runbooks/") and doc["line"] > 0
        assert (PROJECT_ROOT / doc["file"]).is_file()
    report = (tmp_path / "drift.md").read_text()
    assert "**DRIFT FOUND**" in report
    assert f"`test_managed_file[{CHMODDED}]`" in report


def test_the_host_is_clean_again(host: HostState, drift_stack: Path, tmp_path: Path) -> None:
    result = drift(host, drift_stack, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
