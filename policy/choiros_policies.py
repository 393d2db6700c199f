"""The stack's invariants as CrossGuard policies, checked on what ``pulumi preview`` would send.

The Pulumi program already builds its resources this way and the unit suite proves it; these
policies hold the line for whatever else reaches the engine (a hand edit, a refactor, another
program in the same stack). Each validation reads only the resource inputs (camelCase, as the
engine passes them), so the unit suite runs the very same functions against the program's
resources under mocks, and against resources broken on purpose.

- ``ec2-imdsv2-hop-limit-1``: IMDSv2 tokens required, hop limit 1.
- ``ec2-root-volume-encrypted-gp3``: the root volume is gp3 and encrypted.
- ``ssh-only-from-admin-cidrs``: port 22 only from the configured ``admin_cidrs`` (policy config),
  and never from the whole internet.
- ``no-backend-port``: no inbound rule reaches 8080, the backend behind Caddy.
- ``s3-buckets-guarded``: every bucket has a full public access block, versioning, default
  encryption and a policy denying plain HTTP.
- ``instance-role-least-privilege``: no ``*`` in an action, no ``NotAction``/``NotResource``, and
  ``Resource: "*"`` only for the CloudWatch actions that have no resource-level permissions.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
ENCRYPTION = ("aws:s3/bucketServerSideEncryptionConfiguration:"
              "BucketServerSideEncryptionConfiguration")
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE = "aws:iam/role:Role"

SSH_PORT = 22
BACKEND_PORT = 8080
WORLD = ("0.0.0.0/0", "::/0")
# CloudWatch actions without resource-level permissions: "*" is the only resource they take.
STAR_RESOURCE_ACTIONS = frozenset({"cloudwatch:PutMetricData"})
BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- the instance


def imdsv2_hop_limit_one(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != INSTANCE:
        return
    metadata = args.props.get("metadataOptions") or {}
    if metadata.get("httpTokens") != "required":
        report("IMDSv1 is allowed: set metadata_options http_tokens=required", None)
    if _number(metadata.get("httpPutResponseHopLimit")) != 1:
        report("the IMDS hop limit is not 1: containers on the host could reach the instance "
               "credentials; set http_put_response_hop_limit=1", None)


def root_volume_encrypted_gp3(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != INSTANCE:
        return
    root = args.props.get("rootBlockDevice") or {}
    if root.get("encrypted") is not True:
        report("the root volume is not encrypted: set root_block_device encrypted=True", None)
    if root.get("volumeType") != "gp3":
        report(f"the root volume is {root.get('volumeType') or 'of the default type'}, not gp3",
               None)
    for device in args.props.get("ebsBlockDevices") or []:
        if device.get("encrypted") is not True:
            report(f"EBS volume {device.get('deviceName')} is not encrypted", None)


# --------------------------------------------------------------------------- the network


def _ingress_rules(resource_type: str, props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Inbound rules as (fromPort, toPort, protocol, sources), whatever resource holds them."""
    if resource_type == SECURITY_GROUP:
        return [{"from": r.get("fromPort"), "to": r.get("toPort"), "protocol": r.get("protocol"),
                 "sources": [*(r.get("cidrBlocks") or []), *(r.get("ipv6CidrBlocks") or [])]}
                for r in props.get("ingress") or []]
    if resource_type == INGRESS_RULE:
        sources = [props[k] for k in ("cidrIpv4", "cidrIpv6") if props.get(k)]
        return [{"from": props.get("fromPort"), "to": props.get("toPort"),
                 "protocol": props.get("ipProtocol"), "sources": sources}]
    if resource_type == GROUP_RULE and props.get("type") == "ingress":
        return [{"from": props.get("fromPort"), "to": props.get("toPort"),
                 "protocol": props.get("protocol"),
                 "sources": [*(props.get("cidrBlocks") or []),
                             *(props.get("ipv6CidrBlocks") or [])]}]
    return []


def _covers(rule: Mapping[str, Any], port: int) -> bool:
    if str(rule.get("protocol")) in ("-1", "all"):
        return True
    low, high = _number(rule.get("from")), _number(rule.get("to"))
    return low is not None and high is not None and low <= port <= high


def _networks(cidrs: Iterable[str]) -> set[str]:
    return {str(ipaddress.ip_network(c, strict=False)) for c in cidrs}


def ssh_only_from_admin_cidrs(args: ResourceValidationArgs, report: ReportViolation) -> None:
    allowed = args.get_config().get("admin_cidrs")
    for rule in _ingress_rules(args.resource_type, args.props):
        if not _covers(rule, SSH_PORT):
            continue
        sources = _networks(rule["sources"])
        if sources & set(WORLD):
            report(f"SSH (22/tcp) is open to the whole internet ({sorted(sources)})", None)
        elif allowed is not None and not sources <= _networks(allowed):
            report(f"SSH (22/tcp) is open to {sorted(sources - _networks(allowed))}, outside "
                   f"admin_cidrs {sorted(allowed)}", None)


def no_backend_port(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for rule in _ingress_rules(args.resource_type, args.props):
        if _covers(rule, BACKEND_PORT):
            report(f"an inbound rule reaches {BACKEND_PORT}/tcp, the backend that only Caddy "
                   f"may reach ({rule['from']}-{rule['to']}/{rule['protocol']})", None)


# --------------------------------------------------------------------------- the buckets


def _guarding(resources: Iterable[Any], bucket: Any, type_: str) -> list[Any]:
    """The resources of ``type_`` that configure ``bucket``: by name, or by depending on it
    (at a first preview the bucket's name is not known yet)."""
    name = bucket.props.get("bucket")
    return [r for r in resources if r.resource_type == type_ and (
        (name is not None and r.props.get("bucket") == name)
        or any(d.urn == bucket.urn for d in r.dependencies))]


def _denies_plain_http(policy_text: Any) -> bool:
    try:
        document = json.loads(policy_text) if isinstance(policy_text, str) else policy_text
    except json.JSONDecodeError:
        return False
    statements = (document or {}).get("Statement") or []
    return any(s.get("Effect") == "Deny"
               and str(((s.get("Condition") or {}).get("Bool") or {})
                       .get("aws:SecureTransport")).lower() == "false"
               for s in (statements if isinstance(statements, list) else [statements]))


def s3_buckets_guarded(args: StackValidationArgs, report: ReportViolation) -> None:
    resources = list(args.resources)
    for bucket in (r for r in resources if r.resource_type == BUCKET):
        blocks = _guarding(resources, bucket, PUBLIC_ACCESS_BLOCK)
        if not any(all(b.props.get(flag) is True for flag in BLOCK_FLAGS) for b in blocks):
            report(f"bucket {bucket.name} has no full public access block "
                   f"({', '.join(BLOCK_FLAGS)})", bucket.urn)
        versioning = _guarding(resources, bucket, VERSIONING)
        if not any((v.props.get("versioningConfiguration") or {}).get("status") == "Enabled"
                   for v in versioning):
            report(f"bucket {bucket.name} is not versioned", bucket.urn)
        if not _guarding(resources, bucket, ENCRYPTION):
            report(f"bucket {bucket.name} has no default encryption", bucket.urn)
        policies = _guarding(resources, bucket, BUCKET_POLICY)
        if not any(_denies_plain_http(p.props.get("policy")) for p in policies):
            report(f"bucket {bucket.name} has no policy denying plain HTTP "
                   "(aws:SecureTransport false)", bucket.urn)


# --------------------------------------------------------------------------- the role


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_least_privilege(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == ROLE and (args.props.get("managedPolicyArns")
                                       or args.props.get("inlinePolicies")):
        report("the role carries managed or inline policies beside its explicit one", None)
    if args.resource_type != ROLE_POLICY:
        return
    text = args.props.get("policy")
    if not isinstance(text, str):
        return  # not known yet at this preview
    for statement in _as_list(json.loads(text).get("Statement") or []):
        sid = statement.get("Sid", "(no Sid)")
        if "NotAction" in statement or "NotResource" in statement:
            report(f"statement {sid} uses NotAction or NotResource", None)
        if statement.get("Effect") != "Allow":
            continue
        actions = [str(a) for a in _as_list(statement.get("Action") or [])]
        for action in actions:
            if "*" in action:
                report(f"statement {sid} allows the wildcard action {action}", None)
        if "*" in _as_list(statement.get("Resource") or []) and not set(actions) <= \
                STAR_RESOURCE_ACTIONS:
            report(f"statement {sid} allows {sorted(set(actions) - STAR_RESOURCE_ACTIONS)} on "
                   "every resource", None)


POLICIES = [
    ResourceValidationPolicy(
        name="ec2-imdsv2-hop-limit-1",
        description="Instances require IMDSv2 tokens with a hop limit of 1.",
        validate=imdsv2_hop_limit_one),
    ResourceValidationPolicy(
        name="ec2-root-volume-encrypted-gp3",
        description="Instances boot from an encrypted gp3 root volume.",
        validate=root_volume_encrypted_gp3),
    ResourceValidationPolicy(
        name="ssh-only-from-admin-cidrs",
        description="SSH is open only to the configured admin networks, never to the internet.",
        validate=ssh_only_from_admin_cidrs,
        config_schema=PolicyConfigSchema(properties={
            "admin_cidrs": {"type": "array", "items": {"type": "string"}}})),
    ResourceValidationPolicy(
        name="no-backend-port",
        description="No inbound rule reaches the backend's port 8080.",
        validate=no_backend_port),
    StackValidationPolicy(
        name="s3-buckets-guarded",
        description="Every bucket has a full public access block, versioning, encryption and a "
                    "TLS-only policy.",
        validate=s3_buckets_guarded),
    ResourceValidationPolicy(
        name="instance-role-least-privilege",
        description="No wildcard actions, and '*' resources only for CloudWatch metrics.",
        validate=role_least_privilege),
]
