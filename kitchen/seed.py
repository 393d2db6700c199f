"""What a kitchen host is given before it boots: its SSH key pair and its NoCloud seed.

The NoCloud seed (``/var/lib/cloud/seed/nocloud/`` in the guest's rootfs) is the kitchen's
EC2 metadata service: ``user-data`` holds exactly the bytes EC2 would get (cloud-init
unpacks gzip itself), ``meta-data`` the instance-id, hostname and the per-host public key as
``public-keys`` (the analogue of an EC2 key pair: cloud-init installs it for the default user).
"""

from __future__ import annotations

import json
from pathlib import Path

from kitchen.paths import HostPaths
from kitchen.processes import run


def generate_ssh_key(paths: HostPaths, comment: str) -> str:
    """Create the host's ed25519 key pair on the kitchen machine; return the public key."""
    paths.root.mkdir(parents=True, exist_ok=True)
    for path in (paths.ssh_key, paths.ssh_public_key):
        path.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
         "-f", str(paths.ssh_key)], what="ssh-keygen")
    return paths.ssh_public_key.read_text().strip()


def meta_data(instance_id: str, hostname: str, public_key: str) -> str:
    # JSON is YAML, and json.dumps quotes whatever the values hold.
    return json.dumps({
        "instance-id": instance_id,
        "local-hostname": hostname,
        "public-keys": [public_key],
    }, indent=2) + "\n"


def etc_hosts(hostname: str) -> str:
    """The /etc/hosts Debian writes for a named host (cloud-init rewrites it the same way)."""
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"
            "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n")


def write_seed(paths: HostPaths, user_data: bytes, instance_id: str, hostname: str,
               public_key: str) -> None:
    """Write the NoCloud seed, and the hostname files, into the host's rootfs."""
    seed = paths.seed_dir
    seed.mkdir(parents=True, exist_ok=True)
    _write(seed / "user-data", user_data, 0o600)
    _write(seed / "meta-data", meta_data(instance_id, hostname, public_key).encode(), 0o600)
    _write(paths.rootfs / "etc/hostname", f"{hostname}\n".encode(), 0o644)
    _write(paths.rootfs / "etc/hosts", etc_hosts(hostname).encode(), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    if path.is_symlink():
        path.unlink()
    path.write_bytes(data)
    path.chmod(mode)


def known_hosts_lines(rootfs: Path, address: str) -> list[str]:
    """known_hosts entries for the guest's SSH host keys (cloud-init made them at boot)."""
    lines = []
    for pub in sorted((rootfs / "etc/ssh").glob("ssh_host_*_key.pub")):
        fields = pub.read_text().split()
        if len(fields) >= 2:
            lines.append(f"{address} {fields[0]} {fields[1]}")
    return lines
