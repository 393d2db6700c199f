"""The kitchen's pure parts, without root or hosts: names, image keys, seeds, state files,
the nspawn command line and error texts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kitchen import container, image, network, seed
from kitchen.errors import ConvergeError, UsageError
from kitchen.paths import validate_name
from kitchen.processes import cmdline, poll_until
from kitchen.state import PUBLIC_KEYS, HostState

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["default", "a", "dev-2", "x" * 32])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Default", "2dev", "dev-", "a_b", "x" * 33, "../etc"])
def test_invalid_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_name(name)
    assert caught.value.exit_code == 2
    assert caught.value.fix


def test_image_key_is_stable_and_follows_the_recipe() -> None:
    assert image.image_key() == image.image_key()
    assert image.image_key().startswith("bookworm-")
    more = (*image.IMAGE_PACKAGES, "curl")
    assert image.image_key(packages=more) != image.image_key()
    assert image.image_key(packages=tuple(reversed(tuple(image.IMAGE_PACKAGES)))) == \
        image.image_key()


def test_image_packages_are_the_cloud_image_set_plus_what_cloud_init_needs() -> None:
    required = {"systemd", "systemd-sysv", "cloud-init", "openssh-server", "python3", "sudo",
                "ca-certificates"}
    assert required <= set(image.IMAGE_PACKAGES)
    assert all(image.IMAGE_PACKAGES.values())  # every package says why it is there


def test_meta_data_carries_instance_hostname_and_public_key() -> None:
    data = json.loads(seed.meta_data("i-kitchen-x-1", "choiros-x", "ssh-ed25519 AAAA k"))
    assert data == {"instance-id": "i-kitchen-x-1", "local-hostname": "choiros-x",
                    "public-keys": ["ssh-ed25519 AAAA k"]}
    assert "127.0.1.1\tchoiros-x" in seed.etc_hosts("choiros-x")


def test_host_network_blocks_do_not_overlap() -> None:
    a, b = network.HostNetwork("a", 1), network.HostNetwork("b", 2)
    assert (a.gateway, a.guest_address, a.host_interface) == ("10.213.1.1", "10.213.1.2", "chk-1")
    assert b.guest_address == "10.213.2.2"
    assert network.CLOUD_ADDRESS == "10.213.0.1"  # fixed: user-data depends on it
    assert a.netns == "choiros-a"


def test_state_round_trips_and_public_view_has_the_status_keys() -> None:
    state = HostState(name="x", number=3, state="ready", address="10.213.3.2",
                      ssh_user="admin", ssh_key="/k", ssh_port=22, pids={"nspawn": 10})
    again = HostState.from_json(state.to_json())
    assert again == state
    assert tuple(state.public()) == PUBLIC_KEYS


def test_nspawn_runs_detached_in_the_prepared_netns() -> None:
    argv = container.nspawn_argv("choiros-x", Path("/r"), Path("/run/netns/choiros-x"))
    for flag in ("--boot", "--register=no", "--keep-unit", "--directory=/r",
                 "--network-namespace-path=/run/netns/choiros-x", "--machine=choiros-x",
                 "--capability=CAP_NET_ADMIN,CAP_NET_RAW"):
        assert flag in argv
    assert container.is_nspawn_for("choiros-x", argv)
    assert not container.is_nspawn_for("choiros-y", argv)


def test_converge_error_shows_status_units_log_and_fix() -> None:
    error = ConvergeError("kitchen 'x' did not converge", "ssh in", cloud_init_status="error",
                          status_report="....\nstatus: error\ndetail:\n('scripts-user', x)",
                          log_excerpt="boom\n", failed_units=["cloud-final.service"])
    text = str(error)
    assert "cloud-init status: error" in text
    assert "('scripts-user', x)" in text
    assert "...." not in text
    assert "cloud-final.service" in text
    assert "boom" in text
    assert text.endswith("Try: ssh in")
    assert error.exit_code == 1


def test_a_cloud_daemon_from_another_interpreter_is_not_used(tmp_path: Path) -> None:
    """A moto or metadata service started by another checkout's environment (or one since
    deleted) runs other code: the kitchen replaces it instead of using it."""
    import sys

    from kitchen import cloud

    other = tmp_path / "python3"
    other.symlink_to(sys.executable)
    processes = {}
    for name, interpreter in (("ours", sys.executable), ("other", str(other))):
        processes[name] = subprocess.Popen(
            [interpreter, "-c", "import time; time.sleep(60)", cloud.MOTO_MODULE,
             cloud.CLOUD_ADDRESS])
    try:
        assert poll_until(lambda: all(cloud._is_moto(cmdline(p.pid))
                                      for p in processes.values()), 10)
        assert cloud._ours(processes["ours"].pid, cloud._is_moto)
        assert not cloud._ours(processes["other"].pid, cloud._is_moto)
        assert not cloud._ours(processes["ours"].pid, cloud._is_metadata)
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
