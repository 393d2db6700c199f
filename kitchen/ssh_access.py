"""How to reach a kitchen host over SSH: one ssh_config per host, used by every client.

`kitchen ssh`, testinfra (``--ssh-config``) and the verify run all read the same file, so they
log in the same way: the host's own key, its recorded host keys checked strictly, and one
shared connection (ControlMaster) that later commands reuse instead of a new handshake each.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from kitchen.paths import HostPaths
from kitchen.state import HostState
from provisioning.ssh_client import ssh_config_text

# Control sockets live in a short path: a Unix socket path may not exceed 108 bytes, and ssh
# appends a random suffix to it while it sets one up.
CONTROL_DIR = Path("/run/chk-ssh")


def config_text(st: HostState) -> str:
    """The host's ssh_config: its address, user, port, key and recorded host keys."""
    return ssh_config_text(host=st.address, user=st.ssh_user, port=st.ssh_port,
                           identity=st.ssh_key, known_hosts=st.known_hosts,
                           control_dir=CONTROL_DIR)


def ssh_config(st: HostState) -> Path:
    """Write (idempotently) and return the host's ssh_config."""
    root = HostPaths(st.name).root
    CONTROL_DIR.mkdir(mode=0o700, exist_ok=True)
    path = root / "ssh_config"
    text = config_text(st)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def close_connections(st: HostState) -> None:
    """Stop the host's shared SSH connection, so no ssh process outlives the host."""
    config = HostPaths(st.name).root / "ssh_config"
    if config.exists():
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", st.address],
                       capture_output=True, timeout=10, check=False)


def ssh_argv(st: HostState, command: list[str] | tuple[str, ...] = ()) -> list[str]:
    """An ``ssh`` command line into the host as its default user."""
    return ["ssh", "-F", str(ssh_config(st)), f"{st.ssh_user}@{st.address}", *command]
