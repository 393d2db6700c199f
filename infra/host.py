"""The ChoirOS host: one EC2 instance, converged by cloud-init from its user-data.

The instance is immutable: a change to its user-data replaces it
(``user_data_replace_on_change``), and the old host is deleted before the new one is created
(``delete_before_replace``) so two hosts never replicate into the same backup prefix. The new
host restores the database from S3 at boot, so every replacement exercises the restore path.

The image is an input like any other: ``choiros:ami`` pins it, and a new value replaces the
host on purpose. Unpinned, the host boots the newest official image of the OS, which ``plan``
prints so the operator can pin it; a newer image then replaces the host at the next ``up``.
No ``ignore_changes``: Pulumi creates a replacement from the old value of an ignored input
(pulumi/pulumi#2657), so a replaced host would boot the first image forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from provisioning.spec import OsName


@dataclass(frozen=True)
class AmiSource:
    """Where an operating system's official images come from, and who logs in to them."""

    owner: str
    name_pattern: str
    login_user: str


AMIS: dict[OsName, AmiSource] = {
    "debian-12": AmiSource("136693071363", "debian-12-amd64-*", "admin"),
}


def newest_image(os: OsName, parent: pulumi.Resource) -> pulumi.Output[str]:
    """The id of the newest official image of ``os``: the default when choiros:ami is unset."""
    source = AMIS[os]
    return aws.ec2.get_ami_output(
        owners=[source.owner],
        most_recent=True,
        filters=[
            {"name": "name", "values": [source.name_pattern]},
            {"name": "architecture", "values": ["x86_64"]},
            {"name": "virtualization-type", "values": ["hvm"]},
            {"name": "root-device-type", "values": ["ebs"]},
        ],
        opts=pulumi.InvokeOutputOptions(parent=parent),
    ).id


@dataclass(frozen=True)
class ChoirHostArgs:
    """Everything the host is built from; the user-data comes rendered, gzip'd and base64'd."""

    os: OsName
    # A pinned AMI id (choiros:ami), or None for the newest official image of ``os``.
    ami: str | None
    instance_type: str
    root_volume_gb: int
    ssh_public_key: str
    termination_protection: bool
    security_group_ids: Sequence[pulumi.Input[str]]
    instance_profile: pulumi.Input[str]
    eip_allocation_id: pulumi.Input[str]
    user_data_base64: pulumi.Input[str]
    # The subnet (choiros:subnet_id), or None for the default VPC's default subnet.
    subnet_id: str | None
    name_tag: str
    tags: Mapping[str, str]
    # What must exist before the instance boots: the artifacts its first converge fetches and
    # the role policy its first converge uses.
    boot_dependencies: Sequence[pulumi.Resource] = ()


class ChoirHost(pulumi.ComponentResource):
    """The instance, its key pair and its Elastic IP association."""

    instance_id: pulumi.Output[str]
    ami_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: ChoirHostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("choiros:infra:ChoirHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ami = (pulumi.Output.from_input(args.ami) if args.ami
               else newest_image(args.os, self))
        self.key_pair = aws.ec2.KeyPair(
            f"{name}-key",
            public_key=args.ssh_public_key,
            tags={**args.tags, "Name": f"{name}-key"},
            opts=child,
        )
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami,
            subnet_id=args.subnet_id,
            instance_type=args.instance_type,
            key_name=self.key_pair.key_name,
            iam_instance_profile=args.instance_profile,
            vpc_security_group_ids=list(args.security_group_ids),
            user_data_base64=args.user_data_base64,
            user_data_replace_on_change=True,
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
            },
            root_block_device={
                "volume_type": "gp3",
                "volume_size": args.root_volume_gb,
                "encrypted": True,
                "delete_on_termination": True,
                "tags": {**args.tags, "Name": f"{args.name_tag}-root"},
            },
            disable_api_termination=args.termination_protection,
            monitoring=True,
            tags={**args.tags, "Name": args.name_tag},
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True,
                                        depends_on=list(args.boot_dependencies)),
        )
        self.eip_association = aws.ec2.EipAssociation(
            f"{name}-eip-association",
            allocation_id=args.eip_allocation_id,
            instance_id=self.instance.id,
            opts=child,
        )

        self.instance_id = self.instance.id
        self.ami_id = ami
        self.register_outputs({"instance_id": self.instance_id, "ami_id": self.ami_id})
