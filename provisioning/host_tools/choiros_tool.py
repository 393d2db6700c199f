"""The shared core of the ChoirOS host tools: exit codes, errors, the host config, AWS
clients, the deploy lock, the backend's health wait and the command-line runner.

Installed as /usr/local/lib/choiros/choiros_tool.py beside the tools' libraries
(choiros_release.py, choiros_deploy.py, choiros_secrets.py, choiros_backup.py,
choiros_health.py), which import it as a sibling module. Needs only Debian 12's python3 and
python3-boto3 (imported lazily: deploying a local tarball needs no boto3).
Config: --config, $CHOIROS_HOST_CONFIG or /etc/choiros/host.json (keys: see Config).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OK, UNDONE, USAGE, REFUSED, BROKEN = 0, 1, 2, 3, 4
EXIT_CODES = """exit codes:
  0  success, or nothing to do
  1  the change failed its health check and was undone; the earlier release runs
  2  usage or configuration error
  3  refused before anything changed (bad artifact, missing secret, AWS error, busy)
  4  failed and could not be undone: the host needs an operator"""


class ToolError(Exception):
    """Printed as "Error: <message>" and "Try: <hint>"; exit status `code`."""

    def __init__(self, message: str, hint: str = "", code: int = REFUSED) -> None:
        super().__init__(message)
        self.hint, self.code = hint, code


@dataclass(frozen=True)
class Config:
    """The host.json keys, read by every host tool.

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
    aws: dict[str, str] = field(default_factory=dict)  # kitchen: endpoint_url
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
    litestream_socket: Path = Path("/run/choiros-litestream/litestream.sock")
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
    """All boto3 clients: the instance role through the default chain (the metadata service,
    on EC2 and in the kitchen); cfg.aws names the kitchen cloud's endpoint."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError as e:
        raise ToolError(f"boto3 is missing ({e})", "apt-get install python3-boto3", USAGE) from e

    kw: dict[str, Any] = {"region_name": cfg.region, "config": BotoConfig(
        retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60)}
    if cfg.aws:
        kw["endpoint_url"] = cfg.aws.get("endpoint_url")
    return boto3.client(service, **kw)


def aws_errors() -> tuple[type[Exception], ...]:
    """What a boto3 call raises when AWS or the network fails (botocore imported lazily)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError, OSError


def wait_healthy(url: str, timeout: float) -> str | None:
    """Poll until url answers 200 {"status": "healthy"}: None, or why not in time."""
    # Imported here: urllib.request brings http.client, email and ssl, a third of every
    # tool's start-up, which `--help` and most commands never use.
    import urllib.error
    import urllib.request

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


def run_tool(argv: list[str] | None, prog: str, doc: str,
             action: Callable[[Config, argparse.Namespace], int],
             setup: Callable[[argparse.ArgumentParser], object] = lambda p: None) -> int:
    """One tool's command line: parse (``setup`` adds its arguments; --config is common), load
    host.json, run ``action``; a ToolError becomes "Error:"/"Try:" and its exit code."""
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

