"""``destroy --all`` removes every kitchen host and stops the kitchen cloud. Runs after every
other test of the session (marker ``last``, ordered by conftest.py's collection hook), and only
when no kitchens other than the tests' own exist and no other xdist worker runs, so it never
takes down a developer's running kitchen or a parallel test's."""

from __future__ import annotations

import os
import subprocess

import pytest
from guest_kit import TEST_PREFIX, host_name, user_data
from kitchen_checks import traces_of
from typer.testing import CliRunner

from choiros_infra.kitchen_cmd import kitchen_app
from kitchen import cloud, lifecycle, state

pytestmark = [pytest.mark.kitchen, pytest.mark.last]


def test_destroy_all_removes_hosts_and_stops_the_cloud(kitchen_cloud: cloud.CloudInfo) -> None:
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.skip("destroy --all would take down hosts of the other xdist workers")
    others = [n for n in state.host_names() if not n.startswith(TEST_PREFIX)]
    if others:
        pytest.skip(f"other kitchens exist ({', '.join(others)}); not destroying them")
    host = lifecycle.up(host_name("all"), user_data(kitchen_cloud, packages=False))
    assert cloud.cloud_running()

    result = CliRunner().invoke(kitchen_app, ["destroy", "--all"])
    assert result.exit_code == 0, result.output

    assert traces_of(host.name, host.number, host.pids) == []
    assert not cloud.cloud_running()
    # Nothing listens on the cloud address, and the address itself is gone. (Connecting
    # would prove nothing: the machine's uplink may accept connections to any address.)
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True,
                               check=True).stdout
    assert f"{cloud.CLOUD_ADDRESS}:" not in listening
    addresses = subprocess.run(["ip", "-br", "address"], capture_output=True, text=True,
                               check=True).stdout
    assert cloud.CLOUD_ADDRESS not in addresses
    assert "chk-" not in addresses
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    assert "choiros-" not in netns
    # Idempotent, and the cloud comes back on demand (then goes again: the tests leave the
    # machine without kitchen daemons).
    assert CliRunner().invoke(kitchen_app, ["destroy", "--all"]).exit_code == 0
    cloud.ensure_cloud()
    assert cloud.cloud_running()
    cloud.stop_cloud()
    assert not cloud.cloud_running()
