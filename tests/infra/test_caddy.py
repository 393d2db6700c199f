"""Caddy, asked from outside as a browser would: its routes, the SPA fallback, its headers,
HTTPS with HSTS (and 80 redirecting) unless TLS is off."""

from __future__ import annotations

import json
from typing import Any

import pytest
from expectations import APP_ROOT, Expectations
from testinfra.host import Host

from choiros_infra.expect.kinds.http import HttpResponse, fetch_via_caddy
from choiros_infra.expect.probes import HostCommand, ProbeContext

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
# One path Caddy proxies to the backend, one it serves from the release's dist/.
ROUTES = ("/health", "/")
UNKNOWN_PATH = "/no/such/page/choiros-verify"
INDEX = f"{APP_ROOT}/current/dist/index.html"


def host_commands(config: pytest.Config) -> list[HostCommand]:
    """What verify reads ahead for this module (choiros_infra/verify_batch.py): the SPA's
    index.html as testinfra's ``file().content_string`` reads it."""
    return [HostCommand("cat -- %s", (INDEX,))]


class Responses:
    """GET responses through Caddy, each fetched once per module (a failure too: a host
    that does not answer costs one timeout, not one per test)."""

    def __init__(self, caddy: ProbeContext) -> None:
        self.caddy = caddy
        self.other_ports: dict[int, ProbeContext] = {}

    def get(self, path: str, port: int | None = None) -> HttpResponse:
        ctx = self.caddy
        if port is not None:
            ctx = self.other_ports.setdefault(port, ProbeContext(
                host=ctx.host, outside_address=ctx.outside_address, sudo=ctx.sudo,
                scheme="http" if port == 80 else ctx.scheme, caddy_port=port))
        response = fetch_via_caddy(ctx, "GET", path)
        if isinstance(response, str):
            pytest.fail(response, pytrace=False)
        return response


@pytest.fixture(scope="module")
def site(caddy: ProbeContext) -> Responses:
    return Responses(caddy)


def _json(response: HttpResponse) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        pytest.fail(f"not JSON ({response.status}): {response.body[:200]!r}", pytrace=False)


def test_health_is_proxied_to_the_backend(site: Responses, expected: Expectations) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#verify

    GET /health through Caddy answers 200 healthy from the deployed release.
    """
    response = site.get("/health")
    assert response.status == 200, f"/health: {response.status} {response.body[:200]!r}"
    health = _json(response)
    assert health.get("status") == "healthy", health
    assert health.get("service") == "choiros-sandbox", health
    if expected.wanted is not None:
        assert health.get("version") == expected.wanted.version, health


def test_api_is_proxied_to_the_backend(site: Responses) -> None:
    """Runbook: 90-reference/architecture.md#the-system

    /api/* reaches the backend (/api/events/count answers a count).
    """
    response = site.get("/api/events/count")
    assert response.status == 200, f"/api/events/count: {response.status}"
    assert isinstance(_json(response).get("count"), int), response.body[:200]


@pytest.mark.parametrize("path", ["/", UNKNOWN_PATH])
def test_frontend_is_served_with_spa_fallback(site: Responses, host: Host,
                                              expected: Expectations, path: str) -> None:
    """Runbook: 90-reference/architecture.md#the-system

    Any other path is the SPA's index.html from the current release.
    """
    if expected.wanted is None:
        pytest.skip("the stack wants no release yet: nothing deployed")
    index = host.file(INDEX).content_string
    response = site.get(path)
    assert response.status == 200, f"{path}: {response.status}"
    assert response.body == index, (
        f"{path} is not current/dist/index.html: {response.body[:200]!r}")


@pytest.mark.parametrize("header", sorted(SECURITY_HEADERS))
@pytest.mark.parametrize("path", ROUTES)
def test_security_header(site: Responses, path: str, header: str) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#verify

    Caddy sets the security headers on proxied and static responses.
    """
    shown = site.get(path).header(header)
    assert shown == SECURITY_HEADERS[header], f"{path}: {header} is {shown}"


@pytest.mark.parametrize("path", ROUTES)
def test_no_server_header(site: Responses, path: str) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#verify

    Responses do not name the server.
    """
    shown = site.get(path).header("Server")
    assert shown is None, f"{path}: Server {shown}"


def test_hsts_matches_the_tls_mode(site: Responses, expected: Expectations) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#verify

    HTTPS sends Strict-Transport-Security; a plain-HTTP site (tls_mode off) must not.
    """
    hsts = site.get("/health").header("Strict-Transport-Security")
    if expected.scheme == "https":
        assert hsts is not None and "max-age=" in hsts, f"Strict-Transport-Security: {hsts}"
    else:
        assert hsts is None, f"tls_mode off but Strict-Transport-Security: {hsts}"


def test_http_redirects_to_https(site: Responses, expected: Expectations) -> None:
    """Runbook: 90-reference/host-reference.md#ports

    Port 80 redirects to HTTPS, same path.
    """
    if expected.scheme == "http":
        pytest.skip("tls_mode off: port 80 is the site itself")
    response = site.get("/health", port=80)
    location = response.header("Location") or ""
    assert response.status in (301, 308), f"http://…/health: {response.status}"
    assert location.startswith("https://") and location.endswith("/health"), location

