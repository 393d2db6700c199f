"""``plan --against``: what a change to the stack would do to each resource, without AWS.

Two plans (each a list of ``{"type", "name", "inputs"}``, as ``plan --json`` prints them) are
compared by resource. A resource only in the new plan is created, only in the old one deleted;
one whose inputs differ is updated, or replaced when a changed input is one the provider can
only set at creation. :data:`REPLACED_BY` models those inputs (``forceNew`` in pulumi-aws
7.51's schema, and the instance's user-data because the program sets
``user_data_replace_on_change``) for the types this program declares. A replaced resource gets
a new id, so a resource whose inputs name that id changes too (the instance's key pair, the
Elastic IP association's instance).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Operation = Literal["create", "update", "replace", "delete", "same"]

_BUCKET_CHILD = ("bucket", "expectedBucketOwner")
REPLACED_BY: dict[str, frozenset[str]] = {
    "aws:ec2/instance:Instance": frozenset({
        "ami", "availabilityZone", "subnetId", "keyName", "privateIp", "placementGroup",
        "tenancy", "hostId", "ebsBlockDevices", "ephemeralBlockDevices", "networkInterfaces",
        "associatePublicIpAddress", "userDataBase64", "userData", "rootBlockDevice.encrypted",
        "rootBlockDevice.kmsKeyId"}),
    "aws:ec2/keyPair:KeyPair": frozenset({"publicKey", "keyName", "keyNamePrefix"}),
    "aws:ec2/securityGroup:SecurityGroup": frozenset({"name", "namePrefix", "description",
                                                      "vpcId"}),
    "aws:ec2/eip:Eip": frozenset({"domain", "address"}),
    "aws:ec2/eipAssociation:EipAssociation": frozenset({
        "allocationId", "instanceId", "publicIp", "networkInterfaceId", "privateIpAddress"}),
    "aws:s3/bucket:Bucket": frozenset({"bucket", "bucketPrefix", "objectLockEnabled"}),
    "aws:s3/bucketObjectv2:BucketObjectv2": frozenset({"bucket", "key"}),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": frozenset(_BUCKET_CHILD),
    "aws:s3/bucketVersioning:BucketVersioning": frozenset(_BUCKET_CHILD),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        frozenset(_BUCKET_CHILD),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": frozenset(_BUCKET_CHILD),
    "aws:s3/bucketPolicy:BucketPolicy": frozenset(_BUCKET_CHILD),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": frozenset(_BUCKET_CHILD),
    "aws:iam/role:Role": frozenset({"name", "namePrefix", "path"}),
    "aws:iam/rolePolicy:RolePolicy": frozenset({"name", "namePrefix", "role"}),
    "aws:iam/instanceProfile:InstanceProfile": frozenset({"name", "namePrefix", "path"}),
    "aws:sns/topic:Topic": frozenset({"name", "namePrefix", "fifoTopic"}),
    "aws:sns/topicSubscription:TopicSubscription": frozenset({"topic", "protocol", "endpoint"}),
    "aws:cloudwatch/metricAlarm:MetricAlarm": frozenset({"name"}),
    "pulumi:providers:aws": frozenset({"region"}),
}

# What an instance input means to an operator, for the loud line.
REASONS = {"userDataBase64": "user-data", "userData": "user-data", "ami": "image (AMI)",
           "subnetId": "subnet", "keyName": "key pair", "availabilityZone": "availability zone",
           "rootBlockDevice.encrypted": "root volume encryption"}
INSTANCE = "aws:ec2/instance:Instance"


class PlanFileError(ValueError):
    """A saved plan that is not what ``plan --json`` prints."""


@dataclass(frozen=True)
class Change:
    type: str
    name: str
    op: Operation
    keys: tuple[str, ...] = ()
    replace_because: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "op": self.op, "keys": list(self.keys),
                "replace_because": list(self.replace_because)}


def load_plan(text: str) -> list[dict[str, Any]]:
    """A saved ``plan --json`` document, checked for its shape."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, list) or not all(
            isinstance(i, dict) and {"type", "name", "inputs"} <= set(i) for i in document):
        raise PlanFileError("is not a plan --json document (a list of type/name/inputs)")
    return document


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Top-level inputs that differ, and ``parent.child`` for the children of mappings."""
    keys = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            keys += [f"{key}.{child}" for child in sorted(set(before) | set(after))
                     if before.get(child) != after.get(child)]
        keys.append(key)
    return keys


def _mentions(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return value == needle
    if isinstance(value, Mapping):
        return any(_mentions(v, needle) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_mentions(v, needle) for v in value)
    return False


def compare(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
            ids: Mapping[tuple[str, str], str]) -> list[Change]:
    """Per resource of either plan, what ``pulumi up`` would do; ``ids`` are the new plan's
    resource ids by (type, name), to follow replacements to the resources naming them."""
    before = {(r["type"], r["name"]): r["inputs"] for r in old if r["type"] != "pulumi:outputs"}
    after = {(r["type"], r["name"]): r["inputs"] for r in new if r["type"] != "pulumi:outputs"}
    changes: dict[tuple[str, str], Change] = {}
    for ident in sorted(set(before) | set(after)):
        type_, name = ident
        if ident not in before:
            changes[ident] = Change(type_, name, "create")
        elif ident not in after:
            changes[ident] = Change(type_, name, "delete")
        else:
            keys = changed_keys(before[ident], after[ident])
            forcing = tuple(k for k in keys if k in REPLACED_BY.get(type_, frozenset()))
            op: Operation = "replace" if forcing else ("update" if keys else "same")
            changes[ident] = Change(type_, name, op, tuple(keys), forcing)
    _follow_replacements(changes, after, ids)
    return [changes[ident] for ident in sorted(changes)]


def _follow_replacements(changes: dict[tuple[str, str], Change],
                         after: Mapping[tuple[str, str], Mapping[str, Any]],
                         ids: Mapping[tuple[str, str], str]) -> None:
    pending = [ident for ident, c in changes.items() if c.op == "replace"]
    while pending:
        replaced = pending.pop()
        new_id = ids.get(replaced)
        if not new_id:
            continue
        for ident, inputs in after.items():
            change = changes[ident]
            if change.op in ("create", "delete", "replace"):
                continue
            keys = tuple(k for k, v in inputs.items() if _mentions(v, new_id))
            if not keys:
                continue
            forcing = tuple(k for k in keys if k in REPLACED_BY.get(ident[0], frozenset()))
            why = tuple(f"{k} ({replaced[1]} is replaced)" for k in forcing)
            changes[ident] = Change(ident[0], ident[1], "replace" if forcing else "update",
                                    tuple(sorted(set(change.keys) | set(keys))), why)
            if forcing:
                pending.append(ident)


def counts(changes: Iterable[Change]) -> dict[str, int]:
    result = {op: 0 for op in ("create", "update", "replace", "delete", "same")}
    for change in changes:
        result[change.op] += 1
    return result


def loud_lines(changes: Iterable[Change]) -> list[str]:
    """One line per instance that would be replaced, with the reasons in operator words."""
    lines = []
    for change in changes:
        if change.type == INSTANCE and change.op == "replace":
            reasons = ", ".join(REASONS.get(k.split(" ", 1)[0], k)
                                for k in change.replace_because)
            lines.append(f"THE HOST WOULD BE REPLACED: {change.name} is deleted, then created "
                         f"anew, because of: {reasons}")
    return lines


def report(changes: Sequence[Change], against: str) -> list[str]:
    """The human-readable comparison."""
    tally = counts(changes)
    lines = loud_lines(changes)
    lines.append(f"against {against}: {tally['replace']} to replace, {tally['update']} to "
                 f"update, {tally['create']} to create, {tally['delete']} to delete, "
                 f"{tally['same']} unchanged")
    for change in changes:
        if change.op == "same":
            continue
        detail = ""
        if change.op == "replace":
            detail = f"  because: {', '.join(change.replace_because)}"
        elif change.op == "update":
            detail = f"  changed: {', '.join(change.keys)}"
        lines.append(f"  {change.op:<8}{change.name} ({change.type}){detail}")
    return lines
