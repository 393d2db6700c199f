"""A ChoirOS host built from the example stack: it converges, verifies, and keeps its data and
its state across a reboot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import host_name

from choiros_infra import kitchen_site
from choiros_infra.host_access import HostAccess
from choiros_infra.kitchen_stack import stack_up
from choiros_infra.verify import run_suites
from kitchen import lifecycle
from kitchen.ssh_access import ssh_config
from kitchen.state import HostState

pytestmark = pytest.mark.kitchen

@pytest.fixture(scope="module")
def choiros_host(stack_file: Path) -> Iterator[HostState]:
    name = host_name("choiros")
    try:
        yield stack_up(name, stack_file)
    finally:
        lifecycle.destroy(name)


def api(host: HostState, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return kitchen_site.host_call(host, method, path, body, 10)


def verify(host: HostState, stack_file: Path) -> int:
    access = HostAccess(url=f"ssh://{host.ssh_user}@{host.address}", ssh_config=ssh_config(host))
    return run_suites(access, stack_file, "kitchen", ("-q",))


def test_example_stack_converges_and_verifies(choiros_host: HostState, stack_file: Path) -> None:
    assert choiros_host.state == "ready"
    assert verify(choiros_host, stack_file) == 0


def test_secrets_reach_the_backend_env_file_from_the_kitchen_cloud(
        choiros_host: HostState) -> None:
    env = lifecycle.exec_in(choiros_host.name, ["cat", "/etc/choiros/backend.env"])
    assert 'OPENAI_API_KEY="kitchen-test-value-for-OPENAI_API_KEY"' in env.stdout


@pytest.mark.faults  # a reboot is one of the faults the host must survive
def test_reboot_keeps_data_and_state(choiros_host: HostState, stack_file: Path) -> None:
    for n in range(3):
        assert "id" in api(choiros_host, "POST", "/api/events", {"n": n})
    before = api(choiros_host, "GET", "/api/events/count")["count"]
    after_reboot = lifecycle.reboot(choiros_host.name)
    assert after_reboot.state == "ready"
    assert lifecycle.exec_in(choiros_host.name, ["systemctl", "is-system-running", "--wait"]
                             ).stdout.strip() == "running"
    assert api(choiros_host, "GET", "/api/events/count")["count"] == before
    assert verify(after_reboot, stack_file) == 0
