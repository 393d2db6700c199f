"""The network edge: SSH only from admins, web from everywhere, nothing else in.

Runbook: "security group: 22 from the operator's IP only; 80 and 443 from anywhere".
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from sample_stack import stack_config

from infra.preview import Declared, Recorder, one
from infra.stack import build

pytestmark = pytest.mark.unit

SG = "aws:ec2/securityGroup:SecurityGroup"
WORLD = {"0.0.0.0/0", "::/0"}


def rules(sg: Declared, direction: str) -> list[dict[str, Any]]:
    return list(sg.inputs.get(direction) or [])


def ssh_rules(sg: Declared) -> list[dict[str, Any]]:
    return [r for r in rules(sg, "ingress") if r["fromPort"] <= 22 <= r["toPort"]]


def sources(rule: dict[str, Any]) -> set[str]:
    return set(rule.get("cidrBlocks") or []) | set(rule.get("ipv6CidrBlocks") or [])


@pulumi.runtime.test
def test_ssh_is_open_only_to_the_admin_networks_v4_and_v6_in_their_fields(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(admin_cidrs=["203.0.113.7/32", "2001:db8:1::/48", "198.51.100.0/24"]))

    def check(resources: list[Declared]) -> None:
        sg = one(resources, SG)
        ssh = ssh_rules(sg)
        assert len(ssh) == 1, f"{sg.urn}: expected one SSH rule, got {ssh}"
        rule = ssh[0]
        assert rule["protocol"] == "tcp", f"{sg.urn}: SSH rule protocol {rule['protocol']}"
        assert rule.get("cidrBlocks") == ["203.0.113.7/32", "198.51.100.0/24"], sg.urn
        assert rule.get("ipv6CidrBlocks") == ["2001:db8:1::/48"], sg.urn
        assert not sources(rule) & WORLD, f"{sg.urn}: SSH open to the world: {rule}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_ssh_with_only_ipv6_admins_sets_no_ipv4_sources(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(admin_cidrs=["2001:db8::/32"]))

    def check(resources: list[Declared]) -> None:
        sg = one(resources, SG)
        (rule,) = ssh_rules(sg)
        assert not rule.get("cidrBlocks"), f"{sg.urn}: unexpected IPv4 SSH sources {rule}"
        assert rule.get("ipv6CidrBlocks") == ["2001:db8::/32"], sg.urn

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_ssh_reaches_the_world_only_when_allow_world_ssh_says_so(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(admin_cidrs=["0.0.0.0/0", "::/0"], allow_world_ssh=True))

    def check(resources: list[Declared]) -> None:
        sg = one(resources, SG)
        (rule,) = ssh_rules(sg)
        assert sources(rule) == WORLD, f"{sg.urn}: allow_world_ssh not honoured: {rule}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_http_and_https_are_open_to_everyone_on_ipv4_and_ipv6(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        sg = one(resources, SG)
        for port in (80, 443):
            matching = [r for r in rules(sg, "ingress") if r["fromPort"] == port == r["toPort"]]
            assert len(matching) == 1, f"{sg.urn}: expected one rule for {port}: {matching}"
            rule = matching[0]
            assert rule["protocol"] == "tcp", f"{sg.urn}: port {port} protocol"
            assert rule.get("cidrBlocks") == ["0.0.0.0/0"], f"{sg.urn}: port {port} IPv4"
            assert rule.get("ipv6CidrBlocks") == ["::/0"], f"{sg.urn}: port {port} IPv6"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_nothing_else_is_reachable_from_outside_not_even_the_backend_on_8080(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        sg = one(resources, SG)
        ingress = rules(sg, "ingress")
        opened = sorted((r["protocol"], r["fromPort"], r["toPort"]) for r in ingress)
        assert opened == [("tcp", 22, 22), ("tcp", 80, 80), ("tcp", 443, 443)], (
            f"{sg.urn}: inbound rules {opened}"
        )
        for rule in ingress:
            assert not rule["fromPort"] <= 8080 <= rule["toPort"], f"{sg.urn}: 8080 open {rule}"
            assert not rule.get("self") and not rule.get("securityGroups"), (
                f"{sg.urn}: inbound from other groups {rule}"
            )
            assert not rule.get("prefixListIds"), f"{sg.urn}: inbound from prefix lists {rule}"
        assert not [r for r in resources if r.type.startswith("aws:vpc/securityGroupIngress")], (
            "separate ingress rule resources would add to the group's inline rules"
        )

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_all_traffic_may_leave_on_ipv4_and_ipv6(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        sg = one(resources, SG)
        (rule,) = rules(sg, "egress")
        assert rule["protocol"] == "-1", f"{sg.urn}: egress protocol {rule}"
        assert sources(rule) == WORLD, f"{sg.urn}: egress destinations {rule}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_the_group_lives_in_the_default_vpc_and_guards_the_instance(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        sg = one(resources, SG)
        vpcs = [c for c in pulumi_mocks.invokes if c.token == "aws:ec2/getVpcs:getVpcs"]
        assert [c.args for c in vpcs] == [
            {"filters": [{"name": "isDefault", "values": ["true"]}]}], "the default VPC"
        assert sg.inputs["vpcId"] == "vpc-0mock0default0", f"{sg.urn}: vpc {sg.inputs['vpcId']}"
        instance = one(resources, "aws:ec2/instance:Instance")
        assert not instance.inputs.get("subnetId"), f"{instance.urn}: the default subnet"
        instance = one(resources, "aws:ec2/instance:Instance")
        assert instance.inputs["vpcSecurityGroupIds"] == [sg.id], instance.urn

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_the_elastic_ip_is_in_the_vpc_and_associated_with_the_instance(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    outputs = build(stack_config())

    def check(args: list[Any]) -> None:
        resources, public_ip = args
        eip = one(resources, "aws:ec2/eip:Eip")
        assert eip.inputs["domain"] == "vpc", f"{eip.urn}: domain {eip.inputs.get('domain')}"
        instance = one(resources, "aws:ec2/instance:Instance")
        association = one(resources, "aws:ec2/eipAssociation:EipAssociation")
        assert association.inputs["allocationId"] == eip.id, association.urn
        assert association.inputs["instanceId"] == instance.id, association.urn
        assert public_ip.startswith("198.51.100."), f"public_ip output {public_ip}"

    return pulumi.Output.all(pulumi_mocks.settled(), outputs["public_ip"]).apply(check)


SUBNET = "subnet-0123456789abcdef0"


@pulumi.runtime.test
def test_a_configured_subnet_places_the_host_and_its_group_in_that_vpc(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(subnet_id=SUBNET))

    def check(resources: list[Declared]) -> None:
        (lookup,) = [c for c in pulumi_mocks.invokes if c.token == "aws:ec2/getSubnet:getSubnet"]
        assert lookup.args == {"id": SUBNET}, lookup.args
        assert not [c for c in pulumi_mocks.invokes if "getVpc" in c.token], "default VPC used"
        sg = one(resources, SG)
        assert sg.inputs["vpcId"].startswith("vpc-") and sg.inputs["vpcId"] != "vpc-0mock0default0"
        instance = one(resources, "aws:ec2/instance:Instance")
        assert instance.inputs["subnetId"] == SUBNET, instance.urn

    return pulumi_mocks.settled().apply(check)


def test_an_account_without_a_default_vpc_stops_with_a_config_error_naming_subnet_id() -> None:
    from infra import preview
    from infra.config import ConfigError

    with pytest.raises(ConfigError) as refused:
        preview.run(stack_config(), default_vpc=False)
    assert refused.value.key == "subnet_id"
    assert "no default VPC in eu-west-1" in refused.value.problem
    assert "pulumi config set choiros:subnet_id" in refused.value.fix
    planned = preview.run(stack_config(subnet_id=SUBNET), default_vpc=False)
    assert one(planned.resources, "aws:ec2/instance:Instance").inputs["subnetId"] == SUBNET
