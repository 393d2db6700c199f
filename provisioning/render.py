"""HostSpec + Target -> every managed file and the cloud-init user-data that installs them.

One rendering serves EC2 and the kitchen; they differ only in the settings ``Target`` names.
The output is byte-for-byte deterministic (stable ordering, no timestamps, and a gzip encoding
fully specified by :mod:`provisioning.deterministic_gzip`, independent of the OS and the zlib
build), so ``pulumi preview`` shows a user-data change only when the host really changes, on
any operator's machine.

Delivery: configuration files are written by cloud-init from the user-data (``inline``). The
host tools and the pinned Litestream binary are ``artifacts``: the user-data lists their path,
object key and sha256 in /etc/choiros/artifacts.json, and the converge's first step,
``choiros-fetch-artifacts`` (inline, small), downloads and checks them from the artifacts
bucket. That keeps the user-data far below EC2's 16 KB whatever the tools grow to, and EC2 and
the kitchen install the binary the same way. :attr:`Rendering.artifacts` is what Pulumi and
the kitchen publish; it is independent of the stack (see :func:`published_artifacts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from provisioning import deterministic_gzip
from provisioning.artifacts import (
    LITESTREAM,
    PINNED_BINARIES,
    Artifact,
    PinnedBinary,
    binary_artifact,
)
from provisioning.files import Delivery, ManagedFile
from provisioning.spec import (
    ADMIN_USER,
    APP_ROOT,
    APP_USER,
    BACKEND_FIREWALL_RULES,
    BACKEND_GROUP,
    BACKEND_PATHS,
    BACKEND_PORT,
    BACKEND_UNIT,
    CONFIG_DIR,
    DATA_DIR,
    DATABASE,
    DNS_STUB_ADDRESS,
    FRESHNESS_TIMER,
    FRESHNESS_UNIT,
    HEALTHCHECK_TIMER,
    HEALTHCHECK_UNIT,
    HOST_CONFIG,
    LITESTREAM_CONFIG,
    LITESTREAM_RUNTIME_DIR,
    LITESTREAM_SOCKET,
    LITESTREAM_UNIT,
    LOGS_DIR,
    METADATA_ADDRESSES,
    METRICS,
    OPEN_TCP_PORTS,
    REQUIRED_UNITS,
    RESTORE_UNIT,
    SECRETS_ENV_FILE,
    SECRETS_UNIT,
    SHELL_IDLE_TIMEOUT,
    WORKSPACE_DIR,
    HostSpec,
    TlsMode,
)
from provisioning.target import Target
from provisioning.templates import host_tool_source, render_template

# EC2 refuses user-data above 16 KB (after base64 decoding).
EC2_USER_DATA_LIMIT = 16384

CONVERGE_SCRIPT = "/usr/local/sbin/choiros-converge"
FETCH_ARTIFACTS = "/usr/local/sbin/choiros-fetch-artifacts"
RETRY = "/usr/local/sbin/choiros-retry"
# Delivered in the user-data: what runs before the artifacts are there.
INLINE_TOOLS = frozenset({FETCH_ARTIFACTS, RETRY})
ARTIFACTS_LIST = f"{CONFIG_DIR}/artifacts.json"

# Host tools: install path -> source file in provisioning/host_tools. All but the bootstrap
# (INLINE_TOOLS) travel as artifacts.
HOST_TOOLS: tuple[tuple[str, str], ...] = (
    (FETCH_ARTIFACTS, "choiros-fetch-artifacts"),
    (RETRY, "choiros-retry"),
    ("/usr/local/lib/choiros/choiros_tool.py", "choiros_tool.py"),
    ("/usr/local/lib/choiros/choiros_release.py", "choiros_release.py"),
    ("/usr/local/lib/choiros/choiros_deploy.py", "choiros_deploy.py"),
    ("/usr/local/lib/choiros/choiros_secrets.py", "choiros_secrets.py"),
    ("/usr/local/lib/choiros/choiros_backup.py", "choiros_backup.py"),
    ("/usr/local/bin/choiros-deploy", "choiros-deploy"),
    ("/usr/local/bin/choiros-rollback", "choiros-rollback"),
    ("/usr/local/sbin/choiros-secrets", "choiros-secrets"),
    ("/usr/local/sbin/choiros-restore", "choiros-restore"),
    ("/usr/local/sbin/choiros-restore-at-boot", "choiros-restore-at-boot"),
    ("/usr/local/sbin/choiros-backup", "choiros-backup"),
    ("/usr/local/sbin/choiros-backup-freshness", "choiros-backup-freshness"),
    ("/usr/local/lib/choiros/choiros_health.py", "choiros_health.py"),
    ("/usr/local/sbin/choiros-healthcheck", "choiros-healthcheck"),
)


@dataclass(frozen=True)
class Rendering:
    """What the host gets: its managed files, the pinned binaries, and the user-data that puts
    them there."""

    target: str
    files: tuple[ManagedFile, ...]
    cloud_config: str
    binaries: tuple[PinnedBinary, ...] = PINNED_BINARIES

    @property
    def user_data(self) -> bytes:
        """The exact bytes handed to the instance: the cloud-config, gzip-encoded the same way
        on every machine."""
        return deterministic_gzip.compress(self.cloud_config.encode("utf-8"))

    @property
    def inline_files(self) -> tuple[ManagedFile, ...]:
        return tuple(f for f in self.files if f.delivery == "inline")

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        """What must be in the artifacts bucket before the host converges, by key."""
        return _artifacts(self.files, self.binaries)

    def manifest(self) -> list[dict[str, str]]:
        """Every file the host gets, however it is delivered, with mode, owner and sha256."""
        binaries = [{"path": b.path, "mode": f"{b.mode:04o}", "owner": "root:root",
                     "sha256": b.sha256, "delivery": "artifact"} for b in self.binaries]
        return [f.manifest_entry() for f in self.files] + binaries

    def file(self, path: str) -> ManagedFile:
        for managed in self.files:
            if managed.path == path:
                return managed
        raise KeyError(path)


def _site_address(spec: HostSpec, tls_mode: TlsMode) -> str:
    if tls_mode == "acme":
        assert spec.domain is not None, "StackConfig refuses acme without a domain"
        return spec.domain
    if tls_mode == "internal":
        return f"{spec.domain}:443" if spec.domain else ":443"
    return ":80"


def _site_health_url(tls_mode: TlsMode) -> str:
    """/health through Caddy, from the host itself (choiros-healthcheck)."""
    return "http://127.0.0.1/health" if tls_mode == "off" else "https://127.0.0.1/health"


def _host_config(spec: HostSpec, target: Target) -> str:
    """/etc/choiros/host.json: what the host tools need to know about their stack.

    Its keys are exactly the fields of ``host_tools/choiros_tool.Config`` (``aws`` only for a
    target with an AWS endpoint); tests/unit/test_render.py holds the two together. The metric
    names come from :data:`provisioning.spec.METRICS`, so the tools publish what the alarms
    watch."""
    tls_mode = target.tls_mode(spec.tls_mode)
    config: dict[str, Any] = {
        "region": spec.region,
        "artifacts_bucket": spec.artifacts_bucket,
        "backups_bucket": spec.backups_bucket,
        "backup_prefix": spec.backup_prefix,
        "secrets": list(spec.secrets),
        "app_root": APP_ROOT,
        "backend_unit": BACKEND_UNIT,
        "health_url": f"http://127.0.0.1:{BACKEND_PORT}/health",
        "health_timeout_seconds": spec.health_timeout_seconds,
        "keep_releases": spec.keep_releases,
        "env_file": SECRETS_ENV_FILE,
        "hostname": spec.hostname,
        "app_user": APP_USER,
        "database": DATABASE,
        "expected_tables": list(spec.backup.expected_tables),
        "litestream_config": LITESTREAM_CONFIG,
        "litestream_unit": LITESTREAM_UNIT,
        "litestream_socket": LITESTREAM_SOCKET,
        "sync_interval_seconds": spec.backup.sync_interval_seconds,
        "litestream": LITESTREAM.path,
        "metrics_namespace": METRICS.namespace,
        "metrics_dimension": METRICS.dimension,
        "backup_age_metric": METRICS.backup_age,
        "healthy_metric": METRICS.healthy,
        "disk_metric": METRICS.disk_used,
        "memory_metric": METRICS.memory_used,
        "site_health_url": _site_health_url(tls_mode),
        "site_server_name": spec.domain or "",
        "data_dir": DATA_DIR,
        "logs_dir": LOGS_DIR,
        "required_units": list(REQUIRED_UNITS),
    }
    if target.aws_endpoint is not None:
        config["aws"] = {"endpoint_url": target.aws_endpoint}
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def managed_files(spec: HostSpec, target: Target) -> tuple[ManagedFile, ...]:
    """Every file the converge writes, in a stable order."""
    tls_mode = target.tls_mode(spec.tls_mode)
    values: dict[str, Any] = {
        "app_root": APP_ROOT,
        "app_user": APP_USER,
        "config_dir": CONFIG_DIR,
        "backend_unit": BACKEND_UNIT,
        "secrets_unit": SECRETS_UNIT,
        "backend_port": BACKEND_PORT,
        "backend_paths": BACKEND_PATHS,
        "open_ports": OPEN_TCP_PORTS,
        "tls_mode": tls_mode,
        "site_address": _site_address(spec, tls_mode),
        "acme_email": spec.acme_email,
        "os": spec.os,
        "fail2ban": spec.fail2ban,
        "proxy_retry": spec.proxy_retry,
        "admin_cidrs": spec.admin_cidrs if target.admin_cidrs is None else target.admin_cidrs,
        "log_rotation": spec.log_rotation,
        "hostname": spec.hostname,
        "admin_user": ADMIN_USER,
        "shell_idle_timeout": SHELL_IDLE_TIMEOUT,
        "data_dir": DATA_DIR,
        "logs_dir": LOGS_DIR,
        "workspace_dir": WORKSPACE_DIR,
        "backend_group": BACKEND_GROUP,
        "backend_firewall_rules": BACKEND_FIREWALL_RULES,
        "metadata_addresses": METADATA_ADDRESSES,
        "dns_stub": DNS_STUB_ADDRESS,
        "database": DATABASE,
        "restore_unit": RESTORE_UNIT,
        "litestream_unit": LITESTREAM_UNIT,
        "litestream_config": LITESTREAM_CONFIG,
        "litestream_runtime_dir": LITESTREAM_RUNTIME_DIR,
        "litestream_socket": LITESTREAM_SOCKET,
        "freshness_timer": FRESHNESS_TIMER,
        "healthcheck_timer": HEALTHCHECK_TIMER,
        "fetch_artifacts": FETCH_ARTIFACTS,
        "retry": RETRY,
        "metrics": METRICS,
        "backup": spec.backup,
        "backups_bucket": spec.backups_bucket,
        "replica_path": spec.backup_prefix.rstrip("/"),
        "region": spec.region,
        "aws_endpoint": target.aws_endpoint,
    }

    def tpl(name: str) -> str:
        return render_template(name, **values)

    files = [
        ManagedFile("/etc/caddy/Caddyfile", tpl("Caddyfile.j2")),
        ManagedFile(f"/etc/systemd/system/{BACKEND_UNIT}", tpl("choiros-backend.service.j2")),
        ManagedFile(f"/etc/systemd/system/{BACKEND_UNIT}.d/hardening.conf",
                    tpl("hardening.conf.j2")),
        ManagedFile(BACKEND_FIREWALL_RULES, tpl("backend-firewall.nft.j2")),
        ManagedFile(f"/etc/systemd/system/{SECRETS_UNIT}", tpl("choiros-secrets.service.j2")),
        ManagedFile("/etc/fail2ban/jail.local", tpl("jail.local.j2")),
        ManagedFile("/etc/ssh/sshd_config.d/10-choiros.conf", tpl("sshd-choiros.conf.j2")),
        ManagedFile("/etc/issue", tpl("issue.j2")),
        ManagedFile("/etc/issue.net", tpl("issue.j2")),
        ManagedFile("/etc/security/limits.d/10-choiros.conf", tpl("limits-core.j2")),
        ManagedFile("/etc/systemd/coredump.conf.d/10-choiros.conf", tpl("coredump.j2")),
        ManagedFile("/etc/modprobe.d/choiros-blacklist.conf", tpl("modprobe-blacklist.j2")),
        ManagedFile("/etc/sysctl.d/60-choiros.conf", tpl("sysctl.j2")),
        ManagedFile("/etc/login.defs", tpl("login.defs.j2")),
        ManagedFile("/etc/profile", tpl("profile.j2")),
        ManagedFile("/etc/apt/apt.conf.d/52choiros-unattended-upgrades",
                    tpl("unattended-upgrades.j2")),
        ManagedFile("/etc/apt/apt.conf.d/20auto-upgrades", tpl("auto-upgrades.j2")),
        ManagedFile("/etc/logrotate.d/choiros", tpl("logrotate.j2")),
        ManagedFile(f"/etc/systemd/system/{RESTORE_UNIT}",
                    tpl("choiros-restore-at-boot.service.j2")),
        ManagedFile(f"/etc/systemd/system/{LITESTREAM_UNIT}",
                    tpl("choiros-litestream.service.j2")),
        ManagedFile(f"/etc/systemd/system/{FRESHNESS_UNIT}",
                    tpl("choiros-backup-freshness.service.j2")),
        ManagedFile(f"/etc/systemd/system/{FRESHNESS_TIMER}",
                    tpl("choiros-backup-freshness.timer.j2")),
        ManagedFile(f"/etc/systemd/system/{HEALTHCHECK_UNIT}",
                    tpl("choiros-healthcheck.service.j2")),
        ManagedFile(f"/etc/systemd/system/{HEALTHCHECK_TIMER}",
                    tpl("choiros-healthcheck.timer.j2")),
        # Readable by the services that run as the app user; the kitchen's holds test keys.
        ManagedFile(LITESTREAM_CONFIG, tpl("litestream.yml.j2"), mode=0o640, group=APP_USER),
        ManagedFile(HOST_CONFIG, _host_config(spec, target)),
        ManagedFile(CONVERGE_SCRIPT, tpl("choiros-converge.sh.j2"), mode=0o755),
    ]
    tools = host_tool_files()
    files.append(ManagedFile(ARTIFACTS_LIST, _artifacts_list(tools)))
    return (*files, *tools)


def host_tool_files() -> tuple[ManagedFile, ...]:
    """The host tools, the same for every stack and target."""
    files = []
    for path, source in HOST_TOOLS:
        mode = 0o644 if path.endswith(".py") else 0o755
        delivery: Delivery = "inline" if path in INLINE_TOOLS else "artifact"
        files.append(ManagedFile(path, host_tool_source(source), mode=mode, delivery=delivery))
    return tuple(files)


def _artifacts(files: tuple[ManagedFile, ...],
               binaries: tuple[PinnedBinary, ...]) -> tuple[Artifact, ...]:
    found = [f.artifact() for f in files if f.delivery == "artifact"]
    return (*found, *(binary_artifact(b) for b in binaries))


def published_artifacts() -> tuple[Artifact, ...]:
    """What Pulumi and the kitchen upload: every rendering's artifacts (they are the same for
    every stack and target, which a unit test holds them to)."""
    return _artifacts(host_tool_files(), PINNED_BINARIES)


def _artifacts_list(tools: tuple[ManagedFile, ...]) -> str:
    """/etc/choiros/artifacts.json: what choiros-fetch-artifacts installs, in order."""
    entries = [a.entry() for a in _artifacts(tools, PINNED_BINARIES)]
    return json.dumps(entries, indent=1, sort_keys=True) + "\n"


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings as YAML block literals, so the user-data stays readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _represent_str)


def _cloud_config(spec: HostSpec, target: Target, files: tuple[ManagedFile, ...]) -> str:
    apt: dict[str, Any] = {}
    if target.apt_proxy is not None:
        apt["http_proxy"] = target.apt_proxy
    document: dict[str, Any] = {
        "hostname": spec.hostname,
        "manage_etc_hosts": True,
        "disable_root": True,
        "ssh_pwauth": False,
        "users": [
            "default",
            {
                "name": APP_USER,
                "system": True,
                "shell": "/usr/sbin/nologin",
                "homedir": APP_ROOT,
                "no_create_home": True,
                "lock_passwd": True,
            },
        ],
        # The backend's own primary group (see provisioning/spec.py BACKEND_GROUP).
        "groups": [BACKEND_GROUP],
    }
    if apt:
        document["apt"] = apt
    document["package_update"] = True
    document["packages"] = list(spec.packages)
    # Deferred: written after the users exist and the packages are installed, so the packages'
    # own defaults never overwrite ours and owners resolve.
    document["write_files"] = [
        {
            "path": f.path,
            "owner": f"{f.owner}:{f.group}",
            "permissions": f"{f.mode:04o}",
            "defer": True,
            "content": f.content,
        }
        for f in files
        if f.delivery == "inline"
    ]
    document["runcmd"] = [[CONVERGE_SCRIPT]]
    body = yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, width=100,
                     allow_unicode=True)
    return "#cloud-config\n" + body


def render(spec: HostSpec, target: Target) -> Rendering:
    files = managed_files(spec, target)
    return Rendering(target=target.name, files=files, cloud_config=_cloud_config(spec, target,
                                                                                  files))
