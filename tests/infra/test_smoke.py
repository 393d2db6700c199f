"""Smoke suite: the host answers through Caddy, its services run, its firewall holds."""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.request

import pytest
from expectations import MAX_BACKEND_EXPOSURE, RUNNING_UNITS, Expectations
from testinfra.host import Host


def _get(url: str) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the kitchen's Caddy signs with its internal CA
    with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310
        return int(response.status), bytes(response.read())


def test_health_answers_through_caddy_from_outside(host: Host, expected: Expectations) -> None:
    """Runbook: monitoring, health endpoint through Caddy."""
    status, body = _get(f"{expected.scheme}://{host.backend.hostname}/health")
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "healthy" and health["service"] == "choiros-sandbox"


@pytest.mark.parametrize("unit", RUNNING_UNITS)
def test_service_is_enabled_and_running(host: Host, unit: str) -> None:
    """Runbook: services, every ChoirOS unit enabled and running."""
    service = host.service(unit)
    assert service.is_enabled, f"{unit} is not enabled"
    assert service.is_running, f"{unit} is not running"


def test_firewall_is_active_and_denies_by_default(host: Host) -> None:
    """Runbook: security, ufw default deny incoming, 22/80/443 open."""
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "deny (incoming)" in status
    for port in (22, 80, 443):
        assert re.search(rf"^{port}/tcp\s+ALLOW IN\s+Anywhere\s*$", status, re.M), status


def test_backend_port_is_not_reachable_from_outside(host: Host) -> None:
    """Runbook: security, the backend listens behind Caddy only."""
    assert host.socket("tcp://0.0.0.0:8080").is_listening or host.socket(
        "tcp://127.0.0.1:8080").is_listening, "the backend is not listening at all"
    with pytest.raises(OSError):
        socket.create_connection((host.backend.hostname, 8080), timeout=3).close()


def test_backend_sandbox_exposure_is_at_most_the_target(host: Host) -> None:
    """Runbook: services, systemd sandbox of the backend (systemd-analyze security)."""
    report = host.run("systemd-analyze security --no-pager choiros-backend.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report.stdout)
    assert match, report.stdout[-500:] + report.stderr
    assert float(match.group(1)) <= MAX_BACKEND_EXPOSURE, report.stdout[-2000:]
