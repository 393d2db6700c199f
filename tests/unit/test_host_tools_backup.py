"""choiros-restore, choiros-restore-at-boot and choiros-backup-freshness, with the real pinned
Litestream against a moto S3 server on 127.0.0.1 (moto's ThreadedMotoServer).

Each test gets its own database and replica prefix; the replica is made by `litestream
replicate -once` from the rendered litestream.yml (its database path moved into tmp_path). A
fake `systemctl` records what the restore stops and starts; the health URL is a tiny local
server, so a swap is health-checked for real.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from module_loading import host_tool, load_module
from moto.server import ThreadedMotoServer

from provisioning.artifacts import LITESTREAM
from provisioning.render import render
from provisioning.spec import DATABASE, LITESTREAM_SOCKET, HostSpec
from provisioning.target import kitchen_target

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "provisioning" / "host_tools"
tool = host_tool("choiros_tool")
cb = load_module("choiros_backup", TOOLS / "choiros_backup.py")

BUCKET = "choiros-unit-backups"
REGION = "eu-west-1"
KEY = "testing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tools and Litestream take credentials from the default chain (on a host: the
    instance role); here from the environment, the chain's first link."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=KEY,
                      aws_secret_access_key=KEY)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    try:
        yield url
    finally:
        server.stop()


class Healthy(BaseHTTPRequestHandler):
    """The backend's /health: healthy while ``check()`` says so."""

    check: Callable[[], bool] = staticmethod(lambda: True)

    def do_GET(self) -> None:
        healthy = type(self).check()
        body = json.dumps({"status": "healthy" if healthy else "down"}).encode()
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE_CALLS"
case "$1" in is-active) exit "${FAKE_ACTIVE:-0}";; esac
"""


@dataclass
class Host:
    """A host's data directory, host.json and litestream.yml in tmp_path."""

    root: Path
    cfg: Any
    url: str
    calls: Path

    @property
    def db(self) -> Path:
        return Path(self.cfg.database)

    def s3(self, service: str = "s3") -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=KEY, aws_secret_access_key=KEY)

    def write(self, *bodies: str, table: str = "events", path: Path | None = None) -> None:
        with contextlib.closing(sqlite3.connect(path or self.db)) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, body TEXT)")
            conn.executemany(f"INSERT INTO {table} (body) VALUES (?)", [(b,) for b in bodies])  # noqa: S608

    def count(self, path: Path | None = None) -> int:
        with contextlib.closing(sqlite3.connect(path or self.db)) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def replicate(self, *flags: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        done = subprocess.run([str(LITESTREAM.local_file()), "replicate", "-once", *flags,
                               "-config", str(self.cfg.litestream_config)], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr

    def run(self, main: Callable[[list[str]], int], *argv: str,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        code = main([*argv, "--config", str(self.root / "host.json")])
        out, err = capsys.readouterr()
        return code, out, err

    def systemctl_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def host(tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    prefix = f"hosts/unit-{secrets.token_hex(3)}/"
    spec = HostSpec(hostname="choiros-unit", os="debian-12", region=REGION,
                    artifacts_bucket="unused", backups_bucket=BUCKET, backup_prefix=prefix)
    target = kitchen_target("http://unused:3142", moto_url,
                            ("10.213.0.0/16",))
    rendering = render(spec, target)
    data = tmp_path / "app" / "data"
    data.mkdir(parents=True)
    database = data / "events.db"
    # A socket path must fit in 108 bytes: tmp_path may not.
    sockets = Path(tempfile.mkdtemp(prefix="ls-"))
    socket_path = sockets / "litestream.sock"
    (tmp_path / "litestream.yml").write_text(
        rendering.file("/etc/choiros/litestream.yml").content.replace(DATABASE, str(database))
        .replace(LITESTREAM_SOCKET, str(socket_path)))
    server = HTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host_json = json.loads(rendering.file("/etc/choiros/host.json").content)
    host_json.update(app_root=str(tmp_path / "app"), database=str(database),
                     litestream=str(LITESTREAM.local_file()),
                     litestream_config=str(tmp_path / "litestream.yml"),
                     litestream_socket=str(socket_path),
                     health_url=f"http://127.0.0.1:{server.server_port}/health",
                     health_timeout_seconds=2, app_user=_me())
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    (tmp_path / "app" / "current").mkdir()
    (tmp_path / "app" / "current" / "sandbox").write_text("#!/bin/sh\n")
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL)
    systemctl.chmod(0o755)
    monkeypatch.setenv("CHOIROS_SYSTEMCTL", str(systemctl))
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.log"))
    cfg = tool.load_config(str(tmp_path / "host.json"))
    try:
        yield Host(tmp_path, cfg, moto_url, tmp_path / "calls.log")
    finally:
        server.shutdown()
        shutil.rmtree(sockets, ignore_errors=True)
        Healthy.check = staticmethod(lambda: True)


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _replica_with_history(host: Host) -> list[datetime]:
    """Three states a second apart (1, 2, 3 rows); the moment after each was replicated."""
    moments = []
    for n, flags in ((1, ("-force-snapshot",)), (2, ()), (3, ())):
        host.write(f"event {n}")
        host.replicate(*flags)
        time.sleep(1.1)
        moments.append(datetime.now(UTC))
        time.sleep(1.1)
    return moments


# -- refusals: the current database is never touched


def test_a_missing_replica_is_refused_and_nothing_changes(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("current")
    before = _files(host.db.parent)
    code, _, err = host.run(cb.restore_main, "--latest", capsys=capsys)
    assert code == tool.REFUSED, err
    assert err.startswith(f"Error: there is no replica at s3://{BUCKET}/{host.cfg.backup_prefix}")
    assert "\nTry: " in err
    assert _files(host.db.parent) == before
    assert host.systemctl_calls() == [], "nothing was stopped"


def test_a_corrupt_backup_is_refused_and_nothing_changes(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("one", "two")
    host.replicate("-force-snapshot")
    s3 = host.s3()
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=host.cfg.backup_prefix)["Contents"]:
        body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        garbled = body[:100] + bytes(len(body) - 200) + body[-100:]
        s3.put_object(Bucket=BUCKET, Key=obj["Key"], Body=garbled)
    before = _files(host.db.parent)
    for argv in (["--latest"], ["--verify-only"]):
        code, _, err = host.run(cb.restore_main, *argv, capsys=capsys)
        assert code == tool.REFUSED, err
        assert "could not restore" in err or "unusable" in err, err
        assert "nothing was changed" in err, err
    assert _files(host.db.parent) == before
    assert not [p for p in host.db.parent.iterdir() if p.name.startswith(".restore-")]
    assert host.systemctl_calls() == []


def test_a_backup_without_the_expected_tables_is_refused(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("x", table="something_else")
    host.replicate("-force-snapshot")
    code, _, err = host.run(cb.restore_main, "--verify-only", capsys=capsys)
    assert code == tool.REFUSED
    assert "tables missing: events" in err, err


def test_timestamps_outside_the_retention_or_in_the_future_are_refused(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("one")
    host.replicate("-force-snapshot")
    before = _files(host.db.parent)
    too_old = (datetime.now(UTC) - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, _, err = host.run(cb.restore_main, "--at", too_old, capsys=capsys)
    assert code == tool.REFUSED
    assert f"--at {too_old} is outside the retention: the oldest restorable moment is" in err
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, _, err = host.run(cb.restore_main, "--at", future, capsys=capsys)
    assert code == tool.USAGE and "is in the future" in err, err
    code, _, err = host.run(cb.restore_main, "--at", "yesterday", capsys=capsys)
    assert code == tool.USAGE and "is not a timestamp" in err, err
    assert _files(host.db.parent) == before
    assert host.systemctl_calls() == []


# -- restores


def test_verify_only_restores_checks_and_changes_nothing(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("one", "two", "three")
    host.replicate("-force-snapshot")
    before = _files(host.db.parent)
    code, out, err = host.run(cb.restore_main, "--verify-only", capsys=capsys)
    assert code == tool.OK, err
    assert "the restored copy is sound" in out and "events: 3 rows" in out, out
    assert "--verify-only: nothing was changed" in out
    assert _files(host.db.parent) == before
    assert host.systemctl_calls() == []


def test_verify_only_runs_while_a_deploy_holds_the_lock_and_copies_to_scratch(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A check never blocks a deploy: --verify-only takes no lock on app_root, and its copy
    goes to the scratch directory, not the data directory."""
    host.write("one")
    host.replicate("-force-snapshot")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made: list[str] = []
    mkdtemp = cb.tempfile.mkdtemp

    def recording_mkdtemp(**kw: Any) -> str:
        made.append(str(kw.get("dir")))
        return mkdtemp(**kw)

    monkeypatch.setattr(cb.tempfile, "mkdtemp", recording_mkdtemp)
    before = _files(host.db.parent)
    fd = os.open(host.cfg.app_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a deploy in progress
        code, out, err = host.run(cb.restore_main, "--verify-only", "--scratch", str(scratch),
                                  capsys=capsys)
    finally:
        os.close(fd)
    assert code == tool.OK, err
    assert "the restored copy is sound" in out
    assert made == [str(scratch)] and list(scratch.iterdir()) == []
    assert _files(host.db.parent) == before


def test_verify_only_refuses_a_copy_that_would_not_fit(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    host.write("one")
    host.replicate("-force-snapshot")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cb.shutil, "disk_usage", lambda path: usage(1 << 30, 0, 1 << 20))
    code, _, err = host.run(cb.restore_main, "--verify-only", "--scratch", str(tmp_path),
                            capsys=capsys)
    assert code == tool.REFUSED
    assert "Error: no room to verify the backup: it needs 64 MiB free in" in err
    assert "--scratch DIR" in err


def test_the_default_scratch_is_off_the_data_filesystem(host: Host, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    same_fs = tmp_path / "same"
    same_fs.mkdir()
    monkeypatch.setattr(cb, "SCRATCH_CANDIDATES", (same_fs,))
    with pytest.raises(tool.ToolError, match="off the data filesystem"):
        cb.scratch_for(host.cfg, 1, None)
    shm = Path("/dev/shm")  # a tmpfs: never the data filesystem
    assert shm.stat().st_dev != host.db.parent.stat().st_dev
    monkeypatch.setattr(cb, "SCRATCH_CANDIDATES", (same_fs, shm))
    assert cb.scratch_for(host.cfg, 1, None) == shm


def test_the_oldest_restorable_moment_printed_is_one_litestream_restores(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    """`litestream ltx` lists the snapshot's second; a moment early in that second precedes
    the write, and Litestream then finds no backup. The tool refuses it and names the next
    whole second, which restores."""
    host.write("event 1")
    host.replicate("-force-snapshot")
    time.sleep(2.2)
    host.write("event 2")
    host.replicate()
    (listed,) = [f.timestamp for f in cb.replica_files(host.cfg) if f.level == cb.SNAPSHOT_LEVEL]
    at = listed.strftime("%Y-%m-%dT%H:%M:%SZ")
    code, _, err = host.run(cb.restore_main, "--verify-only", "--at", at, capsys=capsys)
    assert code == tool.REFUSED, err
    named = (listed + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"the oldest restorable moment is {named}" in err, err
    code, out, err = host.run(cb.restore_main, "--verify-only", "--at", named, capsys=capsys)
    assert code == tool.OK, err
    assert "events: 1 rows" in out, out


def test_restore_at_a_moment_swaps_in_that_state_and_keeps_the_old_database(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    moments = _replica_with_history(host)
    old = host.db.read_bytes()
    at = moments[1].strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, err = host.run(cb.restore_main, "--at", at, capsys=capsys)
    assert code == tool.OK, err + out
    assert host.count() == 2, "the state as of the second replicated moment"
    (aside,) = [p for p in host.db.parent.iterdir() if p.name.startswith("pre-restore-")]
    assert (aside / "events.db").read_bytes() == old, "the previous database is kept"
    assert (aside / ".events.db-litestream").is_dir(), "Litestream's old state went with it"
    assert host.db.stat().st_mode & 0o777 == 0o640
    assert host.systemctl_calls() == [
        "stop choiros-litestream.service", "stop choiros-backend.service",
        "start choiros-backend.service", "start choiros-litestream.service"]
    code, out, _ = host.run(cb.restore_main, "--latest", capsys=capsys)
    assert code == tool.OK and host.count() == 3, out


def test_a_restore_the_backend_is_unhealthy_on_is_undone(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("one")
    host.replicate("-force-snapshot")
    host.write("two")  # not replicated: the restored copy (1 row) differs from the current (2)
    current = host.db.read_bytes()
    Healthy.check = staticmethod(lambda: host.count() != 1)
    code, _, err = host.run(cb.restore_main, "--latest", capsys=capsys)
    assert code == tool.UNDONE, err
    assert "the previous database is back and healthy" in err, err
    (aside,) = [p for p in host.db.parent.iterdir() if p.name.startswith("pre-restore-")]
    assert host.db.read_bytes() == current, "the previous database is back in place"
    assert host.count() == 2
    with contextlib.closing(sqlite3.connect(aside / "restored" / "events.db")) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert host.systemctl_calls()[-2:] == ["start choiros-backend.service",
                                           "start choiros-litestream.service"]


def test_a_swap_that_fails_halfway_puts_the_previous_database_back(
        host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    host.write("one")
    host.replicate("-force-snapshot")
    host.write("two")
    current = host.db.read_bytes()
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(dst) == host.db and ".restore-" in str(src):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(cb.os, "rename", rename)
    code, _, err = host.run(cb.restore_main, "--latest", capsys=capsys)
    assert code == tool.BROKEN, err
    assert "could not swap the restored database in" in err and "previous files are back" in err
    assert host.db.read_bytes() == current
    assert host.systemctl_calls()[-2:] == ["start choiros-backend.service",
                                           "start choiros-litestream.service"]


def test_restore_at_boot_restores_only_an_absent_database_from_an_existing_replica(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = host.run(cb.restore_at_boot_main, capsys=capsys)
    assert code == tool.OK, err
    assert "no replica" in out and "first host" in out and not host.db.exists()
    host.write("one", "two")
    host.replicate("-force-snapshot")
    code, out, _ = host.run(cb.restore_at_boot_main, capsys=capsys)
    assert code == tool.OK and "is present; nothing to restore" in out
    for name in ("events.db", "events.db-wal", "events.db-shm"):
        (host.db.parent / name).unlink(missing_ok=True)
    code, out, err = host.run(cb.restore_at_boot_main, capsys=capsys)
    assert code == tool.OK, err
    assert "restored" in out and host.count() == 2
    assert host.db.stat().st_mode & 0o777 == 0o640
    assert not [p for p in host.db.parent.iterdir() if p.name.startswith(".restore-")]


def test_restore_at_boot_refuses_a_corrupt_replica_so_the_backend_stays_down(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("x", table="not_events")
    host.replicate("-force-snapshot")
    for name in ("events.db", "events.db-wal", "events.db-shm"):
        (host.db.parent / name).unlink(missing_ok=True)
    code, _, err = host.run(cb.restore_at_boot_main, capsys=capsys)
    assert code == tool.REFUSED and "tables missing: events" in err
    assert not host.db.exists()


# -- putting a file back: --from-file and --undo


def _copy_with(host: Host, path: Path, *bodies: str) -> Path:
    """A separate database at ``path`` holding exactly ``bodies`` (a manual copy)."""
    host.write(*bodies, path=path)
    return path


def _aside(host: Host) -> list[Path]:
    return sorted(p for p in host.db.parent.iterdir() if p.name.startswith("pre-restore-"))


def _untouched(host: Host) -> dict[str, bytes]:
    """The data directory's files and set-aside directories, to compare before and after."""
    return {str(p.relative_to(host.db.parent)): p.read_bytes()
            for p in host.db.parent.rglob("*") if p.is_file()}


def test_from_file_swaps_a_manual_copy_in_and_keeps_the_current_database(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("current one", "current two")
    old = host.db.read_bytes()
    copy = tmp_path / "copy.db"
    # A copy taken from a live database: its newest writes are still in its -wal.
    with contextlib.closing(sqlite3.connect(copy)) as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
        writer.executemany("INSERT INTO events (body) VALUES (?)", [(f"c{n}",) for n in range(5)])
        writer.commit()
        assert Path(f"{copy}-wal").stat().st_size > 0
        copied = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("copy")}
        code, out, err = host.run(cb.restore_main, "--from-file", str(copy), capsys=capsys)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()
                if p.name.startswith("copy")} == copied, "the operator's copy is left as it was"
    assert code == tool.OK, err + out
    assert f"restore: from the file {copy}" in out
    assert "the copy is sound" in out and "events: 5 rows" in out, out
    assert host.count() == 5, "the copy is live, with the writes that were in its -wal"
    assert not Path(f"{host.db}-wal").exists() or host.count() == 5
    assert host.db.stat().st_mode & 0o777 == 0o640
    (aside,) = _aside(host)
    assert (aside / "events.db").read_bytes() == old, "the replaced database is kept"
    assert host.systemctl_calls() == [
        "stop choiros-litestream.service", "stop choiros-backend.service",
        "start choiros-backend.service", "start choiros-litestream.service"]
    assert not [p for p in host.db.parent.iterdir() if p.name.startswith(".restore-")]


def test_from_file_refuses_a_bad_copy_and_changes_nothing(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("current")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    other = _copy_with(host, tmp_path / "other.db", "x")
    with contextlib.closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("ALTER TABLE events RENAME TO not_events")
    before = _untouched(host)
    cases = [
        (garbage, tool.REFUSED, f"Error: {garbage} is unusable: "),
        (other, tool.REFUSED, f"Error: {other} is unusable: tables missing: events"),
        (tmp_path / "missing.db", tool.USAGE, f"Error: {tmp_path / 'missing.db'}: no such file"),
        (host.db, tool.USAGE, f"Error: {host.db} is the live database"),
    ]
    for path, expected, message in cases:
        code, _, err = host.run(cb.restore_main, "--from-file", str(path), capsys=capsys)
        assert code == expected, err
        assert err.startswith(message), err
        assert "\nTry: " in err, err
    _, _, err = host.run(cb.restore_main, "--from-file", str(garbage), capsys=capsys)
    assert f"Try: the copy is damaged: use another (check it with sqlite3 -readonly {garbage}" \
        in err and "nothing was changed" in err
    assert _untouched(host) == before
    assert host.systemctl_calls() == [], "nothing was stopped"
    assert not [p for p in host.db.parent.iterdir() if p.name.startswith(".restore-")]


def test_from_file_verify_only_checks_the_copy_and_changes_nothing(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("current")
    copy = _copy_with(host, tmp_path / "copy.db", "a", "b")
    before = _untouched(host)
    code, out, err = host.run(cb.restore_main, "--from-file", str(copy), "--verify-only",
                              "--scratch", str(tmp_path), capsys=capsys)
    assert code == tool.OK, err
    assert "the copy is sound" in out and "events: 2 rows" in out
    assert "--verify-only: nothing was changed" in out
    assert _untouched(host) == before and host.systemctl_calls() == []


def test_undo_puts_back_what_a_restore_set_aside(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("before one", "before two")
    copy = _copy_with(host, tmp_path / "copy.db", *[f"copy {n}" for n in range(7)])
    code, out, err = host.run(cb.restore_main, "--from-file", str(copy), capsys=capsys)
    assert code == tool.OK and host.count() == 7, err + out
    (first,) = _aside(host)
    kept = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    code, out, err = host.run(cb.restore_main, "--undo", first.name, capsys=capsys)
    assert code == tool.OK, err + out
    assert f"restore: undo: the database set aside in {first}/" in out
    assert host.count() == 2, "the state before the first restore is back"
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == kept, \
        "the set-aside directory stays as it was: the undo can be repeated"
    second = [p for p in _aside(host) if p != first]
    assert len(second) == 1 and host.count(second[0] / "events.db") == 7, \
        "what the undo replaced is set aside too: the undo can itself be undone"
    code, _, err = host.run(cb.restore_main, "--undo", str(second[0]), capsys=capsys)
    assert code == tool.OK and host.count() == 7, err


def test_undo_with_a_wrong_name_lists_the_set_aside_ones_and_changes_nothing(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("current")
    code, _, err = host.run(cb.restore_main, "--undo", "pre-restore-20260101T000000Z",
                            capsys=capsys)
    assert code == tool.USAGE and "no restore has set a database aside" in err, err
    code, _, err = host.run(cb.restore_main, "--from-file",
                            str(_copy_with(host, tmp_path / "c.db", "c")), capsys=capsys)
    assert code == tool.OK, err
    (aside,) = _aside(host)
    (host.db.parent / "pre-restore-20250101T000000Z").mkdir()  # empty: not offered
    calls, before = host.systemctl_calls(), _untouched(host)
    for wrong in ("pre-restore-20260101T000000Z", "pre-restore-20250101T000000Z",
                  f"../{aside.name}", str(tmp_path / aside.name), "events.db"):
        code, _, err = host.run(cb.restore_main, "--undo", wrong, capsys=capsys)
        assert code == tool.USAGE, err
        assert err.startswith(f"Error: --undo {wrong}: not a set-aside database; "
                              f"{host.db.parent}/ holds {aside.name}\n"), err
        assert f"Try: choiros-restore --undo {aside.name} (the newest)" in err, err
    assert _untouched(host) == before and host.systemctl_calls() == calls


def test_set_aside_directories_sort_oldest_first(host: Host) -> None:
    for name in ("pre-restore-20260102T000000Z", "pre-restore-20260101T000000Z-10",
                 "pre-restore-20260101T000000Z-2", "pre-restore-20260101T000000Z",
                 "pre-restore-x", "restored"):
        (host.db.parent / name).mkdir()
        (host.db.parent / name / "events.db").write_bytes(b"")
    assert cb.set_aside(host.cfg) == [
        "pre-restore-20260101T000000Z", "pre-restore-20260101T000000Z-2",
        "pre-restore-20260101T000000Z-10", "pre-restore-20260102T000000Z"]


# -- choiros-backup --now


@contextlib.contextmanager
def _replicating(host: Host, sync_interval: str) -> Iterator[None]:
    """`litestream replicate` running as choiros-litestream.service does, with its control
    socket, at ``sync_interval`` (long: only an asked-for sync uploads anything)."""
    config = Path(host.cfg.litestream_config)
    text = config.read_text()
    config.write_text(text.replace("sync-interval: 1s", f"sync-interval: {sync_interval}"))
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    daemon = subprocess.Popen([str(LITESTREAM.local_file()), "replicate", "-config",
                               str(config)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not Path(host.cfg.litestream_socket).exists():
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            assert time.monotonic() < deadline, "litestream opened no control socket"
            time.sleep(0.1)
        yield
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        config.write_text(text)


def _replica_count(host: Host, tmp_path: Path) -> int:
    out = tmp_path / "from-replica.db"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    done = subprocess.run([str(LITESTREAM.local_file()), "restore", "-config",
                           str(host.cfg.litestream_config), "-o", str(out), str(host.db)],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return host.count(out)


def test_backup_now_puts_the_newest_write_in_the_replica(
        host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("one")
    with _replicating(host, "1h"):
        code, out, err = host.run(cb.backup_main, "--now", capsys=capsys)
        assert code == tool.OK, err
        host.write("two", "three")  # an hour before the next scheduled sync
        code, out, err = host.run(cb.backup_main, "--now", capsys=capsys)
    assert code == tool.OK, err
    lines = out.splitlines()
    assert lines[0] == (f"backup: syncing {host.db} to s3://{BUCKET}/{host.cfg.backup_prefix} "
                        "(waiting up to 120s)"), out
    assert lines[1].startswith(f"backup: s3://{BUCKET}/{host.cfg.backup_prefix} holds every "
                               "change up to TXID "), out
    assert _replica_count(host, tmp_path) == 3, "the replica holds the newest write"


def test_backup_now_refuses_without_running_replication_or_a_database(
        host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = host.run(cb.backup_main, "--now", capsys=capsys)
    assert code == tool.REFUSED
    assert err.startswith(f"Error: there is no database at {host.db}: nothing to back up"), err
    host.write("one")
    monkeypatch.setenv("FAKE_ACTIVE", "3")
    code, _, err = host.run(cb.backup_main, "--now", capsys=capsys)
    assert code == tool.REFUSED
    assert err.startswith("Error: choiros-litestream.service is not running"), err
    assert "Try: sudo systemctl start choiros-litestream.service" in err
    monkeypatch.setenv("FAKE_ACTIVE", "0")  # said to run, but nothing listens on the socket
    code, out, err = host.run(cb.backup_main, "--now", "--timeout", "5", capsys=capsys)
    assert code == tool.REFUSED, err
    assert out.startswith("backup: syncing") and err.startswith("Error: litestream sync failed:")
    assert "journalctl -u choiros-litestream.service" in err
    code, _, err = host.run(cb.backup_main, "--now", "--timeout", "0", capsys=capsys)
    assert code == tool.USAGE and "--timeout 0 is not a positive number" in err, err
    with pytest.raises(SystemExit) as exited:
        cb.backup_main(["--config", str(host.root / "host.json")])
    assert exited.value.code == tool.USAGE, "--now is required"
    assert not list(host.db.parent.glob(".*litestream*")), "nothing replicated"


def test_copy_uploads_a_checked_copy_that_from_file_puts_back(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("one", "two", "three")
    code, out, err = host.run(cb.backup_main, "--copy", capsys=capsys)
    assert code == tool.OK, err
    assert "backup: the copy is sound: " in out and "events: 3 rows" in out, out
    url = out.splitlines()[-1].removeprefix("backup: uploaded ")
    assert url.startswith(f"s3://{BUCKET}/{host.cfg.backup_prefix}manual/events-"), out
    key = url.removeprefix(f"s3://{BUCKET}/")
    assert host.s3().head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0
    assert not [p for p in host.db.parent.iterdir() if p.name.startswith(".copy-")]
    assert host.systemctl_calls() == [], "the backend keeps running"
    host.write("four")
    before = _untouched(host)
    code, out, err = host.run(cb.restore_main, "--verify-only", "--from-file", url,
                              "--scratch", str(host.root), capsys=capsys)
    assert code == tool.OK and "events: 3 rows" in out and "nothing was changed" in out, err
    assert _untouched(host) == before
    code, out, err = host.run(cb.restore_main, "--from-file", url, capsys=capsys)
    assert code == tool.OK, err + out
    assert f"restore: downloading {url}" in out
    assert host.count() == 3, "the uploaded state is back"


def test_from_file_refuses_a_missing_or_malformed_s3_copy_and_changes_nothing(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("current")
    before = _untouched(host)
    missing = f"s3://{BUCKET}/{host.cfg.backup_prefix}manual/events-20000101T000000Z.db"
    for verify in ((), ("--verify-only",)):
        code, _, err = host.run(cb.restore_main, *verify, "--from-file", missing, capsys=capsys)
        assert code == tool.REFUSED and err.startswith(f"Error: {missing} does not exist"), err
    assert f"aws s3 ls s3://{BUCKET}/{host.cfg.backup_prefix}manual/" in err
    for malformed in (f"s3://{BUCKET}", f"s3://{BUCKET}/", "s3:///key"):
        code, _, err = host.run(cb.restore_main, "--from-file", malformed, capsys=capsys)
        assert code == tool.USAGE and "not an object URL" in err, err
    host.s3().put_object(Bucket=BUCKET, Key=f"{host.cfg.backup_prefix}manual/bad.db",
                         Body=b"not a database" * 100)
    code, _, err = host.run(cb.restore_main, "--from-file",
                            f"s3://{BUCKET}/{host.cfg.backup_prefix}manual/bad.db",
                            capsys=capsys)
    assert code == tool.REFUSED and "is unusable" in err, err
    assert _untouched(host) == before and host.systemctl_calls() == []
    assert not [p for p in host.db.parent.iterdir() if p.name.startswith(".restore-")]


def test_copy_refuses_without_a_database_or_room(
        host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = host.run(cb.backup_main, "--copy", capsys=capsys)
    assert code == tool.REFUSED and "there is no database" in err, err
    host.write("one")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cb.shutil, "disk_usage", lambda path: usage(1 << 30, 0, 1 << 20))
    code, _, err = host.run(cb.backup_main, "--copy", capsys=capsys)
    assert code == tool.REFUSED and "no room for a copy: it needs 64 MiB free" in err, err
    assert not host.s3().list_objects_v2(Bucket=BUCKET, Prefix=host.cfg.backup_prefix).get(
        "Contents"), "nothing was uploaded"


@pytest.mark.parametrize(("script", "options"), [
    ("choiros-backup", ("--now", "--copy", "--timeout SECONDS")),
    ("choiros-restore", ("--latest", "--at TIMESTAMP", "--from-file PATH",
                         "--undo pre-restore-<time>", "--verify-only", "--scratch DIR"))])
def test_the_scripts_help_names_every_option_and_the_exit_codes(
        script: str, options: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, str(TOOLS / script), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script} ")
    for option in options:
        assert option in done.stdout, option
    assert done.stdout.rstrip().endswith(tool.EXIT_CODES)


# -- freshness


def test_backup_age_is_zero_when_the_replica_has_every_change(host: Host) -> None:
    assert cb.backup_age(host.cfg) == 0.0, "no database: nothing to protect"
    host.write("one")
    age = cb.backup_age(host.cfg, active=lambda cfg: True)
    assert age > 0 and age < 60, "a database no upload ever captured ages from its last change"
    host.replicate("-force-snapshot")
    assert cb.backup_age(host.cfg, active=lambda cfg: True) == 0.0
    later = datetime.now(UTC) + timedelta(hours=2)
    assert cb.backup_age(host.cfg, later, active=lambda cfg: True) == 0.0, "idle stays fresh"
    stale = cb.backup_age(host.cfg, later, active=lambda cfg: False)
    assert 7100 < stale < 7300, "replication stopped: the age of the newest upload"


def test_backup_age_counts_changes_litestream_has_not_uploaded(host: Host) -> None:
    host.write("one")
    host.replicate("-force-snapshot")
    local = host.db.parent / ".events.db-litestream" / "ltx" / "0"
    local.mkdir(parents=True, exist_ok=True)
    pending = local / f"{'0' * 15}f-{'0' * 14}ff.ltx"
    pending.write_bytes(b"not uploaded")
    os.utime(pending, (time.time() - 300, time.time() - 300))
    age = cb.backup_age(host.cfg, active=lambda cfg: True)
    assert 299 < age < 330, age
    pending.unlink()
    assert cb.backup_age(host.cfg, active=lambda cfg: True) == 0.0
    host.write("two")  # a change Litestream never picked up, a minute after the newest upload
    os.utime(host.db, (time.time() + 60, time.time() + 60))  # (the WAL was checkpointed away)
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert 590 < cb.backup_age(host.cfg, later, active=lambda cfg: True) < 620


def test_freshness_publishes_the_metric_with_the_host_dimension(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write("one")
    host.replicate("-force-snapshot")
    code, out, err = host.run(cb.freshness_main, capsys=capsys)
    assert code == tool.OK, err
    assert out.startswith("ChoirOS/BackupAgeSeconds Host=choiros-unit: "), out
    stats = host.s3("cloudwatch").get_metric_statistics(
        Namespace="ChoirOS", MetricName="BackupAgeSeconds",
        Dimensions=[{"Name": "Host", "Value": "choiros-unit"}],
        StartTime=datetime.now(UTC) - timedelta(minutes=5),
        EndTime=datetime.now(UTC) + timedelta(minutes=5), Period=60, Statistics=["Maximum"])
    assert stats["Datapoints"], stats
    assert stats["Datapoints"][0]["Unit"] == "Seconds"


# -- the artifact bootstrap


@pytest.fixture(scope="module")
def fetch() -> ModuleType:
    path = TOOLS / "choiros-fetch-artifacts"
    loader = importlib.machinery.SourceFileLoader("choiros_fetch_artifacts", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_bootstrap_installs_checked_artifacts_and_refuses_a_mismatch(
        tmp_path: Path, moto_url: str, fetch: ModuleType,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                      aws_access_key_id=KEY, aws_secret_access_key=KEY)
    s3.create_bucket(Bucket="choiros-unit-artifacts",
                     CreateBucketConfiguration={"LocationConstraint": REGION})
    good, bad = b"#!/bin/sh\necho good\n", b"tampered\n"
    s3.put_object(Bucket="choiros-unit-artifacts", Key="host-tools/x/good", Body=good)
    s3.put_object(Bucket="choiros-unit-artifacts", Key="host-tools/y/bad", Body=bad)
    me = _me()
    entries = [
        {"path": str(tmp_path / "bin" / "good"), "key": "host-tools/x/good", "mode": "0755",
         "sha256": hashlib.sha256(good).hexdigest(), "owner": f"{me}:{me}"},
        {"path": str(tmp_path / "bin" / "bad"), "key": "host-tools/y/bad", "mode": "0755",
         "sha256": hashlib.sha256(b"what was rendered").hexdigest(), "owner": f"{me}:{me}"},
    ]
    (tmp_path / "artifacts.json").write_text(json.dumps(entries))
    (tmp_path / "host.json").write_text(json.dumps({
        "region": REGION, "artifacts_bucket": "choiros-unit-artifacts",
        "aws": {"endpoint_url": moto_url}}))
    monkeypatch.setenv("CHOIROS_HOST_CONFIG", str(tmp_path / "host.json"))
    # A wrong sha256 is final (4); choiros-retry does not wait for it.
    assert fetch.main(str(tmp_path / "artifacts.json")) == 4
    installed = tmp_path / "bin" / "good"
    assert installed.read_bytes() == good and installed.stat().st_mode & 0o777 == 0o755
    assert not (tmp_path / "bin" / "bad").exists(), "a mismatch is never installed"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["good"], "no temp files"
    (tmp_path / "artifacts.json").write_text(json.dumps(entries[:1]))
    mtime = installed.stat().st_mtime_ns
    assert fetch.main(str(tmp_path / "artifacts.json")) == 0
    assert installed.stat().st_mtime_ns == mtime, "an installed artifact is left alone"
    # An object not there (yet) is a failed download (3), which the converge retries.
    missing = [{**entries[0], "path": str(tmp_path / "bin" / "later"), "key": "host-tools/z/l"}]
    (tmp_path / "artifacts.json").write_text(json.dumps(missing))
    assert fetch.main(str(tmp_path / "artifacts.json")) == 3
    s3.put_object(Bucket="choiros-unit-artifacts", Key="host-tools/z/l", Body=good)
    assert fetch.main(str(tmp_path / "artifacts.json")) == 0


def test_the_bootstrap_runs_as_a_script_with_the_host_python(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(TOOLS / "choiros-fetch-artifacts"),
                           str(tmp_path / "missing.json")], capture_output=True, text=True,
                          env={**os.environ, "CHOIROS_HOST_CONFIG": str(tmp_path / "none")},
                          timeout=60, check=False)
    assert done.returncode == 2 and done.stderr.startswith("Error: cannot read"), done.stderr



def test_a_tmpfs_scratch_counts_only_the_memory_the_host_can_spare(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/shm is memory: a copy there must leave MEMORY_RESERVE to the backend."""
    shm = Path("/dev/shm")
    assert cb.in_memory(shm)
    monkeypatch.setattr(cb, "available_memory", lambda: cb.MEMORY_RESERVE + (100 << 20))
    assert cb.scratch_for(host.cfg, 10 << 20, shm) == shm
    with pytest.raises(tool.ToolError, match="no room to verify the backup"):
        cb.scratch_for(host.cfg, 50 << 20, shm)
