"""Library of the ChoirOS backup tools choiros-restore, choiros-restore-at-boot,
choiros-backup and choiros-backup-freshness.

Installed as /usr/local/lib/choiros/choiros_backup.py beside choiros_tool.py (config, errors,
AWS clients, the deploy lock, the health wait). Needs Debian 12's python3 (sqlite3 is in the
standard library), python3-boto3 for the metric, and the pinned Litestream binary the
converge installed.

The event store (host.json `database`) is replicated by choiros-litestream.service to
s3://<backups_bucket>/<backup_prefix> as Litestream 0.5 LTX files: <prefix>0000/ holds one
file per sync (level 0, the newest always kept), 0001..0003/ compactions, 0009/ snapshots.
A restored copy is accepted only when `PRAGMA integrity_check` says ok and every table in
host.json `expected_tables` exists; otherwise nothing on the host changes.

choiros-restore [--latest | --at TIMESTAMP] [--verify-only [--scratch DIR]]
  restores into a temporary file in the data directory and checks it. --verify-only (what
  verify and the daily drift run use) takes no deploy lock and restores into scratch space off
  the data filesystem (/dev/shm, else /var/tmp, or --scratch DIR), refusing when the copy would
  not fit there with a margin (in a tmpfs, also within the memory the host has available, less
  MEMORY_RESERVE): a check never blocks a deploy, fills the data disk or starves the backend.
  Otherwise: stop replication and the backend, move the database, its -wal/-shm and
  Litestream's state (.events.db-litestream) to data/pre-restore-<UTC time>/ (never deleted),
  move the restored copy in (owner app_user, 0640), start the backend and health-check it, start
  replication again. If the backend is unhealthy on the restored copy, the earlier files are
  put back (the restored copy stays in pre-restore-<time>/restored/) and the exit code is 1.
choiros-restore --from-file PATH|s3://URL | --undo pre-restore-<time> [--verify-only]
  puts a copy of the database in place the same way: a manual copy (e.g. `sqlite3 .backup`),
  or the database an earlier restore set aside. The copy (with its -wal, if one is beside it)
  is copied into the data directory and checked there first, so the operator's file and the
  set-aside directory stay as they are, and a bad copy changes nothing. What it replaces is set
  aside in a new pre-restore-<time>/, so an undo can itself be undone.
choiros-backup --now [--timeout SECONDS]
  asks the running replication, through Litestream's control socket (host.json
  `litestream_socket`), to sync at once (`litestream sync -wait`), then checks in the bucket
  that the newest level-0 file holds the database's newest transaction.
choiros-backup --copy
  uploads a checked copy (SQLite's online backup, made as app_user) to
  s3://<backups_bucket>/<backup_prefix>manual/<db name>-<UTC time>.db, which
  `choiros-restore --from-file s3://...` puts back.
choiros-restore-at-boot
  (choiros-restore-at-boot.service, before the backend) restores the latest replica when the
  database is absent and a replica exists; with no replica (the stack's first host) it does
  nothing. Transient S3 errors are retried for BOOT_RETRY_SECONDS.
choiros-backup-freshness
  publishes <metrics_namespace>/<backup_age_metric> (dimension <metrics_dimension>=<hostname>), see
  backup_age().
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__:  # in the repository; on the host, a sibling module
    from provisioning.host_tools.choiros_tool import (
        BROKEN,
        OK,
        REFUSED,
        UNDONE,
        USAGE,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        locked,
        run_tool,
        wait_healthy,
    )
else:
    from choiros_tool import (
        BROKEN,
        OK,
        REFUSED,
        UNDONE,
        USAGE,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        locked,
        run_tool,
        wait_healthy,
    )

LEVEL0, SNAPSHOT_LEVEL = 0, 9
BOOT_RETRY_SECONDS = 600.0
LITESTREAM_TIMEOUT = 3600.0  # a restore downloads the whole database


@dataclass(frozen=True)
class ReplicaFile:
    """One LTX file of the replica, as `litestream ltx -json` lists it."""

    level: int
    min_txid: int
    max_txid: int
    size: int
    timestamp: datetime


@dataclass(frozen=True)
class Checked:
    """A restored copy that passed the checks."""

    path: Path
    size: int
    tables: tuple[str, ...]
    rows: dict[str, int]

    def describe(self) -> str:
        rows = ", ".join(f"{t}: {n} rows" for t, n in self.rows.items())
        return f"{self.size} bytes, tables {', '.join(self.tables)}" + (f" ({rows})" * bool(rows))


def _systemctl(*args: str) -> str | None:
    """Run systemctl ($CHOIROS_SYSTEMCTL in tests): None, or why it failed."""
    cmd = [os.environ.get("CHOIROS_SYSTEMCTL", "systemctl"), *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)} failed: {e}"
    return f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-300:]}" if r.returncode \
        else None


def replica_url(cfg: Config) -> str:
    return f"s3://{cfg.backups_bucket}/{cfg.backup_prefix}"


def _litestream(cfg: Config, *args: str, daemon: bool = False,
                timeout: float = LITESTREAM_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `litestream <command> -config <litestream_config> ... <database>`, or with
    ``daemon`` `litestream <command> -socket <litestream_socket> ... <database>` (a command
    the running replication answers through its control socket)."""
    if not cfg.backups_bucket or not cfg.backup_prefix:
        raise ToolError("backups_bucket and backup_prefix are not set", "fix host.json", USAGE)
    # Litestream 0.5.17 refuses to start when AWS_CA_BUNDLE is set ("unable to add custom
    # RootCAs"); hosts never set it, some workstations do.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    where = ["-socket", str(cfg.litestream_socket)] if daemon else [
        "-config", str(cfg.litestream_config), "-no-expand-env"]
    cmd = [str(cfg.litestream), args[0], *where, *args[1:], str(cfg.database)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                              timeout=timeout)
    except FileNotFoundError as e:
        raise ToolError(f"{cfg.litestream} is missing", "rerun the converge "
                        "(/usr/local/sbin/choiros-fetch-artifacts installs it)", BROKEN) from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError(f"litestream {args[0]} failed: {e}", "see above") from e


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-400:] if lines else "no output"


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def replica_files(cfg: Config) -> list[ReplicaFile]:
    """Every LTX file of the replica, all levels; empty when there is no replica yet."""
    r = _litestream(cfg, "ltx", "-level", "all", "-json")
    if r.returncode:
        raise ToolError(f"cannot list the replica {replica_url(cfg)}: {_last_line(r.stderr)}",
                        "check the network, the instance role and the bucket")
    try:
        rows = json.loads(r.stdout or "[]") or []
        return [ReplicaFile(int(f["level"]), int(f["min_txid"], 16), int(f["max_txid"], 16),
                            int(f["size"]), _parse_time(f["timestamp"])) for f in rows]
    except (ValueError, KeyError, TypeError) as e:
        raise ToolError(f"unexpected `litestream ltx` output ({e})", "check the litestream "
                        "binary is the pinned version", BROKEN) from e


# `litestream ltx` lists each file's time to the whole second; it was written within the second
# that follows.
LISTED_TO = timedelta(seconds=1)


def restorable_range(files: list[ReplicaFile]) -> tuple[datetime, datetime]:
    """(oldest, newest): the first whole second after the oldest snapshot was written, and
    the second the newest file was listed at. Not the snapshot's listed second itself: for a
    moment earlier in that second than the write, Litestream finds no backup at all."""
    snapshots = [f.timestamp for f in files if f.level == SNAPSHOT_LEVEL]
    oldest = min(snapshots or [f.timestamp for f in files]) + LISTED_TO
    return oldest, max(f.timestamp for f in files)


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 / RFC 3339; a time without zone is UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise ToolError(f"--at {text!r} is not a timestamp", "use ISO 8601 in UTC, e.g. "
                        "2026-01-31T14:05:00Z", USAGE) from e
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


BACKUP_MAY_BE_CORRUPT = ("the backup may be corrupt: try an earlier --at, and keep the "
                         "current database (nothing was changed)")


def check_database(path: Path, expected_tables: tuple[str, ...], what: str = "the restored "
                   "database", hint: str = BACKUP_MAY_BE_CORRUPT) -> Checked:
    """The checks a copy must pass before it may replace anything."""

    def bad(why: str) -> ToolError:
        return ToolError(f"{what} is unusable: {why}", hint)

    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            tables = tuple(sorted(row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")))
            if result != ["ok"]:
                raise bad(f"integrity_check says {'; '.join(map(str, result))[:300]}")
            if missing := sorted(set(expected_tables) - set(tables)):
                raise bad(f"tables missing: {', '.join(missing)}")
            rows = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # noqa: S608 - names from sqlite_master
                    for t in expected_tables}
    except sqlite3.Error as e:
        raise bad(str(e)) from e
    return Checked(path, path.stat().st_size, tables, rows)


# Free space a verify copy must leave in its scratch directory.
SCRATCH_MARGIN = 64 << 20
# mkdtemp makes a private (0700) directory inside them, so sharing them is safe.
SCRATCH_CANDIDATES = (Path("/dev/shm"), Path("/var/tmp"))  # noqa: S108


def copy_size(cfg: Config, files: list[ReplicaFile]) -> int:
    """What a restored copy needs at most: the live database and its WAL, or without one
    every file of the replica."""
    live = sum(p.stat().st_size for p in (cfg.database, Path(f"{cfg.database}-wal"))
               if p.is_file())
    return live or sum(f.size for f in files)


# Memory a verify copy in a tmpfs must leave to the backend and the rest of the host.
MEMORY_RESERVE = 512 << 20


def in_memory(place: Path) -> bool:
    """Whether ``place`` is on a tmpfs (its mount in /proc/self/mounts)."""
    best, fstype = "", ""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    resolved = str(place.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and (resolved == fields[1] or resolved.startswith(
                fields[1].rstrip("/") + "/")) and len(fields[1]) >= len(best):
            best, fstype = fields[1], fields[2]
    return fstype == "tmpfs"


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, in bytes (0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def scratch_for(cfg: Config, needed: int, given: Path | None) -> Path:
    """Where a verify copy goes: ``given``, or the first candidate off the data filesystem,
    with room for ``needed`` bytes and the margin; ToolError when none has."""
    data_dev = cfg.database.parent.stat().st_dev
    candidates = [given] if given else [c for c in SCRATCH_CANDIDATES if c.is_dir()
                                        and c.stat().st_dev != data_dev]
    for place in candidates:
        try:
            free = shutil.disk_usage(place).free
        except OSError as e:
            raise ToolError(f"--scratch {place}: {e.strerror}", "give an existing directory",
                            USAGE) from e
        if in_memory(place):  # a tmpfs: the copy takes memory the backend may need
            free = min(free, available_memory() - MEMORY_RESERVE)
        if free >= needed + SCRATCH_MARGIN:
            return place
    mib = (needed + SCRATCH_MARGIN) >> 20
    where = str(given) if given else ", ".join(map(str, SCRATCH_CANDIDATES)) + " (off the data " \
        "filesystem)"
    raise ToolError(f"no room to verify the backup: it needs {mib} MiB free in {where}",
                    f"choiros-restore --verify-only --scratch DIR with {mib} MiB free on another "
                    "filesystem; nothing was changed")


@contextlib.contextmanager
def restored_copy(cfg: Config, at: datetime | None, scratch: Path | None = None
                  ) -> Iterator[Checked]:
    """Restore (latest, or as of `at`) into a temporary directory in the data directory (or
    in ``scratch``) and check it; the directory is removed afterwards unless its database was
    moved out."""
    tmp = Path(tempfile.mkdtemp(prefix=".restore-", dir=scratch or cfg.database.parent))
    try:
        out = tmp / cfg.database.name
        args = ["restore", "-o", str(out)]
        if at is not None:
            args += ["-timestamp", at.strftime("%Y-%m-%dT%H:%M:%SZ")]
        r = _litestream(cfg, *args)
        if r.returncode or not out.is_file():
            raise ToolError(f"litestream could not restore from {replica_url(cfg)}: "
                            f"{_last_line(r.stderr or r.stdout)}",
                            "the backup may be corrupt or unreachable; nothing was changed")
        for sidecar in ("-wal", "-shm"):  # a clean copy is one file
            Path(f"{out}{sidecar}").unlink(missing_ok=True)
        yield check_database(out, cfg.expected_tables)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _retry(what: Callable[[], list[ReplicaFile]], seconds: float) -> list[ReplicaFile]:
    deadline, delay = time.monotonic() + seconds, 5.0
    while True:
        try:
            return what()
        except ToolError as e:
            if e.code != REFUSED or time.monotonic() + delay > deadline:
                raise
            print(f"{e}; retrying in {delay:g}s", flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 60.0)


def restore_at_boot(cfg: Config, retry_seconds: float = BOOT_RETRY_SECONDS) -> int:
    db = cfg.database
    if any(Path(f"{db}{s}").exists() for s in ("", "-wal")):
        print(f"{db} is present; nothing to restore")
        return OK
    files = _retry(lambda: replica_files(cfg), retry_seconds)
    if not files:
        print(f"no replica at {replica_url(cfg)}: this is the stack's first host; "
              "nothing to restore")
        return OK
    started = time.monotonic()
    with restored_copy(cfg, None) as checked:
        checked.path.chmod(0o640)
        os.rename(checked.path, db)
        _fsync_dir(db.parent)
    print(f"restored {db} from {replica_url(cfg)} in {time.monotonic() - started:.1f}s: "
          f"{checked.describe()}")
    return OK


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _owned_files(db: Path) -> list[str]:
    """The names in the data directory that belong to the database (and Litestream)."""
    return [db.name, f"{db.name}-wal", f"{db.name}-shm", f".{db.name}-litestream"]


def _move(names: list[str], src: Path, dst: Path) -> list[str]:
    moved = []
    for name in names:
        if (src / name).exists() or (src / name).is_symlink():
            os.rename(src / name, dst / name)
            moved.append(name)
    return moved


def _new_dir(parent: Path, name: str) -> Path:
    """parent/name, or parent/name-2, -3, ... if taken (never reuse a kept directory)."""
    for n in range(1, 1000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        with contextlib.suppress(FileExistsError):
            path.mkdir(0o750)
            return path
    raise ToolError(f"too many {name}* directories in {parent}", "move old ones away")


def swap_in(cfg: Config, checked: Checked, now: datetime) -> int:
    """Stop, move the current database aside, move the checked copy in, start, check."""
    db, data = cfg.database, cfg.database.parent
    user = pwd.getpwnam(cfg.app_user)
    deployed = (cfg.app_root / "current" / "sandbox").is_file()
    aside = _new_dir(data, f"pre-restore-{now.strftime('%Y%m%dT%H%M%SZ')}")
    os.chown(aside, user.pw_uid, user.pw_gid)
    for unit in (cfg.litestream_unit, cfg.backend_unit):
        if why := _systemctl("stop", unit):
            _systemctl("start", cfg.backend_unit)
            _systemctl("start", cfg.litestream_unit)
            aside.rmdir()
            raise ToolError(f"cannot stop {unit}: {why}; nothing was changed",
                            f"systemctl status {unit}")
    moved: list[str] = []
    try:
        moved = _move(_owned_files(db), data, aside)
        os.chown(checked.path, user.pw_uid, user.pw_gid)
        checked.path.chmod(0o640)
        os.rename(checked.path, db)
        _fsync_dir(data)
    except OSError as e:
        back = _move(moved, aside, data) if not db.exists() else []
        _systemctl("start", cfg.backend_unit)
        _systemctl("start", cfg.litestream_unit)
        raise ToolError(f"could not swap the restored database in: {e}; "
                        + ("the previous files are back" if back == moved else
                           f"the previous files are in {aside}/"),
                        f"check {data} (space, permissions) and systemctl status "
                        f"{cfg.backend_unit}", BROKEN) from e
    print(f"restore: the previous database is in {aside}/ ({', '.join(moved) or 'none'})")
    reason = None
    if deployed:
        reason = _systemctl("start", cfg.backend_unit) or wait_healthy(
            cfg.health_url, cfg.health_timeout_seconds)
    if reason is None:
        if why := _systemctl("start", cfg.litestream_unit):
            raise ToolError(f"the database was restored but replication did not start: {why}",
                            f"systemctl start {cfg.litestream_unit}", BROKEN)
        print(f"restore: {db} is restored ({checked.describe()}); "
              + ("the backend is healthy" if deployed else "no release is deployed yet")
              + "; replication is running")
        return OK
    print(f"restore: the backend is unhealthy on the restored database ({reason}); "
          "putting the previous one back")
    _systemctl("stop", cfg.backend_unit)
    (aside / "restored").mkdir(0o750)
    _move(_owned_files(db), data, aside / "restored")
    _move(moved, aside, data)
    again = _systemctl("start", cfg.backend_unit) or wait_healthy(
        cfg.health_url, cfg.health_timeout_seconds)
    _systemctl("start", cfg.litestream_unit)
    if again:
        raise ToolError(f"restore failed its health check ({reason}), and the previous "
                        f"database is unhealthy too ({again})",
                        cfg.backend_logs, BROKEN)
    raise ToolError(f"restore failed its health check ({reason}); the previous database is "
                    f"back and healthy; the restored copy is in {aside}/restored/",
                    cfg.backend_logs, UNDONE)


def restore(cfg: Config, at: datetime | None, verify_only: bool,
            scratch: Path | None = None) -> int:
    """Restore the database, or with ``verify_only`` only prove a backup restores: then no
    deploy lock is taken (nothing on the host changes) and the copy goes to scratch space."""
    with contextlib.nullcontext() if verify_only else locked(cfg.app_root):
        return _restore(cfg, at, verify_only, scratch)


def _restore(cfg: Config, at: datetime | None, verify_only: bool,
             scratch: Path | None) -> int:
    now = datetime.now(UTC)
    files = replica_files(cfg)
    if not files:
        raise ToolError(f"there is no replica at {replica_url(cfg)}",
                        f"nothing to restore from; check backups_bucket and backup_prefix "
                        f"in host.json and `systemctl status {cfg.litestream_unit}`")
    oldest, newest = restorable_range(files)
    target = None
    if at is not None:
        span = f"backups cover {oldest:%Y-%m-%dT%H:%M:%SZ} to now"
        if at > now:
            raise ToolError(f"--at {at:%Y-%m-%dT%H:%M:%SZ} is in the future", span, USAGE)
        if at < oldest:
            raise ToolError(f"--at {at:%Y-%m-%dT%H:%M:%SZ} is outside the retention: the "
                            f"oldest restorable moment is {oldest:%Y-%m-%dT%H:%M:%SZ}",
                            f"{span}; choose a time in that window")
        # After the newest change the database was what the latest backup holds; within its
        # listed second, only Litestream knows whether the moment came before it.
        target = at if at < newest + LISTED_TO else None
    what = f"as of {at:%Y-%m-%dT%H:%M:%SZ}" if at else "latest"
    print(f"restore: {what} from {replica_url(cfg)} (restorable from "
          f"{oldest:%Y-%m-%dT%H:%M:%SZ}, newest change {newest:%Y-%m-%dT%H:%M:%SZ})")
    place = scratch_for(cfg, copy_size(cfg, files), scratch) if verify_only else None
    with restored_copy(cfg, target, place) as checked:
        print(f"restore: the restored copy is sound: {checked.describe()}")
        if verify_only:
            print("restore: --verify-only: nothing was changed")
            return OK
        return swap_in(cfg, checked, now)


# -- putting a file back: a manual copy, or what an earlier restore set aside

# The directories swap_in() makes (pre-restore-<UTC time>, -2, -3, ... when taken).
SET_ASIDE_RE = re.compile(r"pre-restore-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?")


def set_aside(cfg: Config) -> list[str]:
    """The names of the set-aside directories that hold a database, oldest first."""
    data, name = cfg.database.parent, cfg.database.name
    return sorted((p.name for p in data.iterdir()
                   if SET_ASIDE_RE.fullmatch(p.name) and (p / name).is_file()),
                  key=lambda n: (n[:28], int(n[29:] or 1)))


def undo_source(cfg: Config, name: str) -> Path:
    """The database an earlier restore set aside in data/<name>/ (``name`` as the restore
    printed it: pre-restore-<time>, or its full path)."""
    data, given = cfg.database.parent, Path(name)
    available = set_aside(cfg)
    if given.parent not in (Path("."), data) or given.name not in available:
        if not available:
            raise ToolError(f"--undo {name}: no restore has set a database aside in {data}/",
                            "there is nothing to undo", USAGE)
        raise ToolError(f"--undo {name}: not a set-aside database; {data}/ holds "
                        f"{', '.join(available)}",
                        f"choiros-restore --undo {available[-1]} (the newest)", USAGE)
    return data / given.name / cfg.database.name


def _fold_wal(path: Path, what: str, hint: str) -> None:
    """Make ``path`` one file: checkpoint its WAL into it, then drop the emptied -wal/-shm."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.Error as e:
        raise ToolError(f"{what} is unusable: {e}", hint) from e
    if busy:
        raise ToolError(f"{what}: its WAL could not be checkpointed (busy)", hint)
    for sidecar in ("-wal", "-shm"):
        Path(f"{path}{sidecar}").unlink(missing_ok=True)


def _s3_location(url: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ToolError(f"--from-file {url}: not an object URL", "give s3://<bucket>/<key>, "
                        "e.g. what choiros-backup --copy printed", USAGE)
    return bucket, key


def _download(cfg: Config, url: str, out: Path | None) -> int:
    """Download the object at ``url`` to ``out`` (None: only ask its size); its size."""
    bucket, key = _s3_location(url)
    try:
        s3 = aws_client(cfg, "s3")
        if out is not None:
            s3.download_file(bucket, key, str(out))
            return out.stat().st_size
        return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except aws_errors() as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            raise ToolError(f"{url} does not exist", f"list the copies from a workstation: aws "
                            f"s3 ls s3://{bucket}/{key.rpartition('/')[0]}/; nothing was "
                            "changed") from e
        raise ToolError(f"cannot download {url}: {e}", "check the instance role (it may read "
                        "only under the host's backup prefix) and the network; nothing was "
                        "changed") from e


@contextlib.contextmanager
def copied_file(cfg: Config, src: str, hint: str, place: Path | None = None
                ) -> Iterator[Checked]:
    """A checked one-file copy of the database ``src`` (a path, with the -wal beside it if
    any, or an s3:// URL) in a temporary directory of the data directory (or ``place``).
    ``src`` itself is never opened by SQLite, so it stays as it is; the directory is removed
    afterwards unless its database was moved out."""
    remote = src.startswith("s3://")
    if remote:
        _s3_location(src)
    elif not Path(src).is_file():
        raise ToolError(f"{src}: no such file", "give the path of a copy of the database on "
                        "this host, or its s3:// URL; nothing was changed", USAGE)
    elif Path(src).resolve() == cfg.database.resolve():
        raise ToolError(f"{src} is the live database", "give a copy of it", USAGE)
    tmp = Path(tempfile.mkdtemp(prefix=".restore-", dir=place or cfg.database.parent))
    try:
        out = tmp / cfg.database.name
        if remote:
            print(f"restore: downloading {src}", flush=True)
            _download(cfg, src, out)
        else:
            shutil.copyfile(src, out)
        if not remote and Path(f"{src}-wal").is_file():  # a copy taken from a live database
            shutil.copyfile(f"{src}-wal", f"{out}-wal")
            _fold_wal(out, src, hint)
        yield check_database(out, cfg.expected_tables, src, hint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def restore_file(cfg: Config, src: str | None, undo: str | None, verify_only: bool,
                 scratch: Path | None = None) -> int:
    """Put a copy of the database in place the way a restore does: ``src`` (a manual copy:
    a path or an s3:// URL) or the one the restore that made data/``undo``/ set aside.
    Checked first: a bad copy changes nothing. With ``verify_only`` only the check (no lock,
    scratch space)."""
    with contextlib.nullcontext() if verify_only else locked(cfg.app_root):
        now = datetime.now(UTC)
        if undo is not None:
            aside = undo_source(cfg, undo)
            src = str(aside)
            print(f"restore: undo: the database set aside in {aside.parent}/")
            hint = (f"that copy is damaged; choose another set-aside one "
                    f"({', '.join(set_aside(cfg))}); nothing was changed")
        else:
            assert src is not None
            print(f"restore: from the file {src}")
            hint = ("the copy is damaged: use another" + (
                "" if src.startswith("s3://") else
                f" (check it with sqlite3 -readonly {src} 'PRAGMA integrity_check')")
                + "; nothing was changed")
        place = None
        if verify_only:
            size = _download(cfg, src, None) if src.startswith("s3://") else sum(
                p.stat().st_size for p in (Path(src), Path(f"{src}-wal")) if p.is_file())
            place = scratch_for(cfg, size, scratch)
        with copied_file(cfg, src, hint, place) as checked:
            print(f"restore: the copy is sound: {checked.describe()}")
            if verify_only:
                print("restore: --verify-only: nothing was changed")
                return OK
            return swap_in(cfg, checked, now)


# -- back up now

SYNC_TIMEOUT = 120.0


def backup_now(cfg: Config, timeout: float = SYNC_TIMEOUT) -> int:
    """Have the running replication sync at once (through Litestream's control socket),
    wait until the replica holds the database's newest transaction, and prove it from the
    bucket itself."""
    db = cfg.database
    if not db.is_file():
        raise ToolError(f"there is no database at {db}: nothing to back up",
                        "a host has one once a release is deployed (choiros-deploy --status)")
    if not _litestream_active(cfg):
        raise ToolError(f"{cfg.litestream_unit} is not running: nothing replicates {db}",
                        f"sudo systemctl start {cfg.litestream_unit}, then systemctl status "
                        f"{cfg.litestream_unit}")
    print(f"backup: syncing {db} to {replica_url(cfg)} (waiting up to {timeout:g}s)",
          flush=True)
    started = time.monotonic()
    r = _litestream(cfg, "sync", "-wait", "-json", "-timeout", f"{timeout:g}", daemon=True,
                    timeout=timeout + 30)
    if r.returncode:
        raise ToolError(f"litestream sync failed: {_last_line(r.stderr or r.stdout)}",
                        f"journalctl -u {cfg.litestream_unit} -n 20 (S3 errors show there); "
                        f"its control socket is {cfg.litestream_socket}")
    try:
        done = json.loads(r.stdout)
        txid, replica_txid = int(done["txid"]), int(done["replica_txid"])
    except (ValueError, KeyError, TypeError) as e:
        raise ToolError(f"unexpected `litestream sync` output ({e}): {r.stdout[:200]!r}",
                        "check the litestream binary is the pinned version", BROKEN) from e
    if replica_txid < txid:
        raise ToolError(f"the replica is behind: it holds TXID {replica_txid}, the database "
                        f"is at {txid} after {timeout:g}s", f"journalctl -u "
                        f"{cfg.litestream_unit} -n 20; then choiros-backup --now again")
    newest = _newest_level0(cfg)
    if newest is None or newest[0] < txid:
        raise ToolError(f"Litestream reports TXID {txid} synced, but the newest file in "
                        f"{replica_url(cfg)}{LEVEL0:04x}/ holds "
                        f"{'nothing' if newest is None else f'TXID {newest[0]}'}",
                        f"journalctl -u {cfg.litestream_unit} -n 20", BROKEN)
    print(f"backup: {replica_url(cfg)} holds every change up to TXID {txid} "
          f"(newest upload {newest[1]:%Y-%m-%dT%H:%M:%SZ}); took "
          f"{time.monotonic() - started:.1f}s")
    return OK


MANUAL_DIR = "manual/"  # under backup_prefix, beside the replica's 0000/.. directories


def backup_copy(cfg: Config, now: datetime | None = None) -> int:
    """A consistent copy of the live database (SQLite's online backup, as the app user, while
    the backend runs), checked, uploaded to <backup_prefix>manual/<name>-<UTC time>.db; the
    local copy is removed. Such copies never expire: they are for keeping a state beyond the
    replica's retention, or handing it over."""
    db, data = cfg.database, cfg.database.parent
    if not db.is_file():
        raise ToolError(f"there is no database at {db}: nothing to copy",
                        "a host has one once a release is deployed (choiros-deploy --status)")
    if not cfg.backups_bucket or not cfg.backup_prefix:
        raise ToolError("backups_bucket and backup_prefix are not set", "fix host.json", USAGE)
    needed = copy_size(cfg, []) + SCRATCH_MARGIN
    if shutil.disk_usage(data).free < needed:
        raise ToolError(f"no room for a copy: it needs {needed >> 20} MiB free in {data}",
                        "free space on the data disk; nothing was changed")
    name = f"{db.stem}-{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}.db"
    key = f"{cfg.backup_prefix}{MANUAL_DIR}{name}"
    user = pwd.getpwnam(cfg.app_user)
    tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=data))
    try:
        os.chown(tmp, user.pw_uid, user.pw_gid)
        out = tmp / name
        print(f"backup: copying {db} ({copy_size(cfg, []) / (1 << 20):.1f} MiB)", flush=True)
        # As the app user: a file SQLite creates beside the live database must be its own.
        drop = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} \
            if os.geteuid() == 0 else {}
        cmd = [os.environ.get("CHOIROS_SQLITE3", "sqlite3"), str(db), f".backup '{out}'"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, check=False,
                               timeout=LITESTREAM_TIMEOUT, **drop)  # type: ignore[call-overload]
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolError(f"{cmd[0]} failed: {e}", "apt-get install sqlite3; nothing was "
                            "changed") from e
        if r.returncode or not out.is_file():
            raise ToolError(f"the copy failed: {_last_line(r.stderr or r.stdout)}",
                            f"check {db} (sudo -u {cfg.app_user} sqlite3 {db} 'PRAGMA "
                            "integrity_check'); nothing was changed")
        checked = check_database(out, cfg.expected_tables, "the copy", "check the live "
                                 f"database: sudo -u {cfg.app_user} sqlite3 {db} 'PRAGMA "
                                 "integrity_check'")
        print(f"backup: the copy is sound: {checked.describe()}; uploading", flush=True)
        try:
            aws_client(cfg, "s3").upload_file(str(out), cfg.backups_bucket, key)
        except aws_errors() as e:
            raise ToolError(f"cannot upload s3://{cfg.backups_bucket}/{key}: {e}",
                            "check the instance role and the network") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"backup: uploaded s3://{cfg.backups_bucket}/{key}")
    return OK


# -- freshness

def _newest_level0(cfg: Config) -> tuple[int, datetime] | None:
    """(max TXID, upload time) of the newest level-0 file in the replica, or None."""
    s3, prefix = aws_client(cfg, "s3"), f"{cfg.backup_prefix}{LEVEL0:04x}/"
    newest: tuple[int, datetime] | None = None
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=cfg.backups_bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                txid = _txid(obj["Key"].rsplit("/", 1)[-1])
                if txid is not None and (newest is None or txid > newest[0]):
                    newest = (txid, obj["LastModified"].astimezone(UTC))
    except aws_errors() as e:
        raise ToolError(f"cannot list s3://{cfg.backups_bucket}/{prefix}: {e}",
                        "check the instance role and the network") from e
    return newest


def _txid(name: str) -> int | None:
    """The max TXID of an LTX file named <min>-<max>.ltx (16 hex digits each)."""
    stem = name.removesuffix(".ltx")
    if stem == name or "-" not in stem:
        return None
    try:
        return int(stem.split("-", 1)[1], 16)
    except ValueError:
        return None


def _litestream_active(cfg: Config) -> bool:
    return _systemctl("is-active", "--quiet", cfg.litestream_unit) is None


def backup_age(cfg: Config, now: datetime | None = None,
               active: Callable[[Config], bool] = _litestream_active) -> float:
    """Seconds the replica is behind the database: how old the oldest change that is not in
    S3 yet may be. 0 when every change is there (an idle database stays at 0).

    * no database: 0 (nothing to protect);
    * Litestream captured changes locally (.events.db-litestream/ltx/0) that are newer than the
      newest level-0 file in S3: the age of the oldest of them;
    * no level-0 file in S3 at all: the age of the database's last change;
    * Litestream is not running, or the WAL changed later than the newest upload (plus the
      sync interval and 5 s of clock and timestamp rounding): the age of the newest upload.
    """
    now = now or datetime.now(UTC)
    db = cfg.database
    wal = Path(f"{db}-wal")
    if not db.exists():
        return 0.0
    newest = _newest_level0(cfg)
    local = db.parent / f".{db.name}-litestream" / "ltx" / f"{LEVEL0}"
    pending: list[float] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(local):
            txid = _txid(entry.name)
            if txid is not None and (newest is None or txid > newest[0]):
                pending.append(entry.stat().st_mtime)
    if pending:
        return max(0.0, now.timestamp() - min(pending))
    last_change = max(p.stat().st_mtime for p in (db, wal) if p.exists())
    if newest is None:
        return max(0.0, now.timestamp() - last_change)
    uploaded = newest[1].timestamp()
    if not active(cfg) or last_change > uploaded + cfg.sync_interval_seconds + 5:
        return max(0.0, now.timestamp() - uploaded)
    return 0.0


def publish_freshness(cfg: Config) -> int:
    age = backup_age(cfg)
    host = cfg.hostname or os.uname().nodename
    try:
        aws_client(cfg, "cloudwatch").put_metric_data(
            Namespace=cfg.metrics_namespace,
            MetricData=[cfg.metric(cfg.backup_age_metric, round(age, 3), "Seconds")])
    except aws_errors() as e:
        raise ToolError(f"cannot publish {cfg.backup_age_metric}: {e}",
                        "check the instance role (cloudwatch:PutMetricData) and the network") from e
    print(f"{cfg.metrics_namespace}/{cfg.backup_age_metric} {cfg.metrics_dimension}={host}: "
          f"{age:.1f}s")
    return OK


# -- command lines

def restore_main(argv: list[str] | None = None) -> int:
    def setup(p: argparse.ArgumentParser) -> None:
        which = p.add_mutually_exclusive_group()
        which.add_argument("--latest", action="store_true",
                           help="the newest state in the replica (the default)")
        which.add_argument("--at", metavar="TIMESTAMP", help="the state as of this moment, "
                           "ISO 8601 (UTC when no zone is given), within the retention")
        p.add_argument("--verify-only", action="store_true",
                       help="restore into a temporary file and check it; change nothing "
                       "(no deploy lock; the copy goes to scratch space off the data disk)")
        p.add_argument("--scratch", metavar="DIR", type=Path, help="with --verify-only: "
                       "where the copy goes (default /dev/shm, else /var/tmp, off the data "
                       "filesystem)")

        which.add_argument("--from-file", metavar="PATH", help="put this copy of the "
                           "database back instead: a file (e.g. one `sqlite3 .backup` made) or "
                           "the s3:// URL `choiros-backup --copy` printed")
        which.add_argument("--undo", metavar="pre-restore-<time>", help="put back the database "
                           "an earlier restore set aside in data/pre-restore-<time>/")

    def action(cfg: Config, a: argparse.Namespace) -> int:
        if a.scratch and not a.verify_only:
            raise ToolError("--scratch goes with --verify-only", "add --verify-only", USAGE)
        if a.from_file or a.undo:
            return restore_file(cfg, a.from_file, a.undo, a.verify_only, a.scratch)
        return restore(cfg, parse_timestamp(a.at) if a.at else None, a.verify_only,
                       a.scratch)

    os.umask(0o027)
    return run_tool(argv, "choiros-restore", "Restore the event store from its S3 replica (or "
                    "--from-file, or --undo): restore into\na temporary file, check it, stop "
                    "the backend, move the current database to\ndata/pre-restore-<time>/, swap "
                    "in, start and health-check.", action, setup)


def backup_main(argv: list[str] | None = None) -> int:
    def setup(p: argparse.ArgumentParser) -> None:
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("--now", action="store_true", help="have Litestream sync at once and "
                          "wait until the replica holds the newest change")
        what.add_argument("--copy", action="store_true", help="upload a checked copy of the "
                          f"database to <backup_prefix>{MANUAL_DIR} (kept until deleted)")
        p.add_argument("--timeout", metavar="SECONDS", type=float, default=SYNC_TIMEOUT,
                       help=f"with --now: how long to wait for the sync (default "
                       f"{SYNC_TIMEOUT:g})")

    def action(cfg: Config, a: argparse.Namespace) -> int:
        if a.timeout <= 0:
            raise ToolError(f"--timeout {a.timeout:g} is not a positive number of seconds",
                            "e.g. --timeout 120", USAGE)
        return backup_now(cfg, a.timeout) if a.now else backup_copy(cfg)

    os.umask(0o027)
    return run_tool(argv, "choiros-backup", "Back up the event store now: --now has the "
                    "running replication (Litestream) upload\nevery change at once and checks "
                    "the replica in S3 holds the newest one; --copy\nuploads a checked copy to "
                    "keep beyond the replica's retention.", action, setup)


def restore_at_boot_main(argv: list[str] | None = None) -> int:
    os.umask(0o027)
    return run_tool(argv, "choiros-restore-at-boot", "Before the backend starts: restore the "
                    "latest replica if the database is absent\nand a replica exists; otherwise "
                    "do nothing.", lambda cfg, a: restore_at_boot(cfg))


def freshness_main(argv: list[str] | None = None) -> int:
    return run_tool(argv, "choiros-backup-freshness", "Publish how far the S3 replica is behind "
                    "the database (CloudWatch, seconds).", lambda cfg, a: publish_freshness(cfg))

