"""The kitchen tests' helpers, one copy for every test file: name a test host and give it a small
user-data; run a command in the guest, call the app, ask whether it is healthy, wait for a
condition, read a metric back. (The fixtures that make hosts are in conftest.py; tests import
helpers from here, never from conftest, whose module name tests/unit shares.)

``wait_until`` is built on the kitchen's own :func:`kitchen.processes.poll_until`; the metric
reader asks the kitchen cloud's CloudWatch for the host contract's names
(:data:`provisioning.spec.METRICS`).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from choiros_infra import kitchen_site
from choiros_infra.kitchen_stack import stack_up
from infra.config import StackConfig
from kitchen import cloud, lifecycle
from kitchen.processes import poll_until
from kitchen.state import HostState
from provisioning.spec import METRICS

BACKEND_HEALTH = "http://127.0.0.1:8080/health"

# -- test hosts: named kt-<what>-<hex> (never a developer's kitchen), and a small user-data

TEST_PREFIX = "kt-"
WRITTEN_FILE = "/etc/choiros-kitchen-test"
WRITTEN_TEXT = "written by cloud-init write_files"
RUNCMD_MARKER = "/var/lib/choiros-kitchen-test-runcmd"
TEST_PACKAGE = "jq"


def user_data(info: cloud.CloudInfo, *, runcmd: str = f"echo converged > {RUNCMD_MARKER}",
              packages: bool = True) -> bytes:
    """A small cloud-config exercising what ChoirOS's user-data relies on: apt through the
    kitchen's proxy, a package, write_files and runcmd."""
    lines = ["#cloud-config"]
    if packages:
        lines += ["apt:", f"  http_proxy: {info.apt_proxy_url}", f"packages: [{TEST_PACKAGE}]"]
    lines += [
        "write_files:",
        f"  - path: {WRITTEN_FILE}",
        "    permissions: '0644'",
        f"    content: {WRITTEN_TEXT!r}",
        "runcmd:",
        f"  - [sh, -c, {runcmd!r}]",
    ]
    return ("\n".join(lines) + "\n").encode()


def host_name(what: str) -> str:
    return f"{TEST_PREFIX}{what}-{secrets.token_hex(2)}"


@contextmanager
def stack_host(name: str, stack_file: Path) -> Iterator[HostState]:
    """A host converged from ``stack_file`` as ``kitchen up`` would, destroyed afterwards."""
    try:
        yield stack_up(name, stack_file)
    finally:
        lifecycle.destroy(name)


MakeHost = Callable[..., HostState]


# -- in the guest

def guest(host: HostState, *argv: str, user: str | None = None,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``argv`` run in the guest (as root, or ``user``); never raises on a non-zero exit."""
    return lifecycle.exec_in(host.name, list(argv), user=user, timeout=timeout)


def api(host: HostState, method: str, path: str, body: dict[str, Any] | None = None,
        timeout: float = 10) -> Any:
    """The app's JSON answer through Caddy, as a client on this machine gets it."""
    return kitchen_site.host_call(host, method, path, body, timeout)


def healthy(host: HostState) -> bool:
    """The backend answers ``{"status": "healthy"}`` directly (not through Caddy)."""
    done = guest(host, "curl", "-sf", "-m", "2", BACKEND_HEALTH, timeout=10)
    return done.returncode == 0 and '"healthy"' in done.stdout


def wait_until(what: str, check: Callable[[], object], timeout: float,
               interval: float = 0.2) -> float:
    """Seconds until ``check()`` is true; an AssertionError naming ``what`` after ``timeout``."""
    started = time.monotonic()
    if not poll_until(lambda: bool(check()), timeout, interval):
        raise AssertionError(f"{what}: not within {timeout:g}s")
    return time.monotonic() - started


def metric_points(cfg: StackConfig, metric: str, statistic: str, since: datetime) -> list[float]:
    """The host's 1-minute ``statistic`` of ``metric`` (a name of the host contract,
    :data:`provisioning.spec.METRICS`) since ``since``, read back from the kitchen's
    CloudWatch."""
    stats = cloud.aws_client("cloudwatch", cfg.region).get_metric_statistics(
        Namespace=METRICS.namespace, MetricName=metric,
        Dimensions=[{"Name": METRICS.dimension, "Value": cfg.name}],
        StartTime=since, EndTime=datetime.now(UTC) + timedelta(minutes=2), Period=60,
        Statistics=[statistic])
    return [float(p[statistic]) for p in stats["Datapoints"]]
