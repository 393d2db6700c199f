"""HostSpec: the one description of a ChoirOS host, in the terms the host itself uses.

It is what the runbooks describe by hand (packages, users, paths, firewall, services) with the
review's target state. ``infra`` builds it from the stack config; the renderer turns it into
files and cloud-init user-data. Plain data, no Pulumi, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OsName = Literal["debian-12", "ubuntu-22.04"]
TlsMode = Literal["acme", "internal", "off"]

APP_ROOT = "/opt/choiros"
CONFIG_DIR = "/etc/choiros"
APP_USER = "choiros"
BACKEND_UNIT = "choiros-backend.service"
SECRETS_UNIT = "choiros-secrets.service"
BACKEND_PORT = 8080

# Distro packages the host needs; nothing to compile: release artifacts are built elsewhere.
# python3-systemd lets fail2ban read the journal (its systemd backend).
BASE_PACKAGES: tuple[str, ...] = (
    "apt-listchanges",
    "ca-certificates",
    "caddy",
    "curl",
    "fail2ban",
    "logrotate",
    "python3-boto3",
    "python3-systemd",
    "sqlite3",
    "ufw",
    "unattended-upgrades",
)

# The runbook's firewall: everything else inbound is denied.
OPEN_TCP_PORTS: tuple[int, ...] = (22, 80, 443)

# Paths Caddy hands to the backend; everything else is the static frontend.
BACKEND_PATHS: tuple[str, ...] = ("/health*", "/api/*", "/chat/*", "/desktop/*", "/ws*")


@dataclass(frozen=True)
class Fail2banPolicy:
    """The runbook's jail values; backend systemd because Debian 12 has no auth.log."""

    bantime: int = 3600
    findtime: int = 600
    maxretry: int = 3


@dataclass(frozen=True)
class LogRotation:
    """The runbook's logrotate values for the backend's logs."""

    period: str = "daily"
    rotate: int = 14


@dataclass(frozen=True)
class HostSpec:
    """Everything that makes a ChoirOS host, independent of where it runs."""

    hostname: str
    os: OsName
    region: str
    artifacts_bucket: str
    backups_bucket: str
    backup_prefix: str
    domain: str | None = None
    acme_email: str | None = None
    tls_mode: TlsMode = "off"
    secrets: tuple[str, ...] = ()
    app_version: str | None = None
    keep_releases: int = 5
    health_timeout_seconds: int = 30
    fail2ban: Fail2banPolicy = Fail2banPolicy()
    log_rotation: LogRotation = LogRotation()

    @property
    def admin_user(self) -> str:
        """The login the AMI's cloud-init creates: Debian's images say admin, Ubuntu's ubuntu."""
        return "admin" if self.os == "debian-12" else "ubuntu"

    @property
    def packages(self) -> tuple[str, ...]:
        return BASE_PACKAGES
