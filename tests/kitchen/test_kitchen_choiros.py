"""A ChoirOS host built from the example stack: it converges, verifies, and keeps its data and
its state across a reboot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_kit import api, host_name, stack_host

from choiros_infra import kitchen_site
from choiros_infra.host_access import HostAccess
from choiros_infra.kitchen_stack import remove_stack_objects, stack_up, throwaway_stack
from choiros_infra.targets import kitchen
from choiros_infra.verify import PROJECT_ROOT, run_suites
from infra.config import load_stack_file
from kitchen import lifecycle
from kitchen.ssh_access import ssh_config
from kitchen.state import HostState

pytestmark = pytest.mark.kitchen

@pytest.fixture(scope="module")
def choiros_host(stack_file: Path) -> Iterator[HostState]:
    with stack_host(host_name("choiros"), stack_file) as host:
        yield host


def verify(host: HostState, stack_file: Path) -> int:
    access = HostAccess(url=f"ssh://{host.ssh_user}@{host.address}", ssh_config=ssh_config(host))
    return run_suites(access, stack_file, "kitchen", ("-q",))


def test_example_stack_converges_and_verifies(choiros_host: HostState, stack_file: Path) -> None:
    """The example stack's own TLS mode, off: the AWS default, plain HTTP on port 80."""
    assert choiros_host.state == "ready"
    assert load_stack_file(stack_file).tls_mode == "off"
    assert api(choiros_host, "GET", "/health")["status"] == "healthy"  # http://ADDRESS/health
    assert verify(choiros_host, stack_file) == 0


@pytest.fixture(scope="module")
def internal_tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = throwaway_stack(PROJECT_ROOT / "Pulumi.example.yaml",
                           tmp_path_factory.mktemp("internal"), prefix="kt")
    path.write_text(path.read_text() + "\n  choiros:tls_mode: internal\n")
    try:
        yield path
    finally:
        remove_stack_objects(load_stack_file(path))


def test_a_stack_with_internal_tls_converges_and_verifies(internal_tls_stack: Path) -> None:
    """tls_mode internal: HTTPS on 443 with Caddy's own CA, port 80 redirects to it."""
    assert load_stack_file(internal_tls_stack).tls_mode == "internal"
    name = host_name("tls")
    try:
        st = stack_up(name, internal_tls_stack)
        assert kitchen_site.site_url(load_stack_file(internal_tls_stack), kitchen(), st.address,
                                     "/").startswith("https://")
        assert api(st, "GET", "/health")["status"] == "healthy"
        redirect = lifecycle.exec_in(name, ["curl", "-s", "-o", "/dev/null", "-w",
                                            "%{http_code} %{redirect_url}",
                                            "http://127.0.0.1/health"]).stdout
        assert redirect == "308 https://127.0.0.1/health", redirect
        assert verify(st, internal_tls_stack) == 0
    finally:
        lifecycle.destroy(name)


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
