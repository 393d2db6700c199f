"""Faults the kitchen proves the host survives, or reports: a killed backend comes back, a
stopped Caddy is reported by the health check (Healthy=0 in the kitchen's CloudWatch), a
release that fails its health check is rolled back, SSH guessing gets banned, a filling data or
log filesystem is reported and a full one is unhealthy, and nothing is lost or corrupted.

One host for the module (``mon-<hex>``) from a throwaway copy of the example stack.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from guest_data import small_filesystem
from guest_kit import guest, healthy, metric_points, stack_host, wait_until

from choiros_infra.diagnose import SECTIONS
from choiros_infra.diagnose_cmd import execute as diagnose
from choiros_infra.host_access import HostAccess
from choiros_infra.kitchen_stack import publish_stand_in
from choiros_infra.release_store import ReleaseStore
from choiros_infra.targets import KITCHEN_ACCOUNT
from infra.config import StackConfig, load_stack_file
from infra.user_data import bucket_names
from kitchen import cloud
from kitchen.ssh_access import ssh_config
from kitchen.state import HostState
from provisioning.spec import METRICS

pytestmark = [pytest.mark.kitchen, pytest.mark.faults]

RECOVERY_SECONDS = 10.0


@pytest.fixture(scope="module")
def host(stack_file: Path) -> Iterator[HostState]:
    with stack_host(f"mon-{secrets.token_hex(3)}", stack_file) as host:
        yield host


@pytest.fixture(scope="module")
def cfg(stack_file: Path) -> StackConfig:
    return load_stack_file(stack_file)


def health_run(host: HostState) -> dict[str, Any]:
    """Run the health check now; its JSON line. The tests run it far more often than its
    timer does, so systemd's start rate limit is reset first."""
    guest(host, "systemctl", "reset-failed", "choiros-healthcheck.service")
    done = guest(host, "systemctl", "start", "choiros-healthcheck.service")
    assert done.returncode == 0, done.stderr
    line = guest(host, "journalctl", "_SYSTEMD_UNIT=choiros-healthcheck.service", "-o", "cat",
                 "-n", "1").stdout.strip()
    report: dict[str, Any] = json.loads(line)
    return report


def test_the_incident_snapshot_has_every_section(host: HostState, tmp_path: Path) -> None:
    out = tmp_path / "diagnose.md"
    access = HostAccess(url=f"ssh://{host.ssh_user}@{host.address}", ssh_config=ssh_config(host))
    assert diagnose(access, out) == 0
    text = out.read_text()
    for section in SECTIONS:
        assert f"\n## {section.title}\n" in text, section.title
    assert '"status": "healthy"' in text
    assert '"action": "deploy"' in text, "the deploy history is in it"
    assert "Status for the jail: sshd" in text
    assert "### last published ages" in text and "events.db" in text  # backup freshness
    assert "127.0.0.1:8080" in text  # the listening ports


def test_a_backend_killed_with_sigkill_is_back_and_healthy_within_10_seconds(
        host: HostState) -> None:
    assert healthy(host)
    done = guest(host, "systemctl", "kill", "-s", "KILL", "--kill-whom=main",
                 "choiros-backend.service")
    assert done.returncode == 0, done.stderr
    wait_until("backend down", lambda: not healthy(host), 5, 0.05)
    took = wait_until("backend healthy again", lambda: healthy(host), RECOVERY_SECONDS)
    print(f"backend healthy again {took:.1f}s after SIGKILL")
    assert guest(host, "systemctl", "is-active", "choiros-backend.service").stdout.strip() \
        == "active"


def test_caddy_stopped_is_reported_unhealthy_and_publishes_healthy_0(
        host: HostState, cfg: StackConfig) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    guest(host, "systemctl", "stop", "caddy.service")
    try:
        report = health_run(host)
        assert report["healthy"] is False, report
        assert report["units"]["caddy.service"] != "active", report
        assert any(p.startswith("caddy /health") for p in report["problems"]), report
        assert report["published"] is True, report
        assert 0.0 in metric_points(cfg, METRICS.healthy, "Minimum", since)
    finally:
        guest(host, "systemctl", "start", "caddy.service")
    assert health_run(host)["healthy"] is True


def test_a_release_that_fails_its_health_check_is_rolled_back(
        host: HostState, cfg: StackConfig, tmp_path: Path) -> None:
    version = f"9.0.{secrets.randbelow(1000)}-bad"
    publish_stand_in(ReleaseStore(cloud.aws_client("s3", cfg.region),
                                  bucket_names(cfg, KITCHEN_ACCOUNT).artifacts),
                     version, tmp_path, unhealthy=True)
    before = guest(host, "readlink", "/opt/choiros/current").stdout.strip()
    done = guest(host, "choiros-deploy", version, timeout=300)
    assert done.returncode == 1, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    assert guest(host, "readlink", "/opt/choiros/current").stdout.strip() == before
    assert healthy(host)
    assert health_run(host)["healthy"] is True
    history = [json.loads(line) for line in guest(
        host, "cat", "/opt/choiros/deploy-history.jsonl").stdout.splitlines()]
    failed = [h for h in history if h["action"] == "deploy" and h["to"] == version]
    rolled = [h for h in history if h["action"] == "auto-rollback" and h["from"] == version]
    assert failed and failed[-1]["result"] == "failed", history
    assert rolled and rolled[-1]["result"] == "ok", history


# Where a full filesystem hurts, and the services writing there (stopped around the move of
# the directory onto a small tmpfs of its own: the kitchen's root is this machine's disk).
FILLED = {
    "data": ("/opt/choiros/data", ("choiros-litestream.service", "choiros-backend.service")),
    "logs": ("/opt/choiros/logs", ("choiros-backend.service", "caddy.service")),
}
SMALL_FS_MB = 512  # 85 % of it still leaves more than the health check's 64 MiB floor
DB = "/opt/choiros/data/events.db"


def _database(host: HostState) -> tuple[str, int]:
    done = guest(host, "sqlite3", "-readonly", DB, "PRAGMA integrity_check",
                 "SELECT count(*) FROM events")
    assert done.returncode == 0, done.stderr
    integrity, rows = done.stdout.split()
    return integrity, int(rows)


def _post_event(host: HostState, n: int) -> bool:
    """One event through Caddy, as a client writes; True when the app acknowledged it. With TLS
    port 80 redirects (308, the POST is kept) to https, which -L follows."""
    done = guest(host, "curl", "-skL", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}",
                 "-H", "Content-Type: application/json", "--data", json.dumps({"fill": n}),
                 "http://127.0.0.1/api/events", timeout=20)
    return done.stdout.strip() == "201"


@pytest.mark.parametrize("which", sorted(FILLED))
def test_a_filling_filesystem_is_reported_and_a_full_one_is_unhealthy_corrupting_nothing(
        host: HostState, cfg: StackConfig, which: str) -> None:
    path, units = FILLED[which]
    filler = f"{path}/fault-filler"
    with small_filesystem(host.name, path, SMALL_FS_MB, units):
        since = datetime.now(UTC) - timedelta(seconds=5)
        assert health_run(host)["healthy"] is True
        acked = sum(_post_event(host, n) for n in range(3))
        assert acked == 3, "writes work on the small filesystem"
        _, rows = _database(host)
        try:
            # Past the disk alarm's threshold, short of full: a figure, still healthy.
            fuller = guest(host, "fallocate", "-l", str((SMALL_FS_MB * 85 // 100) << 20),
                           filler)
            assert fuller.returncode == 0, fuller.stderr
            report = health_run(host)
            print(f"{path} {report['disk_used_percent'][path]}% used, "
                  f"{report['disk_free_mb'][path]} MiB free: healthy={report['healthy']}")
            assert report["disk_used_percent"][path] >= 85.0, report
            assert report["healthy"] is True, report
            disk = metric_points(cfg, METRICS.disk_used, "Maximum", since)
            assert max(disk, default=-1.0) >= 85.0, disk
            # Full: dd until the filesystem refuses more.
            guest(host, "dd", "if=/dev/zero", f"of={filler}-2", "bs=1M", timeout=120)
            writes = [_post_event(host, n) for n in range(5)]
            report = health_run(host)
            print(f"{path} full: {report['disk_free_mb'][path]} MiB free; problems "
                  f"{report['problems']}; {sum(writes)} of 5 writes acknowledged")
            assert report["healthy"] is False, report
            assert f"{path} is full: 0 MiB free" in report["problems"], report
            assert report["published"] is True, report
            assert 0.0 in metric_points(cfg, METRICS.healthy, "Minimum", since)
            disk = metric_points(cfg, METRICS.disk_used, "Maximum", since)
            assert max(disk, default=-1.0) == 100.0, disk
        finally:
            guest(host, "rm", "-f", filler, f"{filler}-2")
        # Room again: healthy without anyone restarting anything, nothing acknowledged lost,
        # nothing corrupted (a write refused while full may still have committed).
        wait_until("healthy with room again", lambda: health_run(host)["healthy"], 30, 1)
        integrity, now = _database(host)
        assert integrity == "ok"
        assert rows + sum(writes) <= now <= rows + len(writes), (rows, writes, now)
        assert _post_event(host, 99), "writes work again"
    assert _database(host) == ("ok", now + 1), "the data moved back whole"
    assert health_run(host)["healthy"] is True


def _local_address(address: str, source: str) -> str:
    """The address this machine connects to ``address`` from: ``source``, or the route's."""
    if source:
        return source
    route = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True,
                           text=True, check=True).stdout.split()
    return route[route.index("src") + 1]


def _failed_logins(host: HostState, source: str = "", count: int = 5) -> str:
    """``count`` SSH logins as unknown users, each offering one throwaway key, with this
    machine's OpenSSH client (the host offers only a post-quantum key exchange, which OpenSSH
    from 8.5 on speaks), from ``source`` (default: the address the route picks); the local
    address they came from."""
    with tempfile.TemporaryDirectory() as keys:
        key = Path(keys) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        bind = ["-b", source] if source else []
        denied = 0
        for n in range(count):
            attempt = subprocess.run(
                ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                 "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", *bind,
                 f"nobody-{n}-{secrets.token_hex(2)}@{host.address}", "true"],
                capture_output=True, text=True, timeout=30, check=False)
            denied += "Permission denied (publickey)" in attempt.stderr
    assert denied, f"no login got as far as its key: {attempt.stderr}"
    return _local_address(host.address, source)


def _fresh_login(host: HostState, source: str = "") -> subprocess.CompletedProcess[str]:
    """The operator's own login (the host's key), on a new connection, not the shared one."""
    bind = ["-b", source] if source else []
    return subprocess.run(["ssh", "-F", str(ssh_config(host)), "-o", "ControlMaster=no",
                           "-o", "ControlPath=none", "-o", "ConnectTimeout=10", *bind,
                           host.address, "true"],
                          capture_output=True, text=True, timeout=30, check=False)


def _banned(host: HostState) -> list[str]:
    out = guest(host, "fail2ban-client", "get", "sshd", "banip", timeout=20).stdout
    return out.split()


@pytest.fixture
def second_source(host: HostState) -> Iterator[str]:
    """A second address on this machine's end of the host's veth, outside the kitchen's admin
    network (10.213.0.0/16): an attacker's address, as the host sees it."""
    address = f"198.51.100.{host.number}"
    subprocess.run(["ip", "address", "add", f"{address}/32", "dev", host.host_interface],
                   check=True)
    try:
        yield address
    finally:
        subprocess.run(["ip", "address", "del", f"{address}/32", "dev", host.host_interface],
                       check=False)
        guest(host, "fail2ban-client", "set", "sshd", "unbanip", address)


def test_the_admin_address_is_never_banned_another_is_after_maxretry(
        host: HostState, second_source: str) -> None:
    """Runbook: 30-operations/04-security.md#fail2ban-list-unban-ban

    Five mistaken logins from the admin address (this machine: the kitchen's admin network)
    ban nothing; five from another address ban it, and the admin still gets in. The ban is
    lifted again by ``second_source``, so no other test depends on running before it."""
    admin = _failed_logins(host)
    assert admin == host.gateway

    def ignored() -> int:
        log = guest(host, "cat", "/var/log/fail2ban.log", timeout=20).stdout
        return log.count(f"[sshd] Ignore {admin} by ip")

    wait_until("fail2ban saw the admin's 5 failures and ignored them", lambda: ignored() >= 5,
               30, 0.5)
    assert admin not in _banned(host)

    assert _failed_logins(host, second_source) == second_source
    wait_until(f"{second_source} banned", lambda: second_source in _banned(host), 30, 0.5)
    # fail2ban records the ban before its action has inserted the ufw rule: wait for both.
    wait_until(f"{second_source} banned through ufw",
               lambda: second_source in guest(host, "ufw", "status").stdout, 30, 0.5)
    refused = _fresh_login(host, second_source)
    assert refused.returncode == 255 and "refused" in refused.stderr, refused.stderr
    assert _fresh_login(host).returncode == 0, "the admin still gets in"
    assert admin not in _banned(host)
    assert healthy(host)
    assert health_run(host)["healthy"] is True
