"""Library of the ChoirOS host tool choiros-healthcheck (choiros-healthcheck.timer, every minute).

Installed as /usr/local/lib/choiros/choiros_health.py beside choiros_tool.py and
choiros_backup.py. One run checks:

* /health through Caddy (host.json `site_health_url`, with `site_server_name` as Host and SNI;
  the certificate is not verified: the check is about the service on this host, and the
  kitchen's is self-signed) and directly at the backend (`health_url`);
* that every unit in `required_units` is active;
* disk use of /, the data directory and the log directory, memory use
  (1 - MemAvailable/MemTotal);
* backup freshness (choiros_backup.backup_age; informational, it has its own alarm).

A filesystem with less than 64 MiB left for the app's user is *full*: the database, its
replication and the logs are about to fail their writes, while /health still answers (it
writes nothing). That is an outage, so it counts as unhealthy. A fuller disk short of that is
only a figure: the disk-full alarm (a stack setting, not a host one, so that changing it does
not replace the host) decides when it matters.

It prints ONE JSON line (the journal keeps it) and publishes to CloudWatch under host.json's
names (provisioning/spec.py's HostMetrics), namespace `metrics_namespace`, dimension
`metrics_dimension`=<hostname>: `healthy_metric` (1 when both health answers are healthy and
every required unit is active and no checked filesystem is full, else 0), `disk_metric` (the
fullest of the checked filesystems), `memory_metric`. Exit 0 when it published
(healthy or not: an unhealthy host is data for the alarm, not a failure of this unit), 4 when
it could not publish.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import http.client

if TYPE_CHECKING or __package__:  # in the repository; on the host, a sibling module
    from provisioning.host_tools.choiros_tool import (
        BROKEN,
        OK,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        run_tool,
    )
else:
    from choiros_tool import (
        BROKEN,
        OK,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        run_tool,
    )

HTTP_TIMEOUT = 5.0
FULL_BELOW_BYTES = 64 << 20


def probe(url: str, server_name: str = "", timeout: float = HTTP_TIMEOUT) -> dict[str, Any]:
    """GET url (no proxy; https without certificate verification, SNI and Host =
    server_name when given): {"ok", "status", "body" or "error", "ms"}."""
    import http.client  # here, not at start-up: `--help` needs neither
    import ssl

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    path = parts.path or "/"
    started = time.monotonic()
    result: dict[str, Any] = {"url": url, "ok": False}
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = _sni_connection(host, parts.port or 443, timeout=timeout, context=ctx,
                                   server_name=server_name)
        else:
            conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": server_name or host,
                                               "User-Agent": "choiros-healthcheck"})
            resp = conn.getresponse()
            raw = resp.read(65536)
        finally:
            conn.close()
        result["status"] = resp.status
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw[:200].decode("utf-8", "replace")
        result["body"] = body
        result["ok"] = resp.status == 200 and isinstance(body, dict) \
            and body.get("status") == "healthy"
    except (OSError, http.client.HTTPException) as e:
        result["error"] = str(e) or type(e).__name__
    result["ms"] = round((time.monotonic() - started) * 1000)
    return result


def _sni_connection(host: str, port: int, *, timeout: float, context: Any,
                    server_name: str) -> http.client.HTTPSConnection:
    """HTTPS to an address, with another name in the TLS handshake (SNI)."""
    import http.client
    import socket

    class SniConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            sock = socket.create_connection((self.host, self.port), self.timeout)
            self.sock = context.wrap_socket(sock, server_hostname=server_name or None)

    return SniConnection(host, port, timeout=timeout, context=context)


def unit_states(units: tuple[str, ...]) -> dict[str, str]:
    """`systemctl is-active` of each unit ($CHOIROS_SYSTEMCTL in tests)."""
    if not units:
        return {}
    cmd = [os.environ.get("CHOIROS_SYSTEMCTL", "systemctl"), "is-active", *units]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        states = r.stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        states = []
    return {u: (states[i] if i < len(states) else "unknown") for i, u in enumerate(units)}


def disk_usage(path: Path) -> tuple[float, int]:
    """(percent used, bytes free) as df counts them: used / (used + available to unprivileged
    users), and df's Avail, which leaves out the blocks reserved for root."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    usable = used + free
    return (round(100.0 * used / usable, 1) if usable else 100.0), free


def memory_used_percent(meminfo: Path = Path("/proc/meminfo")) -> float:
    values: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[name] = int(fields[0])
    total, available = values.get("MemTotal", 0), values.get("MemAvailable", 0)
    return round(100.0 * (total - available) / total, 1) if total else 0.0


def _backup_age(cfg: Config) -> float | None:
    try:
        if TYPE_CHECKING or __package__:
            from provisioning.host_tools.choiros_backup import backup_age
        else:
            from choiros_backup import backup_age
        return round(backup_age(cfg), 1)
    except (ToolError, OSError, ImportError):
        return None


def check(cfg: Config, backup_age: Callable[[Config], float | None] = _backup_age,
          meminfo: Path = Path("/proc/meminfo"),
          full_below_bytes: int = FULL_BELOW_BYTES) -> dict[str, Any]:
    """Everything one run looks at, as the JSON object it logs."""
    site = probe(cfg.site_health_url, cfg.site_server_name) if cfg.site_health_url else None
    backend = probe(cfg.health_url)
    units = unit_states(cfg.required_units)
    disks: dict[str, float | None] = {}
    free_mb: dict[str, int | None] = {}
    full: list[str] = []
    for path in dict.fromkeys(("/", str(cfg.data_dir), str(cfg.logs_dir))):
        try:
            disks[path], free = disk_usage(Path(path))
        except OSError:
            disks[path] = free_mb[path] = None
            continue
        free_mb[path] = free >> 20
        if free < full_below_bytes:
            full.append(f"{path} is full: {free >> 20} MiB free")
    try:
        memory: float | None = memory_used_percent(meminfo)
    except OSError:
        memory = None
    problems = [f"{name} /health: " + str(p.get("error") or f"HTTP {p.get('status')}")
                for name, p in (("caddy", site), ("backend", backend)) if p and not p["ok"]]
    problems += [f"{u} is {s}" for u, s in units.items() if s != "active"]
    problems += full
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "host": cfg.hostname or os.uname().nodename,
        "healthy": not problems,
        "problems": problems,
        "health": {"caddy": site, "backend": backend},
        "units": units,
        "disk_used_percent": disks,
        "disk_free_mb": free_mb,
        "memory_used_percent": memory,
        "backup_age_seconds": backup_age(cfg),
    }


def metrics(cfg: Config, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's data under host.json's metric names (healthy; disk and memory when read)."""
    data = [cfg.metric(cfg.healthy_metric, 1.0 if report["healthy"] else 0.0, "Count")]
    disks = [v for v in report["disk_used_percent"].values() if v is not None]
    if disks:
        data.append(cfg.metric(cfg.disk_metric, max(disks), "Percent"))
    if report["memory_used_percent"] is not None:
        data.append(cfg.metric(cfg.memory_metric, report["memory_used_percent"], "Percent"))
    return data


def healthcheck(cfg: Config) -> int:
    report = check(cfg)
    errors: tuple[type[Exception], ...] = (*aws_errors(), ToolError)
    try:
        aws_client(cfg, "cloudwatch").put_metric_data(Namespace=cfg.metrics_namespace,
                                                      MetricData=metrics(cfg, report))
        report["published"] = True
    except errors as e:
        report["published"] = False
        report["publish_error"] = str(e)
    print(json.dumps(report, sort_keys=True, default=str), flush=True)
    if not report["published"]:
        return BROKEN
    return OK


def healthcheck_main(argv: list[str] | None = None) -> int:
    return run_tool(argv, "choiros-healthcheck", "Check /health (through Caddy and direct), the "
                    "required units, disk and memory;\nlog one JSON line and publish Healthy, "
                    "DiskUsedPercent and MemoryUsedPercent\nto CloudWatch.",
                    lambda cfg, a: healthcheck(cfg))
