"""provisioning/ssh_client.py: the one ssh_config renderer, as verify and the kitchen use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from choiros_infra.host_access import write_ssh_config
from kitchen import ssh_access
from kitchen.state import HostState
from provisioning.ssh_client import ssh_config_text

pytestmark = pytest.mark.unit


def test_tuned_ssh_config_shares_one_connection(tmp_path: Path) -> None:
    text = ssh_config_text(identity=Path("/k/id"), control_dir=tmp_path)
    assert f"ControlPath {tmp_path}/%C" in text
    assert "ControlMaster auto" in text and "ControlPersist" in text
    assert "IdentityFile /k/id" in text and "IdentitiesOnly yes" in text
    assert "BatchMode yes" in text and "StrictHostKeyChecking accept-new" in text


def test_naive_ssh_config_connects_per_command_and_known_hosts_is_strict() -> None:
    text = ssh_config_text(control_dir=None, known_hosts=Path("/kh"))
    assert "ControlMaster no" in text and "ControlPath none" in text
    assert "UserKnownHostsFile /kh" in text and "StrictHostKeyChecking yes" in text
    assert "IdentityFile" not in text


def test_verify_writes_a_private_multiplexing_config(tmp_path: Path) -> None:
    path = write_ssh_config(tmp_path / "s", ssh_key=Path("/k/id"), known_hosts=Path("/kh"))
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.read_text() == ssh_config_text(
        identity=Path("/k/id"), known_hosts=Path("/kh"), control_dir=tmp_path / "s",
        connect_timeout=10, keepalive_seconds=15)


def test_a_kitchen_host_config_names_the_host_its_user_port_key_and_host_keys() -> None:
    st = HostState(name="k1", number=1, state="ready", address="10.213.1.2", ssh_user="admin",
                   ssh_key="/keys/id", ssh_port=22, known_hosts="/keys/known_hosts")
    text = ssh_access.config_text(st)
    assert text.splitlines()[:3] == ["Host 10.213.1.2", "    User admin", "    Port 22"]
    for line in ("IdentityFile /keys/id", "UserKnownHostsFile /keys/known_hosts",
                 "StrictHostKeyChecking yes", f"ControlPath {ssh_access.CONTROL_DIR}/%C",
                 "ControlMaster auto", "BatchMode yes"):
        assert f"    {line}\n" in text
