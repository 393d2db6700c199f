"""The host's network edge: a security group in the host's VPC and a stable public address.

The VPC is the account's default one, or the VPC of ``choiros:subnet_id`` when that is set.
Accounts without a default VPC (common under Control Tower) must set the subnet: the program
then stops with a ConfigError that says so, instead of a provider error at preview.

Inbound: SSH from the configured admin networks only, HTTP and HTTPS from anywhere (IPv4 and
IPv6). Nothing else: the backend's 8080 is reached through Caddy on the host, never directly.
The rules are declared inline on the group, so the provider manages them exclusively: a rule
added by hand in the console is removed on the next ``pulumi up``.

The Elastic IP lives here rather than on the instance, so a replaced host keeps its address
(and DNS keeps pointing at it); the host associates itself with it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import ConfigError

WORLD_V4 = "0.0.0.0/0"
WORLD_V6 = "::/0"
SSH_PORT = 22
PUBLIC_PORTS = {80: "HTTP (Caddy)", 443: "HTTPS (Caddy)"}


def split_cidrs(cidrs: Sequence[str]) -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 networks, each in the order given: the two fields a rule has for them."""
    v4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c).version == 6]
    return v4, v6


def ingress_rules(admin_cidrs: Sequence[str]) -> list[aws.ec2.SecurityGroupIngressArgs]:
    """Every inbound rule of the host: SSH from the admins, web from the world."""
    v4, v6 = split_cidrs(admin_cidrs)
    rules = [
        aws.ec2.SecurityGroupIngressArgs(
            description="SSH from the admin networks (choiros:admin_cidrs)",
            protocol="tcp",
            from_port=SSH_PORT,
            to_port=SSH_PORT,
            cidr_blocks=v4 or None,
            ipv6_cidr_blocks=v6 or None,
        )
    ]
    for port, what in sorted(PUBLIC_PORTS.items()):
        rules.append(
            aws.ec2.SecurityGroupIngressArgs(
                description=what,
                protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_blocks=[WORLD_V4],
                ipv6_cidr_blocks=[WORLD_V6],
            )
        )
    return rules


def egress_rules() -> list[aws.ec2.SecurityGroupEgressArgs]:
    """All outbound traffic: apt, S3, SSM, Let's Encrypt, CloudWatch."""
    return [
        aws.ec2.SecurityGroupEgressArgs(
            description="All outbound",
            protocol="-1",
            from_port=0,
            to_port=0,
            cidr_blocks=[WORLD_V4],
            ipv6_cidr_blocks=[WORLD_V6],
        )
    ]


@dataclass(frozen=True)
class NetworkArgs:
    """Who may SSH in, and the tags every resource carries."""

    admin_cidrs: Sequence[str]
    tags: Mapping[str, str]
    region: str
    subnet_id: str | None = None


def default_vpc_id(ids: Sequence[str], region: str) -> str:
    """The account's default VPC, or the ConfigError that names choiros:subnet_id."""
    if not ids:
        raise ConfigError("subnet_id", None, f"is required: this account has no default VPC "
                          f"in {region}",
                          "pulumi config set choiros:subnet_id subnet-... (a public subnet of "
                          "your VPC; aws ec2 describe-subnets lists them)")
    return ids[0]


class Network(pulumi.ComponentResource):
    """The security group and Elastic IP of one ChoirOS host."""

    security_group_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    allocation_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("choiros:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        invoke = pulumi.InvokeOutputOptions(parent=self)
        if args.subnet_id:
            vpc_id = aws.ec2.get_subnet_output(id=args.subnet_id, opts=invoke).vpc_id
        else:
            # get_vpcs, not get_vpc(default=True): an account without a default VPC gets the
            # ConfigError naming the fix, not a provider error.
            found = aws.ec2.get_vpcs_output(filters=[{"name": "isDefault", "values": ["true"]}],
                                            opts=invoke)
            vpc_id = found.ids.apply(lambda ids: default_vpc_id(ids, args.region))
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="ChoirOS host: SSH from admins, HTTP and HTTPS from anywhere",
            vpc_id=vpc_id,
            ingress=ingress_rules(args.admin_cidrs),
            egress=egress_rules(),
            revoke_rules_on_delete=True,
            tags={**args.tags, "Name": f"{name}-sg"},
            opts=child,
        )
        self.eip = aws.ec2.Eip(
            f"{name}-eip", domain="vpc", tags={**args.tags, "Name": f"{name}-eip"}, opts=child
        )

        self.security_group_id = self.security_group.id
        self.public_ip = self.eip.public_ip
        self.allocation_id = self.eip.allocation_id
        self.register_outputs(
            {
                "security_group_id": self.security_group_id,
                "public_ip": self.public_ip,
                "allocation_id": self.allocation_id,
            }
        )
