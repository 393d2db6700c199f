"""The CrossGuard policy pack (policy/): the program's own resources pass every policy, and each
policy fails on a resource that breaks it.

The policies run here exactly as the engine calls them: ``validate(args, report_violation)``
with the resource inputs as the engine receives them (recorded under mocks by infra.preview).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from module_loading import load_module
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra import preview
from infra.config import load_stack_file

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policy"
EXAMPLE = ROOT / "Pulumi.example.yaml"
CONFIG = json.loads((PACK / "config.example.json").read_text())


def pack() -> ModuleType:
    return load_module("choiros_policies", PACK / "choiros_policies.py")


def _options(declared: preview.Declared) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=declared.protect, ignore_changes=list(declared.ignore_changes),
        delete_before_replace=declared.delete_before_replace, aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=[],
        parent=declared.parent or None)


def as_policy_resources(declared: Sequence[preview.Declared]) -> list[PolicyResource]:
    """The engine's view of the stack: every resource with its parent and dependencies."""
    by_urn = {d.urn: PolicyResource(d.type, dict(d.inputs), d.urn, d.name, _options(d), None,
                                    None, [], {}) for d in declared}
    for d in declared:
        resource = by_urn[d.urn]
        resource.parent = by_urn.get(d.parent)
        resource.dependencies = [by_urn[u] for u in d.dependencies if u in by_urn]
    return list(by_urn.values())


def violations(resources: Sequence[PolicyResource]) -> dict[str, list[str]]:
    """Every policy's violation messages, by policy name, prefixed with the resource name."""
    found: dict[str, list[str]] = {}
    for policy in pack().POLICIES:
        messages: list[str] = found.setdefault(policy.name, [])
        config = CONFIG.get(policy.name, {})
        if isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(resources, config),
                            lambda message, urn, out=messages: out.append(f"{urn}: {message}"))
            continue
        assert isinstance(policy, ResourceValidationPolicy)
        for resource in resources:
            args = ResourceValidationArgs(resource.resource_type, resource.props, resource.urn,
                                          resource.name, resource.opts, None, config)
            validations = policy.validate if isinstance(policy.validate, list) else [
                policy.validate]
            for validate in validations:
                validate(args, lambda message, _urn, out=messages, name=resource.name:
                         out.append(f"{name}: {message}"))
    return found


@pytest.fixture(scope="module")
def example() -> list[preview.Declared]:
    return list(preview.run(load_stack_file(EXAMPLE)).resources)


def broken(resources: Sequence[preview.Declared], type_: str,
           change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> list[preview.Declared]:
    """``resources`` with every resource of ``type_`` changed (or removed, if change says None)."""
    result = []
    for r in resources:
        if r.type != type_:
            result.append(r)
            continue
        inputs = change(json.loads(json.dumps(dict(r.inputs))))
        if inputs is not None:
            result.append(dataclasses.replace(r, inputs=inputs))
    return result


def test_the_example_stack_passes_every_policy(example: list[preview.Declared]) -> None:
    found = violations(as_policy_resources(example))
    assert set(found) == {p.name for p in pack().POLICIES}
    assert {name: messages for name, messages in found.items() if messages} == {}


def _metadata(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(inputs: dict[str, Any]) -> dict[str, Any]:
        inputs["metadataOptions"] = {**inputs["metadataOptions"], **changes}
        return inputs
    return change


def _root(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(inputs: dict[str, Any]) -> dict[str, Any]:
        inputs["rootBlockDevice"] = {**inputs["rootBlockDevice"], **changes}
        return inputs
    return change


def _ingress(rule: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(inputs: dict[str, Any]) -> dict[str, Any]:
        inputs["ingress"] = [*inputs["ingress"], {"protocol": "tcp", **rule}]
        return inputs
    return change


def _drop(inputs: dict[str, Any]) -> None:
    return None


def _set(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, **changes}
    return change


def _statement(statement: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(inputs: dict[str, Any]) -> dict[str, Any]:
        document = json.loads(inputs["policy"])
        document["Statement"].append(statement)
        return {**inputs, "policy": json.dumps(document)}
    return change


SG = "aws:ec2/securityGroup:SecurityGroup"
BREAKS: list[tuple[str, str, str, Callable[[dict[str, Any]], dict[str, Any] | None], str]] = [
    ("imdsv1", "ec2-imdsv2-hop-limit-1", "aws:ec2/instance:Instance",
     _metadata(httpTokens="optional"), "IMDSv1 is allowed"),
    ("hop-limit-2", "ec2-imdsv2-hop-limit-1", "aws:ec2/instance:Instance",
     _metadata(httpPutResponseHopLimit=2), "hop limit is not 1"),
    ("unencrypted-root", "ec2-root-volume-encrypted-gp3", "aws:ec2/instance:Instance",
     _root(encrypted=False), "not encrypted"),
    ("gp2-root", "ec2-root-volume-encrypted-gp3", "aws:ec2/instance:Instance",
     _root(volumeType="gp2"), "is gp2, not gp3"),
    ("ssh-from-world", "ssh-only-from-admin-cidrs", SG,
     _ingress({"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}), "whole internet"),
    ("ssh-from-elsewhere", "ssh-only-from-admin-cidrs", SG,
     _ingress({"fromPort": 20, "toPort": 30, "ipv6CidrBlocks": ["2001:db8::/32"]}),
     "outside admin_cidrs"),
    ("port-8080", "no-backend-port", SG,
     _ingress({"fromPort": 8000, "toPort": 9000, "cidrBlocks": ["203.0.113.7/32"]}), "8080"),
    ("all-traffic", "no-backend-port", SG,
     _ingress({"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["203.0.113.7/32"]}),
     "8080"),
    ("no-versioning", "s3-buckets-guarded", "aws:s3/bucketVersioning:BucketVersioning",
     _drop, "is not versioned"),
    ("suspended-versioning", "s3-buckets-guarded", "aws:s3/bucketVersioning:BucketVersioning",
     _set(versioningConfiguration={"status": "Suspended"}), "is not versioned"),
    ("partial-public-access-block", "s3-buckets-guarded",
     "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
     _set(restrictPublicBuckets=False), "no full public access block"),
    ("no-encryption", "s3-buckets-guarded",
     "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
     _drop, "no default encryption"),
    ("plain-http", "s3-buckets-guarded", "aws:s3/bucketPolicy:BucketPolicy",
     _set(policy=json.dumps({"Version": "2012-10-17", "Statement": []})), "plain HTTP"),
    ("wildcard-action", "instance-role-least-privilege", "aws:iam/rolePolicy:RolePolicy",
     _statement({"Sid": "Broad", "Effect": "Allow", "Action": "s3:*",
                 "Resource": "arn:aws:s3:::x/*"}), "wildcard action s3:*"),
    ("star-resource", "instance-role-least-privilege", "aws:iam/rolePolicy:RolePolicy",
     _statement({"Sid": "Everywhere", "Effect": "Allow", "Action": ["ec2:DescribeInstances"],
                 "Resource": "*"}), "on every resource"),
    ("not-action", "instance-role-least-privilege", "aws:iam/rolePolicy:RolePolicy",
     _statement({"Sid": "Inverse", "Effect": "Allow", "NotAction": "iam:*",
                 "Resource": "arn:aws:s3:::x"}), "NotAction"),
    ("managed-policy", "instance-role-least-privilege", "aws:iam/role:Role",
     _set(managedPolicyArns=["arn:aws:iam::aws:policy/AdministratorAccess"]),
     "managed or inline policies"),
]


@pytest.mark.parametrize(("case", "policy", "type_", "change", "message"), BREAKS,
                         ids=[b[0] for b in BREAKS])
def test_each_policy_fails_on_a_resource_that_breaks_it(
        example: list[preview.Declared], case: str, policy: str, type_: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None], message: str) -> None:
    found = violations(as_policy_resources(broken(example, type_, change)))
    assert any(message in m for m in found[policy]), f"{case}: {found[policy]}"
    others = {name: m for name, m in found.items() if m and name != policy}
    assert others == {}, f"{case} also broke {others}"


def test_every_policy_has_a_case_that_breaks_it() -> None:
    assert {b[1] for b in BREAKS} == {p.name for p in pack().POLICIES}


def test_the_pack_runs_in_the_projects_venv_with_the_pinned_pulumi_policy() -> None:
    manifest = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    assert manifest["runtime"]["options"]["virtualenv"] == "../.venv"
    requirements = (ROOT / "requirements.txt").read_text().split()
    assert any(r.startswith("pulumi-policy==") for r in requirements)
    entry = (PACK / "__main__.py").read_text()
    assert "PolicyPack(" in entry and "policies=POLICIES" in entry


def test_the_pack_starts_as_pulumi_runs_it() -> None:
    """Pulumi's ``pulumi-analyzer-policy-python`` runs ``python -u -m pulumi.policy ENGINE DIR``
    and reads the analyzer's port from the first line. pulumi-policy writes the port without a
    flush, so ``-u`` is what makes it arrive; the environment's PYTHONUNBUFFERED must not be what
    makes this test pass (it is removed), since Debian's python3 does not set it."""
    import os
    import select
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    pack_process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."], cwd=PACK,
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pack_process.stdout is not None
        ready, _, _ = select.select([pack_process.stdout], [], [], 60)
        assert ready, "the pack printed no port within 60 s"
        port = pack_process.stdout.readline().strip()
        assert port.isdigit() and int(port) > 0, (port, pack_process.stderr)
    finally:
        pack_process.kill()
        pack_process.wait(timeout=10)
