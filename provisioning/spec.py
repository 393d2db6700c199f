"""HostSpec: the one description of a ChoirOS host, in the terms the host itself uses.

It is what the runbooks describe by hand (packages, users, paths, firewall, services) with the
review's target state. ``infra`` builds it from the stack config; the renderer turns it into
files and cloud-init user-data. Plain data, no Pulumi, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Only what the kitchen boots and tests: Ubuntu 22.04's Python 3.10 cannot run the host tools.
OsName = Literal["debian-12"]
TlsMode = Literal["acme", "internal", "off"]

APP_ROOT = "/opt/choiros"
CONFIG_DIR = "/etc/choiros"
APP_USER = "choiros"
# The login Debian's cloud images create (EC2 key pair, kitchen meta-data): sshd allows only it.
ADMIN_USER = "admin"
BACKEND_UNIT = "choiros-backend.service"
# The backend runs an LLM agent with a shell, so it is treated as hostile. It runs as the app
# user (it owns the data it writes) but with a primary group of its own, which nothing else on
# the host has and it cannot leave (no setgid, no capabilities): the backend's egress firewall
# matches its sockets by that group, so Litestream and the backup tools, also the app user,
# keep the instance metadata service.
BACKEND_GROUP = "choiros-backend"
BACKEND_FIREWALL_RULES = "/etc/choiros/backend-firewall.nft"
# EC2's instance metadata service, IPv4 and IPv6 (Nitro): the instance role's credentials.
METADATA_ADDRESSES: tuple[str, ...] = ("169.254.169.254", "fd00:ec2::254")
# systemd-resolved's stub resolver, the only loopback service the backend may reach besides
# its own port (an image that resolves names through it would otherwise leave it no DNS).
DNS_STUB_ADDRESS = "127.0.0.53"
SECRETS_UNIT = "choiros-secrets.service"
# The host tools' config, and the backend's EnvironmentFile that the secrets unit writes the
# SSM values into: the only file on the host holding the stack's secrets.
HOST_CONFIG = f"{CONFIG_DIR}/host.json"
SECRETS_ENV_FILE = f"{CONFIG_DIR}/backend.env"
BACKEND_PORT = 8080

# The backend's SQLite event store, and what keeps it safe: Litestream replicates it to the
# backups bucket; restore-at-boot brings it back on a new host before the backend starts; the
# freshness timer publishes how far the replica is behind.
DATA_DIR = f"{APP_ROOT}/data"
LOGS_DIR = f"{APP_ROOT}/logs"
# The agent's tools write files relative to the backend's working directory: this one, the
# only other place the backend may write.
WORKSPACE_DIR = f"{APP_ROOT}/workspace"
DATABASE = f"{DATA_DIR}/events.db"
LITESTREAM_UNIT = "choiros-litestream.service"
RESTORE_UNIT = "choiros-restore-at-boot.service"
FRESHNESS_UNIT = "choiros-backup-freshness.service"
FRESHNESS_TIMER = "choiros-backup-freshness.timer"
LITESTREAM_CONFIG = f"{CONFIG_DIR}/litestream.yml"
LITESTREAM_BINARY = "/usr/local/bin/litestream"
# Litestream's control socket, in the unit's runtime directory: `choiros-backup --now` asks the
# running replication through it to sync at once (`litestream sync -wait`).
LITESTREAM_RUNTIME_DIR = "choiros-litestream"
LITESTREAM_SOCKET = f"/run/{LITESTREAM_RUNTIME_DIR}/litestream.sock"

# The health check: every minute its timer checks /health through Caddy and directly, the
# units that must run, disk and memory, logs one JSON line and publishes the HostMetrics.
HEALTHCHECK_UNIT = "choiros-healthcheck.service"
HEALTHCHECK_TIMER = "choiros-healthcheck.timer"
# The units the host must run: the health check reports each (host.json's required_units)
# and is unhealthy when one is not active.
REQUIRED_UNITS: tuple[str, ...] = (BACKEND_UNIT, "caddy.service", LITESTREAM_UNIT,
                                   "fail2ban.service", "ssh.service")

# Distro packages the host needs; nothing to compile: release artifacts are built elsewhere.
# python3-systemd lets fail2ban read the journal (its systemd backend); nftables loads the
# backend's egress firewall; the backend's agent shells out to ripgrep (`rg`); debsums checks
# installed files against their packages, apt-show-versions lists upgradable ones,
# libpam-tmpdir gives each login its own TMPDIR, libpam-pwquality rejects weak passwords should
# one ever be set (logins are by key). Not needrestart: it pulls in binutils (an assembler).
BASE_PACKAGES: tuple[str, ...] = (
    "apt-listchanges",
    "apt-show-versions",
    "ca-certificates",
    "caddy",
    "curl",
    "debsums",
    "fail2ban",
    "libpam-pwquality",
    "libpam-tmpdir",
    "logrotate",
    "nftables",
    "python3-boto3",
    "python3-systemd",
    "ripgrep",
    "sqlite3",
    "ufw",
    "unattended-upgrades",
)

# An idle interactive login shell ends after this many seconds (TMOUT in /etc/profile).
SHELL_IDLE_TIMEOUT = 900

# The runbook's firewall: everything else inbound is denied.
OPEN_TCP_PORTS: tuple[int, ...] = (22, 80, 443)

# Paths Caddy hands to the backend; everything else is the static frontend.
BACKEND_PATHS: tuple[str, ...] = ("/health*", "/api/*", "/chat/*", "/desktop/*", "/ws*")


@dataclass(frozen=True)
class ProxyRetry:
    """How long Caddy holds a request while the backend is down, dialling it again every
    interval: longer than a restart (the stand-in app: under 1 s), shorter than a client's
    patience. A backend down for longer answers 502 after try_duration."""

    try_duration_seconds: int = 15
    try_interval_ms: int = 100


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
class BackupPolicy:
    """Continuous replication of the event store, and what a restored copy must contain.

    ``sync_interval_seconds`` is Litestream's sync-interval: at most that much acknowledged
    data is lost with the host (the RPO), and under continuous writes Litestream uploads one
    object per interval (see ``templates/litestream.yml.j2`` for what that costs). Snapshots
    are taken every ``snapshot_interval_hours`` and kept ``retention_days``, the same window
    the bucket keeps old object versions, so any point in that window can be restored.
    ``expected_tables`` are the tables a restore must find before it replaces anything (the
    stand-in app's table is ``events``, see kitchen/fixture_app/sandbox.py).
    """

    sync_interval_seconds: int = 1
    retention_days: int = 30
    snapshot_interval_hours: int = 24
    expected_tables: tuple[str, ...] = ("events",)
    # The freshness alarm fires when the replica is more than this far behind for
    # ``stale_minutes`` minutes in a row, or when the metric stops arriving that long.
    stale_after_seconds: int = 60
    stale_minutes: int = 15


@dataclass(frozen=True)
class HostMetrics:
    """The CloudWatch metrics the host publishes about itself, one dimension ``Host``.

    The one place their names live: the renderer writes them into host.json (the host tools
    publish what it says), ``infra.monitoring`` builds the alarms on them, ``infra.iam``
    limits the instance role to the namespace and the kitchen tests read them back.
    ``healthy``, ``disk_used`` and ``memory_used`` come from choiros-healthcheck every minute,
    ``backup_age`` from choiros-backup-freshness.
    """

    namespace: str = "ChoirOS"
    dimension: str = "Host"
    healthy: str = "Healthy"
    disk_used: str = "DiskUsedPercent"
    memory_used: str = "MemoryUsedPercent"
    backup_age: str = "BackupAgeSeconds"


METRICS = HostMetrics()


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
    # Who may SSH in (the security group's rule); fail2ban never bans them.
    admin_cidrs: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    keep_releases: int = 5
    health_timeout_seconds: int = 30
    fail2ban: Fail2banPolicy = Fail2banPolicy()
    log_rotation: LogRotation = LogRotation()
    backup: BackupPolicy = BackupPolicy()
    proxy_retry: ProxyRetry = ProxyRetry()

    @property
    def packages(self) -> tuple[str, ...]:
        return BASE_PACKAGES
