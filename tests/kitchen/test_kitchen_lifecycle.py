"""Several kitchens at once, failed and interrupted ups, and what destroy leaves behind
(nothing)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from guest_kit import MakeHost, host_name, user_data
from kitchen_checks import traces_of
from typer.testing import CliRunner

from choiros_infra.kitchen_cmd import kitchen_app
from kitchen import cloud, lifecycle
from kitchen.errors import ConvergeError, UsageError
from kitchen.lifecycle import PhaseEvent
from kitchen.paths import HostPaths
from kitchen.ssh_access import ssh_argv

pytestmark = pytest.mark.kitchen


def test_two_kitchens_run_at_once_on_their_own_addresses(
        kitchen_cloud: cloud.CloudInfo) -> None:
    names = [host_name("pair"), host_name("pair")]
    data = user_data(kitchen_cloud, packages=False)
    try:
        with ThreadPoolExecutor(2) as pool:
            hosts = list(pool.map(lambda name: lifecycle.up(name, data), names))
        assert len({h.address for h in hosts}) == 2
        assert len({h.number for h in hosts}) == 2
        for host in hosts:
            assert lifecycle.status(host.name).state == "ready"
            own = lifecycle.exec_in(host.name, ["hostname", "-I"]).stdout.split()
            assert own == [host.address]
            result = subprocess.run(ssh_argv(host, ["hostname"]), capture_output=True,
                                    text=True, timeout=30, check=False)
            assert result.stdout.strip() == host.hostname
        # No forwarding between hosts: each reaches the cloud, not the other host.
        probe = ("import socket, sys\n"
                 "try:\n"
                 "    socket.create_connection((sys.argv[1], 22), 2); print('reached')\n"
                 "except OSError:\n"
                 "    print('isolated')\n")
        out = lifecycle.exec_in(hosts[0].name, ["python3", "-c", probe, hosts[1].address])
        assert out.stdout.strip() == "isolated"
    finally:
        for name in names:
            lifecycle.destroy(name)


def test_failed_converge_raises_with_the_log_and_destroy_leaves_nothing(
        kitchen_cloud: cloud.CloudInfo) -> None:
    name = host_name("fail")
    data = user_data(kitchen_cloud, packages=False,
                     runcmd="echo kitchen-test-about-to-fail; exit 3")
    try:
        with pytest.raises(ConvergeError) as caught:
            lifecycle.up(name, data)
        error = caught.value
        assert error.cloud_init_status == "error"
        assert "kitchen-test-about-to-fail" in error.log_excerpt
        assert "cloud-final.service" in error.failed_units
        assert "Try:" in str(error)
        kept = lifecycle.status(name)  # kept for inspection, reachable over SSH
        assert kept.state == "failed"
        look = subprocess.run(ssh_argv(kept, ["sudo", "-n", "cloud-init", "status"]),
                              capture_output=True, text=True, timeout=30, check=False)
        assert "status: error" in look.stdout, look.stderr
        number, pids = kept.number, dict(kept.pids)
        assert traces_of(name, number, pids)  # the check can see a live host
    finally:
        assert lifecycle.destroy(name)
    assert traces_of(name, number, pids) == []
    assert lifecycle.destroy(name) is False  # idempotent
    assert cloud.cloud_running()  # destroying a host leaves the shared cloud alone


def test_interrupted_up_is_rolled_back(kitchen_cloud: cloud.CloudInfo) -> None:
    name = host_name("intr")
    seen: dict[str, object] = {}

    def interrupt_after_boot(event: PhaseEvent) -> None:
        if event.phase == "boot" and event.status == "done":
            state = lifecycle.status(name)
            seen.update(number=state.number, pids=dict(state.pids))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lifecycle.up(name, user_data(kitchen_cloud, packages=False),
                     progress=interrupt_after_boot)
    assert seen["pids"]
    assert traces_of(name, seen["number"], seen["pids"]) == []  # type: ignore[arg-type]


def test_stale_half_created_kitchen_is_reported_then_destroyable(
        kitchen_cloud: cloud.CloudInfo) -> None:
    name = host_name("stale")
    HostPaths(name).rootfs.mkdir(parents=True)  # as if a crash happened mid-copy
    try:
        with pytest.raises(UsageError) as caught:
            lifecycle.up(name, b"#cloud-config\n")
        assert "stale" in caught.value.message
        assert f"destroy --name {name}" in (caught.value.fix or "")
    finally:
        assert lifecycle.destroy(name)
    assert not HostPaths(name).root.exists()


def test_cli_reports_errors_with_a_fix_and_exit_code_2(kitchen_cloud: cloud.CloudInfo) -> None:
    runner = CliRunner()
    unknown = runner.invoke(kitchen_app, ["status", "--name", "kt-never-made"])
    assert unknown.exit_code == 2
    assert "Error: no kitchen named" in unknown.output
    assert "Try:" in unknown.output
    both = runner.invoke(kitchen_app, ["destroy", "--name", "x", "--all"])
    assert both.exit_code == 2
    nothing = runner.invoke(kitchen_app, ["destroy", "--name", "kt-never-made"])
    assert nothing.exit_code == 0


def test_cli_ssh_runs_a_command_and_passes_its_status(
        make_host: MakeHost, kitchen_cloud: cloud.CloudInfo) -> None:
    host = make_host("cli", user_data(kitchen_cloud, packages=False))
    result = CliRunner().invoke(kitchen_app, ["ssh", "--name", host.name, "--", "cat",
                                              "/etc/choiros-kitchen-test"])
    assert result.exit_code == 0
    failed = CliRunner().invoke(kitchen_app, ["ssh", "--name", host.name, "--", "exit", "7"])
    assert failed.exit_code == 7
