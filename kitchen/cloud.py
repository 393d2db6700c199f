"""The kitchen cloud: what AWS and the Debian mirror are to an EC2 host, shared by all
kitchen hosts on this machine.

* apt-cacher-ng at ``http://10.213.0.1:3142``: the guests' apt proxy, and the mirror image
  builds go through. Its cache (``/var/cache/apt-cacher-ng``) outlives every kitchen, so the
  second build or converge downloads nothing.
* moto at ``http://10.213.0.1:5000``: S3, SSM, STS, IAM, CloudWatch, EC2 and SNS in one
  server, with IAM enforced (:mod:`kitchen.iam`, :mod:`kitchen.moto_server`). It keeps its
  data in memory, so it runs as a long-lived daemon that survives CLI invocations and
  ``destroy`` of a host; only ``destroy --all`` stops it (and loses its data). The kitchen's
  own calls (seeding, tests) use the admin identity the bootstrap created; its keys are in
  ``cloud/state.json``.
* the instance metadata service (:mod:`kitchen.metadata`) on ``10.213.0.1:5169``, which the
  guests reach as ``169.254.169.254:80`` through a DNAT rule on the host ends of their veths.

There is no systemd on the kitchen machine, so these are daemons started here in their own
session, with PIDs in ``cloud/state.json`` and logs next to it. All bind to the cloud
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kitchen import iam, network
from kitchen.errors import KitchenError, PrerequisiteError
from kitchen.iam import Keys
from kitchen.locks import locked
from kitchen.paths import APT_CACHE_DIR, cloud_dir
from kitchen.processes import cmdline, find_processes, pid_alive, poll_until, terminate
from kitchen.state import now

CLOUD_ADDRESS = network.CLOUD_ADDRESS
APT_PROXY_PORT = 3142
AWS_PORT = 5000
APT_PROXY_URL = f"http://{CLOUD_ADDRESS}:{APT_PROXY_PORT}"
AWS_ENDPOINT_URL = f"http://{CLOUD_ADDRESS}:{AWS_PORT}"
METADATA_PORT = 5169
DEFAULT_REGION = "us-east-1"
MOTO_MODULE = "kitchen.moto_server"
METADATA_MODULE = "kitchen.metadata"

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
    metadata_port: int = METADATA_PORT
    region: str = DEFAULT_REGION

    def aws_env(self, keys: Keys | None = None) -> dict[str, str]:
        """Environment for AWS SDKs and the CLI to talk to moto instead of AWS, as the
        kitchen's admin unless ``keys`` says who (the cloud must have been started)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **(keys or admin_keys()).env(),
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
    """Write the state, root-only: it holds the kitchen admin's keys."""
    path = _state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _is_apt_proxy(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == "apt-cacher-ng" and (
        f"BindAddress={CLOUD_ADDRESS}" in argv)


def _is_moto(argv: list[str]) -> bool:
    return MOTO_MODULE in argv and CLOUD_ADDRESS in argv


def _is_unenforced_moto(argv: list[str]) -> bool:
    """A plain ``moto.server`` on the cloud address: started by a kitchen from before IAM
    was enforced; it accepts any key, so it is replaced."""
    return "moto.server" in argv and CLOUD_ADDRESS in argv


def _is_metadata(argv: list[str]) -> bool:
    return METADATA_MODULE in argv and CLOUD_ADDRESS in argv


Matcher = Callable[[list[str]], bool]


def _ours(pid: int | None, matcher: Matcher) -> bool:
    """``pid`` runs the daemon ``matcher`` knows; for moto and the metadata service, also
    with this interpreter: one started from another checkout's (or a deleted) environment
    runs other code, so it is replaced rather than used."""
    if pid is None or not pid_alive(pid):
        return False
    argv = cmdline(pid)
    if not matcher(argv):
        return False
    return matcher is _is_apt_proxy or (bool(argv) and argv[0] == sys.executable)


def _port_open(port: int) -> bool:  # on the cloud address
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


# --- moto and the metadata service ---------------------------------------------------------

def _bootstrap_client(service: str, keys: Keys | None) -> Any:
    import boto3

    who = keys.client_kwargs() if keys else {"aws_access_key_id": "kitchen-bootstrap",
                                             "aws_secret_access_key": "kitchen-bootstrap"}
    return boto3.client(service, endpoint_url=AWS_ENDPOINT_URL, region_name=DEFAULT_REGION,
                        **who)


def _start_moto() -> tuple[int, Keys, Keys]:
    """Start moto with IAM enforced; return its PID and the admin's and EC2's keys."""
    if _port_open(AWS_PORT):
        raise KitchenError(f"something else listens on {CLOUD_ADDRESS}:{AWS_PORT}",
                           f"ss -ltnp | grep {AWS_PORT}, stop it, then retry")
    log = cloud_dir() / "moto.log"
    argv = [sys.executable, "-m", MOTO_MODULE, "-H", CLOUD_ADDRESS, "-p", str(AWS_PORT)]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(iam.BOOTSTRAP_REQUESTS)}
    pid = _spawn(argv, log, env=env)
    _wait_ready(pid, _moto_answers, "moto server", log)
    try:
        admin, ec2 = iam.bootstrap(_bootstrap_client)
    except BaseException:
        terminate(pid, 5)
        raise
    return pid, admin, ec2


def _start_metadata(ec2: Keys) -> int:
    """Start the metadata service as the EC2 identity."""
    if _port_open(METADATA_PORT):
        raise KitchenError(f"something else listens on {CLOUD_ADDRESS}:{METADATA_PORT}",
                           f"ss -ltnp | grep {METADATA_PORT}, stop it, then retry")
    log = cloud_dir() / "metadata.log"
    argv = [sys.executable, "-m", METADATA_MODULE, "--bind", CLOUD_ADDRESS,
            "--port", str(METADATA_PORT)]
    # A clean environment: the kitchen machine's own AWS settings (profile, CA bundle) never
    # decide whom the service asks.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_ENDPOINT_URL": AWS_ENDPOINT_URL,
           "AWS_DEFAULT_REGION": DEFAULT_REGION, **ec2.env()}
    pid = _spawn(argv, log, env=env)
    _wait_ready(pid, lambda: _port_open(METADATA_PORT), "metadata service", log)
    return pid


def _keys(data: Mapping[str, Any], who: str) -> Keys | None:
    raw = data.get(who)
    return Keys(**raw) if isinstance(raw, dict) else None


# --- public API ---------------------------------------------------------------------------

def cloud_running() -> bool:
    data = _load()
    return (_ours(data.get("apt_proxy_pid"), _is_apt_proxy)
            and _ours(data.get("moto_pid"), _is_moto)
            and _ours(data.get("metadata_pid"), _is_metadata))


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
        if not _ours(data.get("moto_pid"), _is_moto) or _keys(data, "ec2") is None:
            # New keys: the metadata service of the old moto goes with it.
            for matcher in (_is_metadata, _is_moto, _is_unenforced_moto):
                _stop_strays(matcher)
            data["moto_pid"], admin, ec2 = _start_moto()
            data.update(admin=asdict(admin), ec2=asdict(ec2))
            changed = True
        if not _ours(data.get("metadata_pid"), _is_metadata):
            _stop_strays(_is_metadata)
            ec2_keys = _keys(data, "ec2")
            assert ec2_keys is not None  # set just above when missing
            data["metadata_pid"] = _start_metadata(ec2_keys)
            changed = True
        # Always (idempotent): the table goes with a reboot of this machine, the service not.
        network.ensure_metadata_redirect(CLOUD_ADDRESS, METADATA_PORT)
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
    """Stop the daemons (moto's data is lost), the metadata redirect and the cloud address."""
    with locked(cloud_dir() / "cloud.lock"):
        data = _load()
        for key, matcher in (("metadata_pid", _is_metadata), ("moto_pid", _is_moto),
                             ("apt_proxy_pid", _is_apt_proxy)):
            if _ours(data.get(key), matcher):
                terminate(int(data[key]), 10)
            _stop_strays(matcher)
        _stop_strays(_is_unenforced_moto)
        _state_file().unlink(missing_ok=True)
        network.remove_metadata_redirect()
        network.remove_cloud_address()


def admin_keys() -> Keys:
    """The kitchen admin's access key (the cloud must be running)."""
    keys = _keys(_load(), "admin")
    if keys is None:
        raise KitchenError("the kitchen cloud is not running (no admin key in its state)",
                           "any kitchen command that needs it starts it, e.g. `kitchen up`")
    return keys


def ec2_keys() -> Keys:
    """The access key of the identity that plays EC2 (the cloud must be running)."""
    keys = _keys(_load(), "ec2")
    if keys is None:
        raise KitchenError("the kitchen cloud is not running (no EC2 key in its state)",
                           "any kitchen command that needs it starts it, e.g. `kitchen up`")
    return keys


def aws_client(service: str, region: str = DEFAULT_REGION, keys: Keys | None = None) -> Any:
    """A boto3 client for ``service`` pointed at the kitchen's moto, as the kitchen's admin
    unless ``keys`` says who."""
    import boto3

    return boto3.client(service, endpoint_url=AWS_ENDPOINT_URL, region_name=region,
                        **(keys or admin_keys()).client_kwargs())


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
