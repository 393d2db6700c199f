"""What the kitchen tests read and break about a host's data, in one place: the replica in the
kitchen cloud (restored on this machine with the pinned Litestream, never through the host
under test) and a directory of the guest moved onto a small filesystem of its own. (The
guest helpers and the metric reader are in guest_kit.py.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from guest_kit import wait_until

from choiros_infra.targets import KITCHEN_ACCOUNT
from infra.config import StackConfig
from infra.user_data import bucket_names
from kitchen import cloud, lifecycle
from provisioning.artifacts import LITESTREAM


def replica_state(cfg: StackConfig) -> tuple[str, int] | None:
    """(integrity_check, rows of `events`) of the stack's latest replica; None when it cannot
    be restored."""
    names = bucket_names(cfg, KITCHEN_ACCOUNT)
    info = cloud.cloud_info()
    url = (f"s3://{names.backups}/{cfg.backup_prefix.rstrip('/')}?endpoint={info.endpoint_url}"
           f"&region={cfg.region}&forcePathStyle=true")
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # litestream refuses it
    env.update(cloud.admin_keys().env())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "events.db"
        done = subprocess.run([str(LITESTREAM.local_file()), "restore", "-o", str(out), url],
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode or not out.exists():
            return None
        with contextlib.closing(sqlite3.connect(out)) as conn:
            integrity = "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
            return integrity, int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def wait_for_replica(cfg: StackConfig, rows: int, timeout: float) -> float:
    """Seconds until the replica is sound and holds ``rows`` events (fails after ``timeout``,
    saying what the replica held last)."""
    last: list[tuple[str, int] | None] = [None]

    def sound() -> bool:
        last[0] = replica_state(cfg)
        return last[0] == ("ok", rows)

    try:
        return wait_until("the replica", sound, timeout)
    except AssertionError:
        raise AssertionError(f"the replica is {last[0]}, not ('ok', {rows}), after "
                             f"{timeout}s") from None


# The app answering directly and through Caddy (the kitchen's Caddy serves 127.0.0.1 too; with
# TLS its port 80 redirects to https, which -L follows).
HEALTHY = "curl -sf -m 2 -o /dev/null http://127.0.0.1:8080/health && " \
          "curl -sfkL -m 2 -o /dev/null http://127.0.0.1/health"


def _start_and_wait_healthy(name: str, units: tuple[str, ...], timeout: float = 60) -> None:
    """Start the units; return once the app answers healthy (a started unit is not yet a
    listening one), fail after ``timeout``."""
    started = lifecycle.exec_in(name, ["systemctl", "start", *units], timeout=120)
    assert started.returncode == 0, started.stderr
    wait_until(f"{name} healthy after starting {' '.join(units)}",
               lambda: lifecycle.exec_in(name, ["sh", "-c", HEALTHY], timeout=30).returncode
               == 0, timeout, interval=0.5)


def _in_guest(name: str, script: str, *args: str) -> None:
    done = lifecycle.exec_in(name, ["sh", "-euc", script, "sh", *args], timeout=300)
    assert done.returncode == 0, f"in {name}: {script.strip()}\n{done.stdout}{done.stderr}"


@contextlib.contextmanager
def small_filesystem(name: str, path: str, size_mb: int,
                     units: tuple[str, ...]) -> Iterator[None]:
    """Move the guest's ``path`` onto a tmpfs of ``size_mb`` MiB (same mode, owner and content;
    root in the guest can mount, and the mount lives in the guest's mount namespace), with
    ``units``, the services writing there, stopped around the move so they reopen their files
    on it. On exit the content, with what was written meanwhile, moves back the same way. Both
    ways it returns once the app answers healthy again."""
    stop = ["systemctl", "stop", *units]
    lifecycle.exec_in(name, stop, timeout=120)
    _in_guest(name, """
        mode=$(stat -c %a "$1"); owner=$(stat -c %u:%g "$1")
        rm -rf /root/small-fs-copy; cp -a "$1/." /root/small-fs-copy
        mount -t tmpfs -o "size=$2m,mode=$mode,uid=${owner%:*},gid=${owner#*:}" choiros-small "$1"
        cp -a /root/small-fs-copy/. "$1/"; rm -rf /root/small-fs-copy
        """, path, str(size_mb))
    try:
        _start_and_wait_healthy(name, units)
        yield
    finally:
        lifecycle.exec_in(name, stop, timeout=120)
        _in_guest(name, """
            rm -rf /root/small-fs-copy; cp -a "$1/." /root/small-fs-copy
            umount "$1"; find "$1" -mindepth 1 -delete
            cp -a /root/small-fs-copy/. "$1/"; rm -rf /root/small-fs-copy
            """, path)
        _start_and_wait_healthy(name, units)
