"""Glue from the stack config to provisioning: the HostSpec, and EC2's user-data.

``provisioning`` knows nothing of Pulumi or stack files; this module is where a StackConfig
becomes a HostSpec. ``ChoirHost`` receives :func:`aws_user_data`'s result.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from infra.config import StackConfig
from infra.naming import bucket_name
from provisioning.render import Rendering, render
from provisioning.spec import BackupPolicy, HostSpec
from provisioning.target import AWS, Target


@dataclass(frozen=True)
class BucketNames:
    artifacts: str
    backups: str


def bucket_names(cfg: StackConfig, account: str) -> BucketNames:
    """The stack's bucket names in an account, as ``infra.storage`` names them."""
    return BucketNames(artifacts=bucket_name(cfg.name, "artifacts", account),
                       backups=bucket_name(cfg.name, "backups", account))


def host_spec(cfg: StackConfig, artifacts_bucket: str, backups_bucket: str) -> HostSpec:
    return HostSpec(
        hostname=cfg.name,
        os=cfg.os,
        region=cfg.region,
        artifacts_bucket=artifacts_bucket,
        backups_bucket=backups_bucket,
        backup_prefix=cfg.backup_prefix,
        domain=cfg.domain,
        acme_email=cfg.acme_email,
        tls_mode=cfg.tls_mode,
        admin_cidrs=cfg.admin_cidrs,
        secrets=cfg.secrets,
        keep_releases=cfg.keep_releases,
        backup=backup_policy(cfg),
    )


def backup_policy(cfg: StackConfig) -> BackupPolicy:
    """The stack's backup policy: what the host replicates with and the alarm watches."""
    return BackupPolicy(sync_interval_seconds=cfg.backup_sync_interval_seconds,
                        retention_days=cfg.backup_retention_days)


def render_for(cfg: StackConfig, target: Target, artifacts_bucket: str,
               backups_bucket: str) -> Rendering:
    return render(host_spec(cfg, artifacts_bucket, backups_bucket), target)


def aws_user_data(cfg: StackConfig, artifacts_bucket: str, backups_bucket: str) -> str:
    """Base64 of the gzip-compressed cloud-init user-data EC2 receives."""
    rendering = render_for(cfg, AWS, artifacts_bucket, backups_bucket)
    return base64.b64encode(rendering.user_data).decode("ascii")
