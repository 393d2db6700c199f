"""The kitchen cloud: what AWS and the Debian mirror are to an EC2 host, shared by all
kitchen hosts on this machine.

* apt-cacher-ng at ``http://10.213.0.1:3142``: the guests' apt proxy, and the mirror image
  builds go through. Its cache (``/var/cache/apt-cacher-ng``) outlives every kitchen, so the
  second build or converge downloads nothing.
* moto at ``http://10.213.0.1:5000``: S3, SSM, STS and CloudWatch in one server. It keeps
  its data in memory, so it runs as a long-lived daemon that survives CLI invocations and
  ``destroy`` of a host; only ``destroy --all`` stops it (and loses its data).

There is no systemd on the kitchen machine, so both are daemons started here in their own
session, with PIDs in ``cloud/state.json`` and logs next to it. Both bind to the cloud
address only: never 0.0.0.0, never loopback-wide.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitchen import network
from kitchen.errors import KitchenError, PrerequisiteError
from kitchen.locks import locked
from kitchen.paths import APT_CACHE_DIR, cloud_dir
from kitchen.processes import cmdline, find_processes, pid_alive, poll_until, terminate
from kitchen.state import now

CLOUD_ADDRESS = network.CLOUD_ADDRESS
APT_PROXY_PORT = 3142
AWS_PORT = 5000
APT_PROXY_URL = f"http://{CLOUD_ADDRESS}:{APT_PROXY_PORT}"
AWS_ENDPOINT_URL = f"http://{CLOUD_ADDRESS}:{AWS_PORT}"
# moto accepts any credentials; these are the conventional test ones.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"  # noqa: S105 - a moto test credential, not a secret
DEFAULT_REGION = "us-east-1"

APT_CACHER_USER = "apt-cacher-ng"
APT_CACHER_CONF_DIR = Path("/etc/apt-cacher-ng")
DEBIAN_BACKEND = "http://deb.debian.org/debian/"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class CloudInfo:
    """How guests and tests reach the kitchen cloud."""

    address: str = CLOUD_ADDRESS
    apt_proxy_url: str = APT_PROXY_URL
    apt_proxy_port: int = APT_PROXY_PORT
    endpoint_url: str = AWS_ENDPOINT_URL
    aws_port: int = AWS_PORT
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY
    region: str = DEFAULT_REGION

    def aws_env(self) -> dict[str, str]:
        """Environment for AWS SDKs and the CLI to talk to moto instead of AWS."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }


def cloud_info() -> CloudInfo:
    """The cloud's fixed coordinates; valid whether or not it is running right now."""
    return CloudInfo()


# --- daemon bookkeeping -------------------------------------------------------------------

def _state_file() -> Path:
    return cloud_dir() / "state.json"


def _load() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(_state_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def _save(data: Mapping[str, Any]) -> None:
    path = _state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _is_apt_proxy(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == "apt-cacher-ng" and (
        f"BindAddress={CLOUD_ADDRESS}" in argv)


def _is_moto(argv: list[str]) -> bool:
    return "moto.server" in argv and CLOUD_ADDRESS in argv


Matcher = Callable[[list[str]], bool]


def _ours(pid: int | None, matcher: Matcher) -> bool:
    return pid is not None and pid_alive(pid) and bool(matcher(cmdline(pid)))


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((CLOUD_ADDRESS, port), 1):
        return True
    return False


def _moto_answers() -> bool:
    conn = http.client.HTTPConnection(CLOUD_ADDRESS, AWS_PORT, timeout=2)
    try:
        conn.request("GET", "/moto-api/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _spawn(argv: list[str], log: Path, **kwargs: Any) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd="/", **kwargs,
        )
    return proc.pid


def _wait_ready(pid: int, ready: Callable[[], bool], what: str, log: Path) -> None:
    if not poll_until(lambda: ready() or not pid_alive(pid), START_TIMEOUT) or not pid_alive(pid):
        terminate(pid, 5)
        raise KitchenError(f"{what} did not start", f"look at {log}", _log_tail(log) or None)


# --- apt-cacher-ng ------------------------------------------------------------------------

def _ensure_backend() -> None:
    """apt-cacher-ng maps /debian to the mirrors in backends_debian; Debian ships it empty."""
    path = APT_CACHER_CONF_DIR / "backends_debian"
    current = path.read_text() if path.exists() else ""
    if DEBIAN_BACKEND not in current.split():
        path.write_text(current + ("" if current.endswith("\n") or not current else "\n")
                        + DEBIAN_BACKEND + "\n")


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give the cache to apt-cacher-ng's user; files written by a root-run proxy break it."""
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(entry)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(entry, uid, gid)


def _start_apt_proxy() -> int:
    try:
        user = pwd.getpwnam(APT_CACHER_USER)
    except KeyError as exc:
        raise PrerequisiteError("apt-cacher-ng is not installed",
                                "apt-get install apt-cacher-ng, or `make system-deps`") from exc
    _ensure_backend()
    logdir = cloud_dir() / "apt-cacher-ng"
    logdir.mkdir(parents=True, exist_ok=True)
    APT_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for path in (logdir, APT_CACHE_DIR):
        _chown_tree(path, user.pw_uid, user.pw_gid)
    if _port_open(APT_PROXY_PORT):
        raise KitchenError(
            f"something else listens on {CLOUD_ADDRESS}:{APT_PROXY_PORT}",
            f"find it with `ss -ltnp | grep {APT_PROXY_PORT}` and stop it; if it is Debian's own "
            "apt-cacher-ng service: `systemctl disable --now apt-cacher-ng` (the kitchen runs "
            "its own, bound to the kitchen address)",
        )
    log = cloud_dir() / "apt-cacher-ng.out"
    argv = [
        "apt-cacher-ng", "-c", str(APT_CACHER_CONF_DIR),
        "ForeGround=1",
        f"BindAddress={CLOUD_ADDRESS}",
        f"Port={APT_PROXY_PORT}",
        f"CacheDir={APT_CACHE_DIR}",
        f"LogDir={logdir}",
        f"SocketPath={logdir / 'socket'}",
    ]
    try:
        pid = _spawn(argv, log, user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    except FileNotFoundError as exc:
        raise PrerequisiteError("apt-cacher-ng is not installed",
                                "apt-get install apt-cacher-ng, or `make system-deps`") from exc
    _wait_ready(pid, lambda: _port_open(APT_PROXY_PORT), "apt-cacher-ng", log)
    return pid


# --- moto ---------------------------------------------------------------------------------

def _start_moto() -> int:
    if _port_open(AWS_PORT):
        raise KitchenError(f"something else listens on {CLOUD_ADDRESS}:{AWS_PORT}",
                           f"ss -ltnp | grep {AWS_PORT}, stop it, then retry")
    log = cloud_dir() / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", CLOUD_ADDRESS, "-p", str(AWS_PORT)]
    pid = _spawn(argv, log)
    _wait_ready(pid, _moto_answers, "moto server", log)
    return pid


# --- public API ---------------------------------------------------------------------------

def cloud_running() -> bool:
    data = _load()
    return _ours(data.get("apt_proxy_pid"), _is_apt_proxy) and _ours(
        data.get("moto_pid"), _is_moto)


def ensure_cloud() -> CloudInfo:
    """Start whatever part of the cloud is not running (idempotent, safe to call concurrently)."""
    with locked(cloud_dir() / "cloud.lock"):
        network.ensure_cloud_address()
        data = _load()
        changed = False
        if not _ours(data.get("apt_proxy_pid"), _is_apt_proxy):
            _stop_strays(_is_apt_proxy)
            data["apt_proxy_pid"] = _start_apt_proxy()
            changed = True
        if not _ours(data.get("moto_pid"), _is_moto):
            _stop_strays(_is_moto)
            data["moto_pid"] = _start_moto()
            changed = True
        if changed:
            data.update(started_at=now(), apt_proxy_url=APT_PROXY_URL,
                        endpoint_url=AWS_ENDPOINT_URL)
            _save(data)
    return cloud_info()


def _stop_strays(matcher: Matcher) -> None:
    """End daemons of ours that no state file knows (a lost state dir, a crashed start)."""
    for pid in find_processes(matcher):
        terminate(pid, 10)


def stop_cloud() -> None:
    """Stop both daemons (moto's data is lost) and remove the cloud address."""
    with locked(cloud_dir() / "cloud.lock"):
        data = _load()
        for key, matcher in (("moto_pid", _is_moto), ("apt_proxy_pid", _is_apt_proxy)):
            if _ours(data.get(key), matcher):
                terminate(int(data[key]), 10)
            _stop_strays(matcher)
        _state_file().unlink(missing_ok=True)
        network.remove_cloud_address()


def aws_client(service: str, region: str = DEFAULT_REGION) -> Any:
    """A boto3 client for ``service`` pointed at the kitchen's moto."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=AWS_ENDPOINT_URL,
        region_name=region,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def seed_cloud(
    buckets: Iterable[str] = (),
    parameters: Mapping[str, str] | None = None,
    *,
    region: str = DEFAULT_REGION,
    objects: Mapping[tuple[str, str], bytes] | None = None,
) -> None:
    """Create ``buckets`` and SSM SecureString ``parameters`` (name -> value) in moto.

    Idempotent: existing buckets are kept, parameters overwritten. ``objects`` maps
    (bucket, key) to the bytes to put there, e.g. a release tarball.
    """
    s3 = aws_client("s3", region)
    for bucket in buckets:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(**kwargs)
    for (bucket, key), body in (objects or {}).items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    ssm = aws_client("ssm", region)
    for name, value in (parameters or {}).items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
