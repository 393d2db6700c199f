"""Per-host state, persisted as JSON after every lifecycle step (like Molecule's instance
config), so a later command (status, ssh, reboot, destroy) knows what exists even when the
command that created it crashed or was interrupted halfway.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kitchen.paths import HostPaths, hosts_dir


class HostStatus(StrEnum):
    CREATING = "creating"  # network, rootfs and seed being made
    BOOTING = "booting"  # nspawn started, waiting for systemd as PID 1
    CONVERGING = "converging"  # waiting for cloud-init and systemd to finish
    READY = "ready"  # converged, systemd running, SSH reachable
    FAILED = "failed"  # booted but did not converge; kept for inspection
    REBOOTING = "rebooting"
    STOPPED = "stopped"  # reported only: state says running but the container is gone


# The keys `kitchen status --json` prints; other tools may rely on them.
PUBLIC_KEYS = ("name", "state", "address", "ssh_user", "ssh_key", "ssh_port", "known_hosts",
               "started_at", "instance_id")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class HostState:
    name: str
    number: int
    state: str
    address: str
    ssh_user: str
    ssh_key: str
    ssh_port: int
    started_at: str | None = None
    pids: dict[str, int] = field(default_factory=dict)  # "nspawn" and "init" (guest PID 1)
    machine: str = ""
    hostname: str = ""
    instance_id: str = ""
    # The region of the host's instance record in the kitchen cloud's EC2 (its stack's).
    instance_region: str = ""
    netns: str = ""
    host_interface: str = ""
    guest_interface: str = ""
    gateway: str = ""
    image: str = ""
    rootfs: str = ""
    rootfs_mode: str = ""  # "overlay" (image as lower layer) or "copy"
    known_hosts: str = ""
    console_log: str = ""
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    error: str | None = None
    # Where the host replicates its database (s3://bucket/prefix/), for hosts built from a
    # stack: two live hosts must never replicate into one prefix.
    replica: str = ""
    # The stack file the host was built from: what `kitchen verify` and `replace` default to.
    stack_file: str = ""
    # The ARN of the host's instance role in the kitchen cloud ("" for none): the instance
    # profile association, read by the kitchen's metadata service.
    instance_role: str = ""

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: data[key] for key in PUBLIC_KEYS}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HostState:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})


def load(name: str) -> HostState | None:
    path = HostPaths(name).state_file
    try:
        return HostState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # a torn or foreign file: callers treat the host as stale


def save(state: HostState) -> None:
    """Write atomically (temp file + rename): a crash never leaves half a state file."""
    state.updated_at = now()
    path = HostPaths(state.name).state_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        handle.write(state.to_json())
    os.replace(tmp, path)


def host_names() -> list[str]:
    """Names of every host directory, whether or not its state file is readable."""
    root = hosts_dir()
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir())


def all_states() -> list[HostState]:
    return [state for name in host_names() if (state := load(name)) is not None]
