"""The ssh_config a client reaches a ChoirOS host with: one renderer for every client.

verify, drift and diagnose (``choiros_infra.host_access``) and the kitchen's own per-host file
(``kitchen.ssh_access``, read by ``kitchen ssh`` and testinfra) write their ssh_config here, so
they log in the same way: non-interactive (BatchMode), only the given key offered, the host key
checked strictly against a known_hosts file (or, for a host met for the first time, accepted
once and then pinned), and one shared connection (ControlMaster) that later commands reuse.
It sits beside the host's sshd configuration because both sides must agree on how a login
looks.
"""

from __future__ import annotations

from pathlib import Path

CONTROL_PERSIST = "120s"


def ssh_config_text(*, host: str = "*", user: str | None = None, port: int | None = None,
                    identity: Path | str | None = None, known_hosts: Path | str | None = None,
                    control_dir: Path | None = None, connect_timeout: int | None = None,
                    keepalive_seconds: int | None = None) -> str:
    """An ssh_config with one ``Host`` block.

    ``known_hosts`` None: ``StrictHostKeyChecking accept-new`` against the user's own file.
    ``control_dir`` set: one shared connection whose socket lives there (keep the path short:
    a Unix socket path may not exceed 108 bytes); None: a new connection per command."""
    lines = [f"Host {host}"]
    if user is not None:
        lines.append(f"    User {user}")
    if port is not None:
        lines.append(f"    Port {port}")
    lines += ["    BatchMode yes", "    LogLevel ERROR"]
    if connect_timeout is not None:
        lines.append(f"    ConnectTimeout {connect_timeout}")
    if keepalive_seconds is not None:
        lines.append(f"    ServerAliveInterval {keepalive_seconds}")
    if identity is not None:
        lines += [f"    IdentityFile {identity}", "    IdentitiesOnly yes"]
    if known_hosts is not None:
        lines += [f"    UserKnownHostsFile {known_hosts}", "    StrictHostKeyChecking yes"]
    else:
        lines.append("    StrictHostKeyChecking accept-new")
    if control_dir is not None:
        lines += ["    ControlMaster auto", f"    ControlPath {control_dir}/%C",
                  f"    ControlPersist {CONTROL_PERSIST}"]
    else:
        lines += ["    ControlMaster no", "    ControlPath none"]
    return "\n".join(lines) + "\n"
