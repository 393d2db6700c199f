"""Checks that this machine can run a kitchen, before anything is created.

Each failure names the fix: the kitchen needs root (namespaces, veths, nspawn) and a handful
of Debian packages that ``make system-deps`` installs.
"""

from __future__ import annotations

import os
import shutil

from kitchen.errors import PrerequisiteError

# tool -> Debian package that provides it
REQUIRED_TOOLS: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "mmdebstrap": "mmdebstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
}


def missing_tools() -> dict[str, str]:
    return {tool: pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None}


def check() -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "the kitchen needs root (network namespaces, veth links, systemd-nspawn)",
            "run it as root, e.g. `sudo .venv/bin/choiros-infra kitchen ...`",
        )
    missing = missing_tools()
    if missing:
        packages = " ".join(sorted(set(missing.values())))
        raise PrerequisiteError(
            f"missing tools: {', '.join(sorted(missing))}",
            f"apt-get install {packages}, or `make system-deps`",
        )
    if not os.path.exists("/proc/self/ns/net"):
        raise PrerequisiteError("this kernel has no network namespaces",
                                "run the kitchen on a Linux host with CONFIG_NET_NS")
