"""HostSpec + Target -> every managed file and the cloud-init user-data that installs them.

One rendering serves EC2 and the kitchen; they differ only in the settings ``Target`` names.
The output is byte-for-byte deterministic (stable ordering, no timestamps, gzip mtime 0), so
``pulumi preview`` shows a user-data change only when the host really changes.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

import yaml

from provisioning.files import ManagedFile
from provisioning.spec import (
    APP_ROOT,
    APP_USER,
    BACKEND_PATHS,
    BACKEND_PORT,
    BACKEND_UNIT,
    CONFIG_DIR,
    OPEN_TCP_PORTS,
    SECRETS_UNIT,
    HostSpec,
    TlsMode,
)
from provisioning.target import Target
from provisioning.templates import host_tool_source, render_template

# EC2 refuses user-data above 16 KB (after base64 decoding).
EC2_USER_DATA_LIMIT = 16384

CONVERGE_SCRIPT = "/usr/local/sbin/choiros-converge"

# Host tools: install path -> source file in provisioning/host_tools.
HOST_TOOLS: tuple[tuple[str, str], ...] = (
    ("/usr/local/lib/choiros/choiros_host.py", "choiros_host.py"),
    ("/usr/local/bin/choiros-deploy", "choiros-deploy"),
    ("/usr/local/bin/choiros-rollback", "choiros-rollback"),
    ("/usr/local/sbin/choiros-secrets", "choiros-secrets"),
)

# Caddy's signing key for its own apt repository (Ubuntu 22.04 has no caddy package).
CADDY_APT_KEYID = "65760C51EDEA2017CEA2CA15155B6D79CA56EA34"
CADDY_APT_SOURCE = (
    "deb [signed-by=$KEY_FILE] https://dl.cloudsmith.io/public/caddy/stable/deb/debian "
    "any-version main"
)


@dataclass(frozen=True)
class Rendering:
    """What the host gets: its managed files, and the user-data that puts them there."""

    target: str
    files: tuple[ManagedFile, ...]
    cloud_config: str

    @property
    def user_data(self) -> bytes:
        """The exact bytes handed to the instance: gzip (mtime 0) of the cloud-config."""
        return gzip.compress(self.cloud_config.encode("utf-8"), compresslevel=9, mtime=0)

    def manifest(self) -> list[dict[str, str]]:
        return [f.manifest_entry() for f in self.files]

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


def _host_config(spec: HostSpec, target: Target) -> str:
    """/etc/choiros/host.json: what the host tools need to know about their stack."""
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
        "env_file": f"{CONFIG_DIR}/backend.env",
    }
    if target.aws_endpoint is not None:
        config["aws"] = {
            "endpoint_url": target.aws_endpoint.url,
            "access_key_id": target.aws_endpoint.access_key_id,
            "secret_access_key": target.aws_endpoint.secret_access_key,
        }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def managed_files(spec: HostSpec, target: Target) -> tuple[ManagedFile, ...]:
    """Every file the converge writes, in a stable order."""
    tls_mode: TlsMode = target.tls_mode or spec.tls_mode
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
        "app_version": spec.app_version,
        "os": spec.os,
        "fail2ban": spec.fail2ban,
        "log_rotation": spec.log_rotation,
    }

    def tpl(name: str) -> str:
        return render_template(name, **values)

    files = [
        ManagedFile("/etc/caddy/Caddyfile", tpl("Caddyfile.j2")),
        ManagedFile(f"/etc/systemd/system/{BACKEND_UNIT}", tpl("choiros-backend.service.j2")),
        ManagedFile(f"/etc/systemd/system/{BACKEND_UNIT}.d/hardening.conf",
                    tpl("hardening.conf.j2")),
        ManagedFile(f"/etc/systemd/system/{SECRETS_UNIT}", tpl("choiros-secrets.service.j2")),
        ManagedFile("/etc/fail2ban/jail.local", tpl("jail.local.j2")),
        ManagedFile("/etc/ssh/sshd_config.d/10-choiros.conf", tpl("sshd-choiros.conf.j2")),
        ManagedFile("/etc/apt/apt.conf.d/52choiros-unattended-upgrades",
                    tpl("unattended-upgrades.j2")),
        ManagedFile("/etc/apt/apt.conf.d/20auto-upgrades", tpl("auto-upgrades.j2")),
        ManagedFile("/etc/logrotate.d/choiros", tpl("logrotate.j2")),
        ManagedFile(f"{CONFIG_DIR}/host.json", _host_config(spec, target)),
        ManagedFile(CONVERGE_SCRIPT, tpl("choiros-converge.sh.j2"), mode=0o755),
    ]
    for path, source in HOST_TOOLS:
        mode = 0o644 if path.endswith(".py") else 0o755
        files.append(ManagedFile(path, host_tool_source(source), mode=mode))
    return tuple(files)


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
    if spec.os == "ubuntu-22.04":
        apt["sources"] = {"caddy-stable": {"source": CADDY_APT_SOURCE,
                                           "keyid": CADDY_APT_KEYID}}
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
    ]
    document["runcmd"] = [[CONVERGE_SCRIPT]]
    body = yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, width=100,
                     allow_unicode=True)
    return "#cloud-config\n" + body


def render(spec: HostSpec, target: Target) -> Rendering:
    files = managed_files(spec, target)
    return Rendering(target=target.name, files=files, cloud_config=_cloud_config(spec, target,
                                                                                  files))
