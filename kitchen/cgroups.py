"""A cgroup per kitchen host, so containers do not share one.

With no systemd on the machine, ``systemd-nspawn --keep-unit`` stays in the cgroup it was
started in and creates ``payload/`` and ``supervisor/`` below it. Started from the root
cgroup, two containers would share ``/payload`` and each guest's systemd would see (and on
shutdown clean up) the other's cgroups. So every nspawn is started inside
``choiros-kitchen/<name>`` of each hierarchy systemd uses (``name=systemd`` and the unified
one on hybrid machines, the single one on unified machines). Destroy kills what is left in
that cgroup and removes it, which also catches guest processes nspawn did not reap.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from kitchen.processes import poll_until

CGROUP_ROOT = Path("/sys/fs/cgroup")
KITCHEN_CGROUP = "choiros-kitchen"


def hierarchies() -> list[Path]:
    """The cgroup hierarchies systemd inside the guest will look at."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]  # unified (cgroup v2 only)
    found = [CGROUP_ROOT / sub for sub in ("systemd", "unified")
             if (CGROUP_ROOT / sub / "cgroup.procs").exists()]
    return found


def host_cgroups(name: str) -> list[Path]:
    return [root / KITCHEN_CGROUP / name for root in hierarchies()]


def create(name: str) -> list[Path]:
    paths = host_cgroups(name)
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return paths


def join(procs_files: list[str]) -> None:
    """Move the calling process into the cgroups whose ``cgroup.procs`` files are given.

    Runs in the child between fork and exec (possibly forked from a threaded CLI), so it
    only makes plain os calls on precomputed paths.
    """
    pid = str(os.getpid()).encode()
    for procs in procs_files:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


def pids_in(name: str) -> set[int]:
    found: set[int] = set()
    for top in host_cgroups(name):
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                found.update(int(line) for line in procs.read_text().split())
    return found


def kill_all(name: str, timeout: float = 10) -> bool:
    """SIGKILL every process left in the host's cgroups; True once they are empty."""
    for pid in pids_in(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return poll_until(lambda: not pids_in(name), timeout)


def remove(name: str) -> None:
    """Remove the host's (empty) cgroup trees, deepest directories first."""
    for top in host_cgroups(name):
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()),
                      key=lambda p: len(p.parts), reverse=True)
        for path in [*dirs, top]:
            with contextlib.suppress(OSError):  # gone already, or busy: destroy reports it
                path.rmdir()


def remove_parent() -> None:
    """Remove the (empty) ``choiros-kitchen`` cgroups once no host is left."""
    for root in hierarchies():
        with contextlib.suppress(OSError):
            (root / KITCHEN_CGROUP).rmdir()
