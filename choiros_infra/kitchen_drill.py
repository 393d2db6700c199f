"""The restore drill: write events to a kitchen host, kill it hard, replace it, and measure
what was lost (RPO) and how long the site was down (RTO).

It runs on a throwaway copy of the stack (its own buckets and backup prefix) so it never
touches another host's backups, and removes that copy's objects from the kitchen cloud after.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from choiros_infra import kitchen_site
from choiros_infra.kitchen_stack import (
    remove_stack_objects,
    replace_host,
    stack_up,
    throwaway_stack,
)
from choiros_infra.targets import kitchen
from infra.config import StackConfig, load_stack_file
from kitchen import cgroups, lifecycle
from kitchen.errors import KitchenError
from kitchen.lifecycle import Progress


def _api(cfg: StackConfig, address: str, method: str, path: str, body: object = None,
         timeout: float = 10) -> Any:
    return kitchen_site.call(cfg, kitchen(), address, method, path, body, timeout)


@dataclass
class DrillResult:
    """What a restore drill measured (the ``kitchen drill --json`` keys)."""

    rpo_seconds: float  # acknowledged writes lost: from the last surviving ack to the last ack
    rto_seconds: float  # from the kill to the new host serving the restored data
    events_acknowledged: int  # by the app during the drill's write phase
    events_lost: int  # of those, missing after the restore
    db_bytes: int  # the database and its WAL on the killed host, in bytes
    restore_seconds: float | None  # restore-at-boot's own time on the new host
    fill_seconds: float  # writing --db-mb through the app and waiting for the replica
    stack: str
    host: str

    def as_dict(self) -> dict[str, object]:
        return dict(sorted(self.__dict__.items()))


class _Writer(threading.Thread):
    """Posts events one after another until stopped or the host stops answering; keeps the
    acknowledgement time of each (the app commits before it answers)."""

    def __init__(self, cfg: StackConfig, address: str) -> None:
        super().__init__(daemon=True)
        self.cfg, self.address = cfg, address
        self.acks: list[tuple[int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                answer = _api(self.cfg, self.address, "POST", "/api/events", {"drill": n},
                              timeout=3)
            except OSError:
                return
            self.acks.append((int(answer["id"]), time.time()))
            n += 1
            time.sleep(0.02)


def _fill(cfg: StackConfig, address: str, megabytes: int) -> None:
    """Grow the database by about ``megabytes`` MiB through the app (0.9 MiB events)."""
    pad = "x" * (900 << 10)
    for i in range(int(megabytes * 1024 / 900) + (1 if megabytes else 0)):
        _api(cfg, address, "POST", "/api/events", {"fill": i, "pad": pad}, timeout=60)


def _wait_fresh(name: str, timeout: float) -> None:
    """Until the host's own freshness check says the replica has every change."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = lifecycle.exec_in(name, ["/usr/local/sbin/choiros-backup-freshness"],
                                timeout=120).stdout
        if out.rstrip().endswith(": 0.0s"):
            return
        time.sleep(1)
    raise KitchenError(f"the replica of {name} did not catch up in {timeout:.0f}s",
                       f"`{lifecycle.CLI} ssh --name {name} -- sudo journalctl -u "
                       "choiros-litestream`")


def run_drill(stack_file: Path, *, db_mb: int = 0, write_seconds: float = 10.0,
              name: str | None = None, progress: Progress | None = None) -> DrillResult:
    """Boot a host from a throwaway copy of ``stack_file``, grow its database by ``db_mb`` MiB,
    write events continuously, kill the host hard mid-write, replace it, and measure what came
    back. The host and the stack's objects are removed afterwards, whatever happened."""
    name = name or f"drill-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="choiros-drill-") as tmp:
        path = throwaway_stack(stack_file, Path(tmp))
        cfg = load_stack_file(path)
        try:
            st = stack_up(name, path, progress=progress)
            started = time.monotonic()
            _fill(cfg, st.address, db_mb)
            _wait_fresh(name, 600)
            fill_seconds = time.monotonic() - started
            base = _api(cfg, st.address, "GET", "/api/events/count")["count"]
            writer = _Writer(cfg, st.address)
            writer.start()
            time.sleep(write_seconds)
            size = lifecycle.exec_in(name, ["stat", "-c", "%s", "/opt/choiros/data/events.db",
                                            "/opt/choiros/data/events.db-wal"])
            killed_at = time.time()
            cgroups.kill_all(name)
            writer.stop.set()
            writer.join(10)
            acks = [a for a in writer.acks if a[1] <= killed_at]
            new = replace_host(name, path, hard=True, progress=progress)
            count = _api(cfg, new.address, "GET", "/api/events/count")["count"]
            rto = time.time() - killed_at
            survived = max(0, count - base)
            lost = max(0, len(acks) - survived)
            rpo = acks[-1][1] - acks[survived - 1][1] if lost and survived else (
                acks[-1][1] - acks[0][1] if lost else 0.0)
            journal = lifecycle.exec_in(name, ["journalctl", "-u",
                                               "choiros-restore-at-boot.service", "-o", "cat"])
            took = re.search(r"from \S+ in ([0-9.]+)s", journal.stdout)
            return DrillResult(
                rpo_seconds=round(rpo, 3), rto_seconds=round(rto, 1),
                events_acknowledged=len(acks), events_lost=lost,
                db_bytes=sum(int(n) for n in size.stdout.split()),
                restore_seconds=float(took.group(1)) if took else None,
                fill_seconds=round(fill_seconds, 1), stack=cfg.stack, host=name)
        finally:
            lifecycle.destroy(name)
            remove_stack_objects(cfg)
