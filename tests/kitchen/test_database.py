"""The event store outlives its host: written through the app, it is in the S3 replica within
seconds; a new host built from the same stack comes up with it (restore at boot); the
on-demand restore verifies it; the freshness metric reaches the kitchen's CloudWatch (moto).

The stack is the example stack under a fresh name (``db-<hex>``), so its buckets and backup
prefix are this module's alone; its objects are removed from moto at the end.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from guest_data import replica_state, wait_for_replica
from guest_kit import api, guest, metric_points

from choiros_infra.kitchen_stack import stack_up
from infra.config import StackConfig, load_stack_file
from kitchen import cloud, lifecycle
from kitchen.state import HostState
from provisioning.spec import METRICS

pytestmark = pytest.mark.kitchen

RPO_SECONDS = 5.0


@pytest.fixture(scope="module")
def stack(stack_file: Path) -> tuple[Path, StackConfig]:
    return stack_file, load_stack_file(stack_file)


class Hosts:
    """The module's current host; replaced in place by the restore-at-boot test."""

    def __init__(self, stack_file: Path) -> None:
        self.stack_file = stack_file
        self.current: HostState | None = None

    def up(self) -> HostState:
        name = f"db-{secrets.token_hex(3)}"
        try:
            self.current = stack_up(name, self.stack_file)
        except BaseException:
            lifecycle.destroy(name)
            raise
        return self.current

    def destroy(self) -> None:
        if self.current is not None:
            lifecycle.destroy(self.current.name)
            self.current = None


@pytest.fixture(scope="module")
def hosts(stack: tuple[Path, StackConfig]) -> Iterator[Hosts]:
    made = Hosts(stack[0])
    made.up()
    try:
        yield made
    finally:
        made.destroy()


def test_events_written_through_the_app_are_in_the_replica_within_seconds(
        hosts: Hosts, stack: tuple[Path, StackConfig]) -> None:
    host = hosts.current
    assert host is not None
    assert guest(host, "systemctl", "is-active", "choiros-litestream.service").stdout.strip() \
        == "active"
    base = api(host, "GET", "/api/events/count")["count"]
    for n in range(5):
        assert "id" in api(host, "POST", "/api/events", {"n": n, "test": "replication"})
    acknowledged = time.monotonic()
    waited = wait_for_replica(stack[1], base + 5, timeout=30)
    lag = time.monotonic() - acknowledged
    print(f"replica caught up {lag:.2f}s after the last acknowledged write (poll {waited:.2f}s)")
    assert lag <= RPO_SECONDS + 2, f"replication lag {lag:.1f}s (RPO {RPO_SECONDS}s)"


def test_the_litestream_unit_is_sandboxed(hosts: Hosts) -> None:
    assert hosts.current is not None
    report = guest(hosts.current, "systemd-analyze", "security", "--no-pager",
                   "choiros-litestream.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report.stdout)
    assert match, report.stdout[-500:] + report.stderr
    print(f"choiros-litestream.service exposure {match.group(1)}")
    assert float(match.group(1)) <= 2.0, report.stdout[-2000:]


def test_restore_verify_only_succeeds_on_the_host(hosts: Hosts) -> None:
    assert hosts.current is not None
    done = guest(hosts.current, "choiros-restore", "--verify-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the restored copy is sound" in done.stdout and "nothing was changed" in done.stdout


def test_the_freshness_metric_reaches_the_kitchen_cloudwatch(
        hosts: Hosts, stack: tuple[Path, StackConfig]) -> None:
    assert hosts.current is not None
    started = datetime.now(UTC) - timedelta(minutes=1)
    done = guest(hosts.current, "systemctl", "start", "choiros-backup-freshness.service")
    assert done.returncode == 0, done.stderr
    cfg = stack[1]
    cw = cloud.aws_client("cloudwatch", cfg.region)
    dimensions = [{"Name": METRICS.dimension, "Value": cfg.name}]
    metrics = cw.list_metrics(Namespace=METRICS.namespace, MetricName=METRICS.backup_age,
                              Dimensions=dimensions)["Metrics"]
    assert metrics, f"the host published no {METRICS.backup_age} for its Host dimension"
    points = metric_points(cfg, METRICS.backup_age, "Maximum", started)
    assert points, f"no {METRICS.backup_age} data points"
    worst = max(points)
    assert worst < 60, f"the replica is {worst}s behind"
    timer = guest(hosts.current, "systemctl", "is-active", "choiros-backup-freshness.timer")
    assert timer.stdout.strip() == "active"


def test_an_on_demand_restore_to_a_moment_swaps_it_in_and_replication_goes_on(
        hosts: Hosts, stack: tuple[Path, StackConfig]) -> None:
    host = hosts.current
    assert host is not None
    before = api(host, "GET", "/api/events/count")["count"]
    wait_for_replica(stack[1], before, timeout=30)
    time.sleep(1.5)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.5)
    for n in range(4):
        api(host, "POST", "/api/events", {"n": n, "test": "after the moment"})
    wait_for_replica(stack[1], before + 4, timeout=30)
    done = guest(host, "choiros-restore", "--at", at)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the backend is healthy" in done.stdout, done.stdout
    assert api(host, "GET", "/api/events/count")["count"] == before
    kept = guest(host, "sh", "-c", "ls -d /opt/choiros/data/pre-restore-*/events.db")
    assert kept.returncode == 0, "the replaced database is kept"
    # Litestream resumes from the restored (older) database: the replica follows it.
    api(host, "POST", "/api/events", {"test": "after the restore"})
    wait_for_replica(stack[1], before + 1, timeout=30)


def test_backup_now_puts_the_latest_write_in_the_replica_and_a_restore_brings_it(
        hosts: Hosts, stack: tuple[Path, StackConfig]) -> None:
    host = hosts.current
    assert host is not None
    count = api(host, "GET", "/api/events/count")["count"]
    api(host, "POST", "/api/events", {"test": "just before the backup"})
    done = guest(host, "choiros-backup", "--now")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "holds every change up to TXID" in done.stdout, done.stdout
    print(done.stdout.strip().splitlines()[-1])
    # No waiting: once --now has returned, the replica holds the write.
    assert replica_state(stack[1]) == ("ok", count + 1)
    done = guest(host, "choiros-restore", "--latest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert api(host, "GET", "/api/events/count")["count"] == count + 1


def test_a_manual_copy_goes_back_with_from_file_and_undo_brings_back_what_it_replaced(
        hosts: Hosts, stack: tuple[Path, StackConfig]) -> None:
    host = hosts.current
    assert host is not None
    copied = api(host, "GET", "/api/events/count")["count"]
    copy = "/tmp/events-manual.db"
    made = guest(host, "sudo", "-u", "choiros", "sqlite3", "/opt/choiros/data/events.db",
                 f".backup {copy}")
    assert made.returncode == 0, made.stderr
    for n in range(3):
        api(host, "POST", "/api/events", {"n": n, "test": "after the manual copy"})
    done = guest(host, "choiros-restore", "--from-file", copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert api(host, "GET", "/api/events/count")["count"] == copied
    aside = re.search(r"the previous database is in /opt/choiros/data/(pre-restore-\S+)/ ",
                      done.stdout)
    assert aside, done.stdout
    done = guest(host, "choiros-restore", "--undo", aside.group(1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert api(host, "GET", "/api/events/count")["count"] == copied + 3, \
        "the state before the restore is back"
    wrong = guest(host, "choiros-restore", "--undo", "pre-restore-20000101T000000Z")
    assert wrong.returncode == 2 and aside.group(1) in wrong.stderr, wrong.stderr
    # Replication goes on from the database put back.
    api(host, "POST", "/api/events", {"test": "after the undo"})
    done = guest(host, "choiros-backup", "--now")
    assert done.returncode == 0, done.stdout + done.stderr
    assert replica_state(stack[1]) == ("ok", copied + 4)


def test_a_copy_kept_in_the_bucket_goes_back_from_its_url(hosts: Hosts) -> None:
    host = hosts.current
    assert host is not None
    kept = api(host, "GET", "/api/events/count")["count"]
    done = guest(host, "choiros-backup", "--copy")
    assert done.returncode == 0, done.stdout + done.stderr
    url = done.stdout.strip().splitlines()[-1].removeprefix("backup: uploaded ")
    assert url.startswith("s3://") and "/manual/events-" in url, done.stdout
    api(host, "POST", "/api/events", {"test": "after the kept copy"})
    done = guest(host, "choiros-restore", "--from-file", url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert api(host, "GET", "/api/events/count")["count"] == kept


def test_a_new_host_from_the_same_stack_comes_up_with_the_data(
        hosts: Hosts, stack: tuple[Path, StackConfig]) -> None:
    old = hosts.current
    assert old is not None
    for n in range(3):
        api(old, "POST", "/api/events", {"n": n, "test": "before replacement"})
    count = api(old, "GET", "/api/events/count")["count"]
    wait_for_replica(stack[1], count, timeout=30)
    hosts.destroy()
    started = time.monotonic()
    new = hosts.up()
    print(f"replacement host converged in {time.monotonic() - started:.1f}s")
    assert new.name != old.name
    assert api(new, "GET", "/api/events/count")["count"] == count
    journal = guest(new, "journalctl", "-u", "choiros-restore-at-boot.service", "--no-pager")
    assert "restored /opt/choiros/data/events.db" in journal.stdout, journal.stdout[-2000:]
    print(journal.stdout.strip().splitlines()[-3:])
    # Replication goes on from the restored database.
    api(new, "POST", "/api/events", {"test": "after replacement"})
    wait_for_replica(stack[1], count + 1, timeout=30)
