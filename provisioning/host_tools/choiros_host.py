"""Library of the ChoirOS host tools choiros-deploy, choiros-rollback and choiros-secrets
(and the shared part of choiros_backup.py: config, errors, AWS clients, health checks).

Installed as /usr/local/lib/choiros/choiros_host.py. Needs only Debian 12's python3 and
python3-boto3 (imported lazily: deploying a local tarball needs no boto3).
Config: --config, $CHOIROS_HOST_CONFIG or /etc/choiros/host.json (keys: see Config).

Release format. Artifacts bucket keys, <version> matching VERSION_RE, without "..":
  releases/<version>/choiros-<version>.tar.gz         gzip-compressed tar
  releases/<version>/choiros-<version>.tar.gz.sha256  "<64 hex>  choiros-<version>.tar.gz\\n"
The tar holds at top level (a leading "./" is ignored) `sandbox`, a non-empty regular file with
the owner execute bit, `dist/index.html` (and other dist/ files), optionally `VERSION` (then its
stripped text must be <version>); only regular files and directories: no absolute names, "..",
links, devices or duplicates; at most MAX_MEMBERS entries and MAX_UNPACKED bytes. Owners and
modes in the tar are ignored: files unpack as root, 0755 if executable, else 0644.
A version is immutable: never upload other bytes under a version already used.

The wanted release of the stack lives outside the host, in the artifacts bucket:
  wanted-release.json  {"version": <version>, "sha256": <64 hex>, ...}
written only by the operator's deploy commands (the instance role may read it, never write it).
`choiros-deploy --wanted` deploys it: at first boot, a new or replaced host runs what the stack
wants, not a version frozen into its user-data.

Host layout in app_root: releases/<version>/ and releases/<version>.sha256 (the checksum it was
deployed with, in the .sha256 file format), current and previous (relative symlinks to
releases/<version>, replaced atomically), deploy-history.jsonl (a JSON object per switch:
time, action, from, to, sha256, result, reason). A refused release changes nothing on the host.
`choiros-deploy --status` prints what runs (read-only, no lock).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
WANTED_KEY = "wanted-release.json"
MAX_TARBALL, MAX_UNPACKED, MAX_MEMBERS = 512 << 20, 2 << 30, 20000
OK, UNDONE, USAGE, REFUSED, BROKEN = 0, 1, 2, 3, 4
EXIT_CODES = """exit codes:
  0  success, or nothing to do
  1  the change failed its health check and was undone; the earlier release runs
  2  usage or configuration error
  3  refused before anything changed (bad artifact, missing secret, AWS error, busy)
  4  failed and could not be undone: the host needs an operator"""
Entries = list[tuple[str, tarfile.TarInfo]]


class ToolError(Exception):
    """Printed as "Error: <message>" and "Try: <hint>"; exit status `code`."""

    def __init__(self, message: str, hint: str = "", code: int = REFUSED) -> None:
        super().__init__(message)
        self.hint, self.code = hint, code


@dataclass(frozen=True)
class Config:
    """The host.json keys read here, by choiros_backup.py and by choiros_health.py.

    provisioning/render.py writes exactly these keys (tests/unit/test_render.py checks it);
    unknown keys are ignored so that an older tool still reads a newer host.json.
    """

    region: str = ""
    artifacts_bucket: str = ""
    secrets: tuple[str, ...] = ()
    app_root: Path = Path("/opt/choiros")
    backend_unit: str = "choiros-backend.service"
    health_url: str = "http://127.0.0.1:8080/health"
    health_timeout_seconds: float = 30.0
    keep_releases: int = 5
    env_file: Path = Path("/etc/choiros/backend.env")
    aws: dict[str, str] = field(default_factory=dict)  # kitchen: endpoint_url and keys
    # The event store and its replica (choiros_backup.py).
    hostname: str = ""
    app_user: str = "choiros"
    backups_bucket: str = ""
    backup_prefix: str = ""
    database: Path = Path("/opt/choiros/data/events.db")
    expected_tables: tuple[str, ...] = ()
    litestream: Path = Path("/usr/local/bin/litestream")
    litestream_config: Path = Path("/etc/choiros/litestream.yml")
    litestream_unit: str = "choiros-litestream.service"
    sync_interval_seconds: float = 1.0
    # What the host publishes to CloudWatch: provisioning/spec.py's HostMetrics, rendered
    # into host.json (no default here, so that no second copy of a name can drift).
    metrics_namespace: str = ""
    metrics_dimension: str = ""
    backup_age_metric: str = ""
    healthy_metric: str = ""
    disk_metric: str = ""
    memory_metric: str = ""
    # choiros_health.py: /health through Caddy (Host and SNI), what must run, the disks.
    site_health_url: str = ""
    site_server_name: str = ""
    data_dir: Path = Path("/opt/choiros/data")
    logs_dir: Path = Path("/opt/choiros/logs")
    required_units: tuple[str, ...] = ()

    def metric(self, name: str, value: float, unit: str) -> dict[str, Any]:
        """One CloudWatch datum of this host (dimension ``metrics_dimension``=hostname)."""
        if not (self.metrics_namespace and self.metrics_dimension and name):
            raise ToolError("host.json names no metrics namespace, dimension or metric",
                            "rerun the converge: it writes /etc/choiros/host.json", USAGE)
        return {"MetricName": name, "Value": value, "Unit": unit, "Timestamp": datetime.now(UTC),
                "Dimensions": [{"Name": self.metrics_dimension,
                                "Value": self.hostname or os.uname().nodename}]}

    @property
    def backend_logs(self) -> str:
        """Where to look when the backend fails: it logs to files, not to the journal."""
        logs = self.app_root / "logs"
        return f"tail -n 100 {logs}/backend-error.log {logs}/backend.log"


def load_config(path: str | None = None) -> Config:
    path = path or os.environ.get("CHOIROS_HOST_CONFIG") or "/etc/choiros/host.json"
    hint, d = f"fix {path} (written by cloud-init) or pass --config", Config()
    try:  # known keys are converted to their default's type; unknown keys are ignored
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        cfg = Config(**{k: type(getattr(d, k))(v) for k, v in raw.items()
                        if k in d.__dataclass_fields__})
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ToolError(f"cannot read config {path}: {e}", hint, USAGE) from e
    if (not cfg.region or not cfg.app_root.is_absolute() or cfg.keep_releases < 2
            or cfg.health_timeout_seconds <= 0 or not cfg.health_url.startswith(("http://", "https://"))):
        raise ToolError(f"{path} needs region, an absolute app_root, keep_releases >= 2, "
                        "health_timeout_seconds > 0 and an http(s) health_url", hint, USAGE)
    return cfg


def aws_client(cfg: Config, service: str) -> Any:
    """All boto3 clients: instance role on EC2, cfg.aws in the kitchen."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError as e:
        raise ToolError(f"boto3 is missing ({e})", "apt-get install python3-boto3", USAGE) from e

    kw: dict[str, Any] = {"region_name": cfg.region, "config": BotoConfig(
        retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60)}
    if cfg.aws:
        kw.update(endpoint_url=cfg.aws.get("endpoint_url"),
                  aws_access_key_id=cfg.aws.get("access_key_id"),
                  aws_secret_access_key=cfg.aws.get("secret_access_key"))
    return boto3.client(service, **kw)


def _aws_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError, OSError


# -- releases

def parse_sha256_file(text: str, name: str) -> str:
    m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](\S+)\n?", text)
    if not m or m.group(2) != name:
        raise ToolError(f"malformed checksum file for {name}",
                        f'make it one line "<sha256>  {name}" (sha256sum output)')
    return m.group(1).lower()


def valid_version(version: str) -> bool:
    return bool(VERSION_RE.fullmatch(version)) and ".." not in version


def tarball_name(version: str) -> str:
    return f"choiros-{version}.tar.gz"


def release_key(version: str) -> str:
    """The artifacts bucket key of a release's tarball; its checksum is this plus .sha256."""
    return f"releases/{version}/{tarball_name(version)}"


def sha256_line(digest: str, name: str) -> str:
    """The .sha256 file format (sha256sum's output), which parse_sha256_file reads back."""
    return f"{digest}  {name}\n"


@dataclass(frozen=True)
class Wanted:
    """The stack's wanted release: what its hosts must run."""

    version: str
    sha256: str


def parse_wanted(text: str | bytes) -> Wanted:
    """The wanted-release.json document (extra keys are kept by its writer, ignored here)."""
    try:
        doc = json.loads(text)
        version, digest = doc["version"], doc["sha256"]
    except (ValueError, TypeError, KeyError) as e:
        raise ToolError(f"{WANTED_KEY} is not a JSON object with version and sha256 ({e})",
                        "set it again with: choiros-infra deploy VERSION") from e
    if not (isinstance(version, str) and valid_version(version) and isinstance(digest, str)
            and SHA256_RE.fullmatch(digest)):
        raise ToolError(f"{WANTED_KEY} names an invalid version or sha256",
                        "set it again with: choiros-infra deploy VERSION")
    return Wanted(version, digest)


def read_wanted(cfg: Config) -> Wanted | None:
    """The stack's wanted release from the artifacts bucket; None when none was ever set."""
    if not cfg.artifacts_bucket:
        raise ToolError("artifacts_bucket is not set", "set it in host.json", USAGE)
    try:
        body = aws_client(cfg, "s3").get_object(Bucket=cfg.artifacts_bucket, Key=WANTED_KEY)
        return parse_wanted(body["Body"].read(65536))
    except _aws_errors() as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise ToolError(f"cannot read s3://{cfg.artifacts_bucket}/{WANTED_KEY}: {e}",
                        "check the instance role, the bucket and the network") from e


def fetch_release(cfg: Config, version: str, workdir: Path) -> tuple[Path, str]:
    """Download a release into workdir: (tarball, sha256 from its .sha256 object)."""
    name, bucket = tarball_name(version), cfg.artifacts_bucket
    if not bucket:
        raise ToolError("artifacts_bucket is not set", "set it in host.json", USAGE)
    key, dest, s3 = release_key(version), workdir / name, aws_client(cfg, "s3")
    try:
        sha_text = s3.get_object(Bucket=bucket, Key=key + ".sha256")["Body"].read(4096)
        with dest.open("wb") as f:
            shutil.copyfileobj(s3.get_object(Bucket=bucket, Key=key)["Body"], f, 1 << 20)
    except _aws_errors() as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise ToolError(f"release {version} not found at s3://{bucket}/{key}[.sha256]",
                            f"list releases with: aws s3 ls s3://{bucket}/releases/") from e
        raise ToolError(f"cannot download s3://{bucket}/{key}: {e}",
                        "check the instance role, the bucket and the network") from e
    return dest, parse_sha256_file(sha_text.decode("utf-8", "replace"), name)


def inspect_release(tarball: Path, version: str) -> Entries:
    """Check a tarball against the release format, unpacking nothing: its entries."""

    def bad(why: str) -> ToolError:
        return ToolError(f"release {version} refused: {why}",
                         "rebuild it in the release format (see choiros_host.py) and upload it")

    if tarball.stat().st_size > MAX_TARBALL:
        raise bad("it is too large")
    try:
        with gzip.open(tarball) as gz:  # read it all: catches truncation and bad CRCs early
            total = 0
            while chunk := gz.read(1 << 20):
                if (total := total + len(chunk)) > MAX_UNPACKED + (64 << 20):
                    raise bad("it is too large")
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
            vfile = [m for m in members if m.name in ("VERSION", "./VERSION") and m.isreg()]
            stream = tar.extractfile(vfile[0]) if vfile else None
            said = stream.read(256).decode("utf-8", "replace").strip() if stream else version
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise bad(f"not a valid .tar.gz ({e})") from e
    entries: Entries = []
    for m in members:
        name = m.name.removeprefix("./").rstrip("/")
        parts = name.split("/")
        if m.isdir() and name in ("", "."):
            continue
        if (name.startswith("/") or {"", ".", ".."} & set(parts)
                or any(ord(c) < 32 or c in "\\\x7f" for c in name)):
            raise bad(f"unsafe path {m.name!r}")
        if not (m.isreg() or m.isdir()) or m.issparse():
            raise bad(f"{m.name!r} is not a regular file or directory")
        entries.append((name, m))
    byname, files = dict(entries), {n for n, m in entries if not m.isdir()}
    if len(byname) != len(entries):
        raise bad("duplicate entries")
    if len(entries) > MAX_MEMBERS or sum(m.size for _, m in entries) > MAX_UNPACKED:
        raise bad("it is too large")
    for name in byname:
        parts = name.split("/")
        if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
            raise bad(f"{name!r} is inside a file")
    sandbox, index = byname.get("sandbox"), byname.get("dist/index.html")
    if sandbox is None or not sandbox.isreg():
        raise bad("no sandbox binary at the top level")
    if not sandbox.size:
        raise bad("sandbox is empty")
    if not sandbox.mode & 0o100:
        raise bad("sandbox is not executable")
    if index is None or not index.isreg():
        raise bad("dist/index.html is missing")
    if said != version:
        raise bad(f"its VERSION file says {said!r}")
    return entries


def install_release(root: Path, tarball: Path, entries: Entries, version: str,
                    digest: str) -> None:
    """Write checked entries afresh (owner root, no tar metadata) into releases/.incoming-*,
    then rename that to releases/<version>, and record its checksum beside it."""
    releases = root / "releases"
    releases.mkdir(0o755, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=releases))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for name, m in entries:
                target = staging / name
                target.parent.mkdir(0o755, parents=True, exist_ok=True)
                if m.isdir():
                    target.mkdir(0o755, exist_ok=True)
                    continue
                mode = 0o755 if m.mode & 0o111 else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with os.fdopen(os.open(target, flags, mode), "wb") as out:
                    if src := tar.extractfile(m):
                        shutil.copyfileobj(src, out, 1 << 20)
        staging.chmod(0o755)
        final, trash = releases / version, releases / f".trash-{version}-{os.getpid()}"
        if final.exists() or final.is_symlink():  # an earlier copy that is not current
            os.rename(final, trash)
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
        checksum = releases / f"{version}.sha256"
        checksum.with_name(f".{checksum.name}.new").write_text(
            sha256_line(digest, tarball_name(version)), encoding="utf-8")
        os.replace(checksum.with_name(f".{checksum.name}.new"), checksum)
        os.sync()
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ToolError(f"cannot unpack release {version}: {e}",
                        f"check free space in {root}") from e


def prune(root: Path, keep: int) -> list[str]:
    """Keep current, previous, the newest others up to `keep`; drop temp dirs."""
    kept = {v for v in (link(root, "current"), link(root, "previous")) if v}
    dirs = [p for p in (root / "releases").iterdir() if p.is_dir() and not p.is_symlink()]
    removed = []
    for p in sorted(dirs, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        if p.name.startswith("."):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name not in kept and len(kept) < keep:
            kept.add(p.name)
        elif p.name not in kept:
            shutil.rmtree(p)
            (p.parent / f"{p.name}.sha256").unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def installed_sha256(root: Path, version: str | None) -> str | None:
    """The checksum a release on this host was deployed with (None: unknown or none)."""
    if version is None:
        return None
    try:
        text = (root / "releases" / f"{version}.sha256").read_text("utf-8", "replace")
        return parse_sha256_file(text, tarball_name(version))
    except (OSError, ToolError):
        return None


def status(root: Path) -> dict[str, Any]:
    """What this host runs, as the deploy commands and verify read it."""
    def release(name: str) -> dict[str, str | None] | None:
        version = link(root, name)
        return None if version is None else {"version": version,
                                             "sha256": installed_sha256(root, version)}
    return {"current": release("current"), "previous": release("previous")}


# -- switching, restarting, health

def link(root: Path, name: str) -> str | None:  # the version current or previous is
    try:
        return Path(os.readlink(root / name)).name
    except OSError:
        return None


def switch(root: Path, current: str, previous: str | None) -> None:
    """Point previous, then current, at releases/<version>: new link, atomic rename."""
    for name, version in (("previous", previous), ("current", current)):
        (root / f".{name}.new").unlink(missing_ok=True)
        if version is None:
            (root / name).unlink(missing_ok=True)
            continue
        os.symlink(f"releases/{version}", root / f".{name}.new")
        os.replace(root / f".{name}.new", root / name)


def wait_healthy(url: str, timeout: float) -> str | None:
    """Poll until url answers 200 {"status": "healthy"}: None, or why not in time."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline, last = time.monotonic() + timeout, "no answer"
    while (left := deadline - time.monotonic()) > 0:
        try:
            with opener.open(url, timeout=min(5.0, max(left, 0.1))) as resp:
                body = json.loads(resp.read(65536))
            if isinstance(body, dict) and body.get("status") == "healthy":
                return None
            last = f"status is {body.get('status') if isinstance(body, dict) else body!r}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
    return f"{url} not healthy after {timeout:g}s: {last}"


def restart_and_check(cfg: Config) -> str | None:
    """Restart the backend and wait for health: None, or why it is not healthy."""
    cmd = [os.environ.get("CHOIROS_SYSTEMCTL", "systemctl"), "restart", cfg.backend_unit]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)} failed: {e}"
    if r.returncode:
        return f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-300:]}"
    return wait_healthy(cfg.health_url, cfg.health_timeout_seconds)


def record(root: Path, action: str, frm: str | None, to: str, reason: str | None,
           result: str = "") -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    line = {"time": now, "action": action, "from": frm, "to": to,
            "sha256": installed_sha256(root, to),
            "result": result or ("failed" if reason else "ok"), "reason": reason}
    with (root / "deploy-history.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """An exclusive flock on app_root itself (no lock file to leave behind)."""
    if not os.access(root, os.W_OK):
        raise ToolError(f"{root} is missing or not writable", "run as root after cloud-init", USAGE)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise ToolError("another deploy or rollback is running", "wait and retry") from e
        yield
    finally:
        os.close(fd)


def where_to_look(cfg: Config, reason: str) -> str:
    """The first place to look when the backend did not come up: its logs, unless systemd
    never started it because a unit it requires failed (on a new host, typically the restore
    at boot refusing the backup), which no backend log mentions."""
    if "dependency job" in reason.lower():
        return ("systemctl --failed (a unit the backend requires failed; for "
                "choiros-restore-at-boot: journalctl -u choiros-restore-at-boot -o cat and the "
                "database runbook)")
    return cfg.backend_logs


def go_live(cfg: Config, action: str, new: str, old: str | None, old_previous: str | None) -> int:
    """Make new current (old previous), restart, check; if unhealthy switch back, raise."""
    root = cfg.app_root
    switch(root, new, old)
    print(f"{action}: current -> {new} (was {old or 'none'}); restarting {cfg.backend_unit}")
    reason = restart_and_check(cfg)
    record(root, action, old, new, reason)
    if reason is None:
        print(f"{action}: {new} is live and healthy")
        return OK
    logs = where_to_look(cfg, reason)
    what = f"{action} to {new} failed its health check ({reason})"
    if old is None:
        raise ToolError(f"{what}; there is no earlier release to go back to",
                        f"{logs}; then deploy a fixed release", BROKEN)
    print(f"{action}: {new} is unhealthy; switching back to {old}")
    switch(root, old, old_previous)
    again = restart_and_check(cfg)
    record(root, "auto-rollback", new, old, again or reason, "failed" if again else "ok")
    if again:
        raise ToolError(f"{what}, and {old} is unhealthy too ({again})",
                        f"{logs}; choiros-deploy <a known good version>", BROKEN)
    raise ToolError(f"{what}; rolled back to {old}, which is healthy",
                    f"{logs} to see why {new} failed", UNDONE)


def deploy_wanted(cfg: Config) -> int:
    """Deploy the stack's wanted release (first boot, or a host catching up)."""
    wanted = read_wanted(cfg)
    if wanted is None:
        print(f"No wanted release is set in s3://{cfg.artifacts_bucket}/{WANTED_KEY}; "
              "nothing to deploy (choiros-infra deploy VERSION sets it).")
        return OK
    print(f"The stack wants release {wanted.version} (sha256 {wanted.sha256}).")
    return deploy(cfg, wanted.version, wanted.sha256)


def deploy(cfg: Config, release: str, sha256: str | None = None) -> int:
    root, local, version = cfg.app_root, release.endswith(".tar.gz") or "/" in release, release
    if local:
        m = re.fullmatch(r"choiros-(.+)\.tar\.gz", Path(release).name)
        version = m.group(1) if m else ""
    if not valid_version(version):
        raise ToolError(f"invalid release {release!r}", "give a version (up to 64 of "
                        "[0-9A-Za-z._+-]) or a path to choiros-<version>.tar.gz", USAGE)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ToolError("--sha256 must be 64 hex digits", code=USAGE)
    with locked(root):
        old, old_previous = link(root, "current"), link(root, "previous")
        if old == version and sha256 is not None and (
                installed_sha256(root, old) not in (None, sha256.lower())):
            raise ToolError(f"release {version} is current with other bytes (sha256 "
                            f"{installed_sha256(root, old)}, not {sha256.lower()})",
                            "a version is immutable: publish the new bytes as a new version")
        if old == version:
            print(f"Release {version} is already current; nothing to do.")
            return OK
        with tempfile.TemporaryDirectory(prefix="choiros-deploy-") as tmp:
            if local:
                sidecar = Path(release + ".sha256")
                if not Path(release).is_file() or not (sha256 or sidecar.is_file()):
                    raise ToolError(f"{release} or its checksum is missing", "pass --sha256 HEX"
                                    f" or put {sidecar.name} beside it", USAGE)
                tarball = Path(shutil.copy(release, tmp))  # check and unpack the same bytes
                expected = (sha256 or parse_sha256_file(
                    sidecar.read_text("utf-8", "replace"), tarball.name)).lower()
            else:
                tarball, expected = fetch_release(cfg, version, Path(tmp))
                if sha256 and sha256.lower() != expected:
                    raise ToolError(f"the bucket's checksum of {version} is not --sha256")
            with tarball.open("rb") as f:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
            if actual != expected:
                raise ToolError(f"checksum mismatch for {tarball.name}: expected {expected}, got "
                                f"{actual}", "the artifact is corrupt; build and upload it again")
            install_release(root, tarball, inspect_release(tarball, version), version, actual)
        code = go_live(cfg, "deploy", version, old, old_previous)
        if removed := prune(root, cfg.keep_releases):
            print(f"Removed old releases: {', '.join(removed)}")
        return code


def rollback(cfg: Config) -> int:
    with locked(root := cfg.app_root):
        cur, prev = link(root, "current"), link(root, "previous")
        if not prev or prev == cur or not (root / "releases" / prev / "sandbox").is_file():
            raise ToolError("there is no previous release to roll back to",
                            "choiros-deploy VERSION deploys a specific release")
        return go_live(cfg, "rollback", prev, cur, prev)


# -- secrets

def fetch_secrets(cfg: Config) -> dict[str, str]:
    """{last part of the parameter name: value}, in config order."""
    names = {p: p.rsplit("/", 1)[-1] for p in cfg.secrets}
    for param, env in names.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env) or list(names.values()).count(env) > 1:
            raise ToolError(f"secret {param!r} does not end in a unique env var name",
                            "fix secrets in host.json", USAGE)
    values: dict[str, str] = {}
    if not (params := list(names)):  # still write an env file: the backend unit needs it
        return {}
    ssm = aws_client(cfg, "ssm")
    try:
        for i in range(0, len(params), 10):
            resp = ssm.get_parameters(Names=params[i:i + 10], WithDecryption=True)
            values.update({p["Name"]: p["Value"] for p in resp["Parameters"]})
    except _aws_errors() as e:
        raise ToolError(f"cannot read SSM parameters: {e}",
                        "check the instance role and the region") from e
    if missing := sorted(set(params) - set(values)):
        raise ToolError(f"missing SSM parameters: {', '.join(missing)}",
                        "aws ssm put-parameter --type SecureString --name NAME --value ...")
    if any("\0" in v for v in values.values()):
        raise ToolError("an SSM parameter value contains a NUL byte")
    return {names[p]: values[p] for p in params}


def quote_env(value: str) -> str:
    """Double-quote for an EnvironmentFile: systemd 252 and sh both undo \\" \\\\ \\` \\$."""
    return '"' + re.sub(r'(["\\`$])', r"\\\1", value) + '"'


def render_env_file(env: dict[str, str]) -> str:
    lines = [f"{k}={quote_env(v)}\n" for k, v in env.items()]
    return "# Written by choiros-secrets from SSM Parameter Store. Do not edit.\n" + "".join(lines)


def write_env_file(path: Path, text: str, group: str) -> None:
    """Atomically replace path: mode 0640, owner this user (root), group `group`."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError as e:
        raise ToolError(f"group {group!r} does not exist", "create the choiros user", USAGE) from e
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def secrets(cfg: Config) -> int:
    env = fetch_secrets(cfg)
    write_env_file(cfg.env_file, render_env_file(env),
                   os.environ.get("CHOIROS_SECRETS_GROUP", "choiros"))
    print(f"Wrote {len(env)} secrets to {cfg.env_file}" + (f": {', '.join(env)}" * bool(env)))
    return OK


# -- command lines

def _run(argv: list[str] | None, prog: str, doc: str,
         action: Callable[[Config, argparse.Namespace], int],
         setup: Callable[[argparse.ArgumentParser], object] = lambda p: None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=doc, epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    setup(p)
    p.add_argument("--config", metavar="FILE",
                   help="host config (default: $CHOIROS_HOST_CONFIG or /etc/choiros/host.json)")
    args = p.parse_args(argv)
    try:
        return action(load_config(args.config), args)
    except ToolError as e:
        print(f"Error: {e}" + (f"\nTry: {e.hint}" if e.hint else ""), file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"Error: {e}", file=sys.stderr)
        return BROKEN


def deploy_main(argv: list[str] | None = None) -> int:
    def setup(p: argparse.ArgumentParser) -> None:
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("release", metavar="VERSION|PATH", nargs="?", help="a version in the "
                          "bucket, or a path to choiros-<version>.tar.gz (has a / or ends in "
                          ".tar.gz)")
        what.add_argument("--wanted", action="store_true", help=f"deploy the stack's wanted "
                          f"release ({WANTED_KEY} in the artifacts bucket; none set: nothing "
                          "to do)")
        what.add_argument("--status", action="store_true", help="print what runs, as JSON "
                          "({current, previous: {version, sha256}}); changes nothing")
        p.add_argument("--sha256", metavar="HEX", help="expected checksum (default: .sha256 file)")

    def action(cfg: Config, a: argparse.Namespace) -> int:
        if a.status:
            print(json.dumps(status(cfg.app_root), sort_keys=True))
            return OK
        if a.wanted:
            if a.sha256:
                raise ToolError("--wanted takes its sha256 from the pointer", "drop --sha256",
                                USAGE)
            return deploy_wanted(cfg)
        return deploy(cfg, a.release, a.sha256)

    os.umask(0o022)
    return _run(argv, "choiros-deploy", "Deploy a ChoirOS release: check, unpack, switch, "
                "restart, health-check;\nswitch back when it is unhealthy.", action, setup)


def rollback_main(argv: list[str] | None = None) -> int:
    return _run(argv, "choiros-rollback", "Switch to the previous ChoirOS release, restart, "
                "health-check;\nswitch back when it is unhealthy.",
                lambda cfg, a: rollback(cfg))


def secrets_main(argv: list[str] | None = None) -> int:
    return _run(argv, "choiros-secrets", "Write the backend's EnvironmentFile from SSM; values "
                "are never printed.\nGroup: $CHOIROS_SECRETS_GROUP or choiros.",
                lambda cfg, a: secrets(cfg))
