"""The whole stack: one validated StackConfig in, the resources declared, the outputs out.

:func:`build` is the program; ``__main__.py`` only loads the config and exports what this
returns, and ``choiros-infra plan`` runs the very same function under Pulumi's mocks.
Every resource goes through one explicit AWS provider set to ``choiros:region``, so the
region of the stack never depends on ambient ``aws:region`` config or environment.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.artifacts import HostArtifacts, HostArtifactsArgs
from infra.config import StackConfig
from infra.host import AMIS, ChoirHost, ChoirHostArgs
from infra.iam import InstanceRole, InstanceRoleArgs
from infra.monitoring import Monitoring, MonitoringArgs, backup_freshness_alarm, health_alarms
from infra.network import Network, NetworkArgs
from infra.storage import Bucket, BucketArgs, bucket_name
from infra.user_data import aws_user_data, backup_policy
from provisioning.render import published_artifacts
from provisioning.spec import METRICS

# Rendering is a pure function of the config and the bucket names; plan and the tests build the
# same stack many times in one process.
render_user_data = lru_cache(maxsize=16)(aws_user_data)

OUTPUTS = (
    "public_ip",
    "url",
    "ssh_command",
    "backups_bucket",
    "artifacts_bucket",
    "instance_id",
    "alarm_topic_arn",
    "ssh_user",
    "account_id",
)


def build(cfg: StackConfig) -> dict[str, pulumi.Output[Any]]:
    """Declare every resource of the stack described by ``cfg``; return the stack outputs."""
    tags = cfg.all_tags
    provider = aws.Provider(f"{cfg.name}-aws", region=cfg.region)
    on_aws = pulumi.ResourceOptions(provider=provider)
    invoke = pulumi.InvokeOutputOptions(provider=provider)
    account = aws.get_caller_identity_output(opts=invoke).account_id
    partition = aws.get_partition_output(opts=invoke).partition

    backups = Bucket(
        f"{cfg.name}-backups",
        BucketArgs(
            bucket_name=account.apply(lambda a: bucket_name(cfg.name, "backups", a)),
            noncurrent_version_days=cfg.backup_retention_days,
            tags=tags,
        ),
        opts=on_aws,
    )
    artifacts = Bucket(
        f"{cfg.name}-artifacts",
        BucketArgs(
            bucket_name=account.apply(lambda a: bucket_name(cfg.name, "artifacts", a)),
            noncurrent_version_days=cfg.backup_retention_days,
            tags=tags,
        ),
        opts=on_aws,
    )
    # The host tools and Litestream, fetched by the host's first converge: uploaded first.
    host_artifacts = HostArtifacts(
        f"{cfg.name}-artifacts-objects",
        HostArtifactsArgs(bucket=artifacts.bucket, artifacts=published_artifacts(), tags=tags,
                          after=[artifacts.versioning]),
        opts=on_aws,
    )
    role = InstanceRole(
        f"{cfg.name}-iam",
        InstanceRoleArgs(
            partition=partition,
            region=cfg.region,
            account=account,
            backups_bucket_arn=backups.arn,
            backup_prefix=cfg.backup_prefix,
            artifacts_bucket_arn=artifacts.arn,
            secrets=cfg.secrets,
            secrets_kms_key=cfg.secrets_kms_key,
            tags=tags,
        ),
        opts=on_aws,
    )
    network = Network(
        f"{cfg.name}-net",
        NetworkArgs(admin_cidrs=cfg.admin_cidrs, tags=tags, region=cfg.region,
                    subnet_id=cfg.subnet_id),
        opts=on_aws,
    )
    user_data = pulumi.Output.all(artifacts.bucket, backups.bucket).apply(
        lambda names: render_user_data(cfg, names[0], names[1])
    )
    host = ChoirHost(
        f"{cfg.name}-host",
        ChoirHostArgs(
            os=cfg.os,
            ami=cfg.ami,
            instance_type=cfg.instance_type,
            root_volume_gb=cfg.root_volume_gb,
            ssh_public_key=cfg.ssh_public_key,
            termination_protection=cfg.termination_protection,
            security_group_ids=[network.security_group_id],
            instance_profile=role.profile_name,
            eip_allocation_id=network.allocation_id,
            user_data_base64=user_data,
            subnet_id=cfg.subnet_id,
            name_tag=cfg.name,
            tags=tags,
            boot_dependencies=[*host_artifacts.objects.values(), role.policy],
        ),
        opts=on_aws,
    )
    monitoring = Monitoring(
        f"{cfg.name}-alarms",
        MonitoringArgs(
            instance_id=host.instance_id,
            region=cfg.region,
            partition=partition,
            alert_email=cfg.alert_email,
            tags=tags,
            extra_alarms=[
                backup_freshness_alarm(cfg.name, METRICS, backup_policy(cfg)),
                *health_alarms(cfg.name, METRICS,
                               unhealthy_minutes=cfg.alarm_unhealthy_minutes,
                               disk_percent=cfg.alarm_disk_percent,
                               memory_percent=cfg.alarm_memory_percent),
            ],
        ),
        opts=on_aws,
    )

    ip = network.public_ip
    url = (
        pulumi.Output.from_input(f"https://{cfg.domain}")
        if cfg.domain
        else pulumi.Output.concat("http://", ip)
    )
    outputs: dict[str, pulumi.Output[Any]] = {
        "public_ip": ip,
        "url": url,
        "ssh_command": pulumi.Output.concat("ssh ", AMIS[cfg.os].login_user, "@", ip),
        "backups_bucket": backups.bucket,
        "artifacts_bucket": artifacts.bucket,
        "instance_id": host.instance_id,
        "alarm_topic_arn": monitoring.topic_arn,
        # What the operator's commands (`--stack`, `--outputs`) read to reach the host and
        # its buckets: see choiros_infra/stack_target.py.
        "ssh_user": pulumi.Output.from_input(AMIS[cfg.os].login_user),
        "account_id": account,
    }
    return outputs
