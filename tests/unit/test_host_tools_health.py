"""choiros-healthcheck: one JSON line per run and the Healthy / DiskUsedPercent /
MemoryUsedPercent metrics, against fake /health servers (plain HTTP and TLS with a
self-signed certificate), a fake `systemctl` and moto's CloudWatch in-process."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from module_loading import host_tool, load_module
from moto import mock_aws

from provisioning.render import render
from provisioning.spec import REQUIRED_UNITS, HostSpec
from provisioning.target import AWS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "provisioning" / "host_tools"
tool = host_tool("choiros_tool")
cb = load_module("choiros_backup", TOOLS / "choiros_backup.py")
hc = load_module("choiros_health", TOOLS / "choiros_health.py")

REGION = "eu-west-1"
HOST = "choiros-unit"

FAKE_SYSTEMCTL = """#!/bin/sh
# is-active UNIT...: one state per line; $FAKE_INACTIVE names the unit that is not active.
shift
for unit in "$@"; do
    if [ "$unit" = "${FAKE_INACTIVE:-}" ]; then echo inactive; else echo active; fi
done
"""


class Health(BaseHTTPRequestHandler):
    status = 200
    seen_hosts: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).seen_hosts.append(self.headers.get("Host", ""))
        healthy = type(self).status == 200
        body = json.dumps({"status": "healthy" if healthy else "down"}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _handler(status: int) -> type[Health]:
    return type("H", (Health,), {"status": status, "seen_hosts": []})


def _serve(handler: type[Health], tls: ssl.SSLContext | None = None) -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    monkeypatch.setenv("CHOIROS_SYSTEMCTL", str(fake))
    monkeypatch.delenv("FAKE_INACTIVE", raising=False)


def _config(tmp_path: Path, site_url: str, backend_url: str, server_name: str = "") -> Path:
    spec = HostSpec(hostname=HOST, os="debian-12", region=REGION, artifacts_bucket="unused",
                    backups_bucket="unused", backup_prefix="hosts/unit/")
    host_json = json.loads(render(spec, AWS).file("/etc/choiros/host.json").content)
    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    host_json.update(site_health_url=site_url, health_url=backend_url,
                     site_server_name=server_name, data_dir=str(data), logs_dir=str(logs),
                     database=str(data / "events.db"))
    path = tmp_path / "host.json"
    path.write_text(json.dumps(host_json))
    return path


def _run(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = hc.healthcheck_main(["--config", str(config)])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, f"one JSON line per run, got {out!r}"
    return code, json.loads(lines[0]), err


def _datapoints(cw: Any, metric: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    stats = cw.get_metric_statistics(
        Namespace="ChoirOS", MetricName=metric, Dimensions=[{"Name": "Host", "Value": HOST}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5), Period=60,
        Statistics=["Minimum", "Maximum"])
    points: list[dict[str, Any]] = stats["Datapoints"]
    return points


@pytest.fixture
def servers() -> Iterator[Callable[[int, int], tuple[str, str]]]:
    started: list[Iterator[HTTPServer]] = []

    def make(site: int, backend: int) -> tuple[str, str]:
        urls = []
        for status in (site, backend):
            gen = _serve(_handler(status))
            started.append(gen)
            urls.append(f"http://127.0.0.1:{next(gen).server_port}/health")
        return urls[0], urls[1]

    yield make
    for gen in started:
        next(gen, None)


def test_a_healthy_host_logs_one_line_and_publishes_healthy_1_disk_and_memory(
        tmp_path: Path, aws: Any, systemctl: None, servers: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, *servers(200, 200))
    code, report, err = _run(config, capsys)
    assert code == tool.OK, err
    assert report["healthy"] is True and report["problems"] == [], report
    assert report["published"] is True, report
    assert report["host"] == HOST
    assert set(report["units"]) == set(REQUIRED_UNITS)
    assert report["health"]["caddy"]["ok"] and report["health"]["backend"]["ok"], report
    checked = {"/", str(tmp_path / "data"), str(tmp_path / "logs")}
    assert set(report["disk_used_percent"]) == set(report["disk_free_mb"]) == checked
    assert 0 < report["memory_used_percent"] < 100
    assert report["backup_age_seconds"] == 0.0  # no database yet: nothing to protect
    assert [p["Minimum"] for p in _datapoints(aws, "Healthy")] == [1.0]
    disk = _datapoints(aws, "DiskUsedPercent")
    assert disk and disk[0]["Unit"] == "Percent", disk
    assert disk[0]["Maximum"] == max(report["disk_used_percent"].values())
    memory = _datapoints(aws, "MemoryUsedPercent")
    assert memory and memory[0]["Maximum"] == report["memory_used_percent"], memory


@pytest.mark.parametrize(("site", "backend", "problem"), [
    (502, 502, "caddy /health: HTTP 502"),
    (200, 503, "backend /health: HTTP 503"),
])
def test_a_failing_health_answer_publishes_healthy_0_and_names_it(
        tmp_path: Path, aws: Any, systemctl: None, servers: Any,
        capsys: pytest.CaptureFixture[str], site: int, backend: int, problem: str) -> None:
    config = _config(tmp_path, *servers(site, backend))
    code, report, err = _run(config, capsys)
    assert code == tool.OK, f"an unhealthy host is data, not a failed run: {err}"
    assert report["healthy"] is False and problem in report["problems"], report
    assert [p["Maximum"] for p in _datapoints(aws, "Healthy")] == [0.0]


def test_nothing_listening_is_unhealthy(tmp_path: Path, aws: Any, systemctl: None,
                                        servers: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, backend = servers(200, 200)
    config = _config(tmp_path, "http://127.0.0.1:9/health", backend)
    _, report, _ = _run(config, capsys)
    assert report["healthy"] is False, report
    assert report["problems"][0].startswith("caddy /health: "), report
    assert "error" in report["health"]["caddy"], report


def test_a_stopped_required_unit_is_unhealthy(
        tmp_path: Path, aws: Any, systemctl: None, servers: Any,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_INACTIVE", "fail2ban.service")
    config = _config(tmp_path, *servers(200, 200))
    _, report, _ = _run(config, capsys)
    assert report["problems"] == ["fail2ban.service is inactive"], report
    assert report["units"]["caddy.service"] == "active"
    assert [p["Maximum"] for p in _datapoints(aws, "Healthy")] == [0.0]


def test_https_through_caddy_sends_the_configured_name_and_accepts_a_self_signed_cert(
        tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=choir.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    names: list[str] = []
    ctx.sni_callback = lambda sock, name, c: names.append(name or "")  # type: ignore[assignment,misc,func-returns-value]
    handler = _handler(200)
    gen = _serve(handler, ctx)
    server = next(gen)
    try:
        result = hc.probe(f"https://127.0.0.1:{server.server_port}/health", "choir.example.com")
    finally:
        next(gen, None)
    assert result["ok"], result
    assert names == ["choir.example.com"]
    assert handler.seen_hosts == ["choir.example.com"]


def test_when_cloudwatch_refuses_the_line_is_still_logged_and_the_run_fails(
        tmp_path: Path, systemctl: None, servers: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, *servers(200, 200))
    raw = json.loads(config.read_text())
    raw["aws"] = {"endpoint_url": "http://127.0.0.1:9"}
    config.write_text(json.dumps(raw))
    code = hc.healthcheck_main(["--config", str(config)])
    out, _ = capsys.readouterr()
    report = json.loads(out)
    assert code == tool.BROKEN
    assert report["published"] is False and report["publish_error"], report
    assert report["healthy"] is True


def test_a_full_filesystem_is_unhealthy_and_named_with_what_is_left(
        tmp_path: Path, systemctl: None, servers: Any) -> None:
    """Full means less free than the floor; the real floor (64 MiB) and a really full
    filesystem are proven in the kitchen (tests/kitchen/test_faults.py)."""
    cfg = tool.load_config(str(_config(tmp_path, *servers(200, 200))))
    free_mb = shutil.disk_usage(tmp_path).free >> 20
    report = hc.check(cfg, backup_age=lambda c: 0.0, full_below_bytes=(free_mb + 1024) << 20)
    assert report["healthy"] is False, report
    for path in ("/", str(tmp_path / "data"), str(tmp_path / "logs")):
        problem = next(p for p in report["problems"] if p.startswith(f"{path} is full: "))
        assert abs(int(problem.split()[3]) - free_mb) <= 64, problem  # MiB free, as df says
    assert [m["Value"] for m in hc.metrics(cfg, report) if m["MetricName"] == "Healthy"] == [0.0]
    room = hc.check(cfg, backup_age=lambda c: 0.0, full_below_bytes=0)
    assert room["healthy"] is True and room["problems"] == [], room


def test_a_missing_directory_is_no_figure_rather_than_a_guess(
        tmp_path: Path, systemctl: None, servers: Any) -> None:
    config = _config(tmp_path, *servers(200, 200))
    (tmp_path / "logs").rmdir()
    report = hc.check(tool.load_config(str(config)), backup_age=lambda c: 0.0)
    logs = str(tmp_path / "logs")
    assert report["disk_used_percent"][logs] is None and report["disk_free_mb"][logs] is None
    assert report["healthy"] is True, report


def test_memory_and_disk_percentages(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2000000 kB\nMemFree:          100000 kB\n"
                       "MemAvailable:     500000 kB\n")
    assert hc.memory_used_percent(meminfo) == 75.0
    used, free = hc.disk_usage(tmp_path)
    assert 0 <= used <= 100
    assert abs(free - shutil.disk_usage(tmp_path).free) < 64 << 20
