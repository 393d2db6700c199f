"""The stack's AWS resources in the kitchen cloud, declared by the Pulumi program itself.

``pulumi up`` gives a stack more than buckets and a role: a security group, an SNS topic
(and its e-mail subscription), one CloudWatch alarm per spec of ``infra/monitoring.py``, the
instance's tags, and the stack's outputs. The kitchen gets the same, from the same source:
:func:`declare` runs the real program (:func:`infra.stack.build`) under Pulumi's mocks, with
the kitchen's answers (:class:`KitchenMocks`: the host's instance id, its address as the
Elastic IP, the kitchen cloud's default VPC), and :func:`apply` turns what it declared into
the kitchen cloud's API calls, as the AWS provider would. Nothing here restates a rule, an
alarm threshold or a name: a change in ``infra/`` changes the kitchen on the next ``up``.

What differs from AWS, on purpose and only here:

* names: Pulumi appends a random suffix to the physical names it chooses (an alarm is
  ``choiros-<stack>-alarms-cpu-high-1a2b3c4``); the kitchen uses the declared name as is.
  Both start with the declared name, which is what the runbooks filter on.
* alarms do not evaluate: moto stores them, their state stays what moto sets (``OK``), and it
  keeps no alarm history. The metrics the host publishes are real data in moto's CloudWatch.
* the instance is a record (:mod:`kitchen.instances`); its status checks always pass.

The stack's outputs come out of the same run, computed by the program with the same answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from choiros_infra.targets import KITCHEN_ACCOUNT
from infra import preview
from infra.config import StackConfig
from kitchen import cloud
from kitchen.errors import KitchenError

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INSTANCE = "aws:ec2/instance:Instance"
EIP = "aws:ec2/eip:Eip"
TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
MONITORING = "choiros:infra:Monitoring"

# How the provider passes an alarm's inputs to PutMetricAlarm (the integer ones arrive as
# floats: the wire has only floats). An input not listed here is refused, not dropped.
ALARM_FIELDS = {
    "alarmDescription": ("AlarmDescription", str),
    "namespace": ("Namespace", str),
    "metricName": ("MetricName", str),
    "statistic": ("Statistic", str),
    "comparisonOperator": ("ComparisonOperator", str),
    "threshold": ("Threshold", float),
    "period": ("Period", int),
    "evaluationPeriods": ("EvaluationPeriods", int),
    "datapointsToAlarm": ("DatapointsToAlarm", int),
    "treatMissingData": ("TreatMissingData", str),
    "alarmActions": ("AlarmActions", list),
    "okActions": ("OKActions", list),
}
ALARM_SHAPED = frozenset({"dimensions", "tags"})  # translated below, not by the table


class KitchenMocks(preview.AwsMocks):
    """The AWS provider's answers for a kitchen host: the instance is the host's record, the
    Elastic IP is the host's address, the VPC is the kitchen cloud's default one; the
    account is the kitchen cloud's."""

    def __init__(self, region: str, *, instance_id: str, public_ip: str, vpc_id: str) -> None:
        super().__init__(region, KITCHEN_ACCOUNT)
        self.instance_id = instance_id
        self.public_ip = public_ip
        self.vpc_id = vpc_id

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        resource_id, state = super().new_resource(args)
        if args.typ == INSTANCE:
            state["arn"] = self._arn("ec2", f"instance/{self.instance_id}")
            return self.instance_id, state
        if args.typ == EIP:
            state["publicIp"] = self.public_ip
        return resource_id, state

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        function = args.token.rsplit(":", 1)[-1]
        if function == "getVpcs":
            return {"id": self.region, "ids": [self.vpc_id]}, []
        if function == "getSubnet":  # choiros:subnet_id names a subnet of the real account
            answer, failures = super().call(args)
            return {**answer, "vpcId": self.vpc_id}, failures
        return super().call(args)


def default_vpc(ec2: Any) -> str:
    """The kitchen cloud's default VPC in the client's region (moto makes one per region)."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise KitchenError("the kitchen cloud has no default VPC", "restart the kitchen cloud")
    vpc_id: str = vpcs[0]["VpcId"]
    return vpc_id


def declare(cfg: StackConfig, instance_id: str, public_ip: str, vpc_id: str) -> preview.Plan:
    """What the program declares for ``cfg`` with the kitchen host's answers."""
    mocks = KitchenMocks(cfg.region, instance_id=instance_id, public_ip=public_ip,
                         vpc_id=vpc_id)
    return preview.run(cfg, mocks=mocks)


def _tags(values: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"Key": str(k), "Value": str(v)} for k, v in sorted(values.items())]


def _declared(plan: preview.Plan, type_: str) -> list[preview.Declared]:
    return [r for r in plan.resources if r.type == type_]


def ip_permissions(rules: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The provider's inline rules (``ingress``/``egress`` inputs) as EC2's IpPermissions."""
    permissions = []
    for rule in rules:
        described = {"Description": rule["description"]} if rule.get("description") else {}
        permissions.append({
            "IpProtocol": str(rule["protocol"]),
            "FromPort": int(rule["fromPort"]),
            "ToPort": int(rule["toPort"]),
            "IpRanges": [{"CidrIp": c, **described} for c in rule.get("cidrBlocks") or []],
            "Ipv6Ranges": [{"CidrIpv6": c, **described}
                           for c in rule.get("ipv6CidrBlocks") or []],
        })
    return permissions


def alarm_request(alarm: preview.Declared) -> dict[str, Any]:
    """PutMetricAlarm's arguments for one declared alarm, named by its declared name."""
    unknown = set(alarm.inputs) - set(ALARM_FIELDS) - ALARM_SHAPED
    if unknown:
        raise KitchenError(f"alarm {alarm.name} sets {sorted(unknown)}, which the kitchen "
                           "does not pass on to CloudWatch",
                           "add them to ALARM_FIELDS in choiros_infra/kitchen_aws.py")
    request: dict[str, Any] = {"AlarmName": alarm.name}
    for key, (field, kind) in ALARM_FIELDS.items():
        value = alarm.inputs.get(key)
        if value is not None:
            request[field] = list(value) if kind is list else kind(value)
    request["Dimensions"] = [{"Name": k, "Value": str(v)}
                             for k, v in sorted((alarm.inputs.get("dimensions") or {}).items())]
    request["Tags"] = _tags(alarm.inputs.get("tags") or {})
    return request


def _revoke_all(ec2: Any, group_id: str) -> None:
    """Every rule of the group revoked, by rule id (moto matches a revoke by ranges only for
    the IPv4 ones)."""
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    ingress = [r["SecurityGroupRuleId"] for r in rules if not r["IsEgress"]]
    egress = [r["SecurityGroupRuleId"] for r in rules if r["IsEgress"]]
    if ingress:
        ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=ingress)
    if egress:
        ec2.revoke_security_group_egress(GroupId=group_id, SecurityGroupRuleIds=egress)


def _put_security_group(ec2: Any, group: preview.Declared) -> str:
    """Create the group if the cloud has none with its Name tag; make its tags and rules the
    declared ones (rules are managed exclusively, as the provider does with inline rules)."""
    tags = dict(group.inputs.get("tags") or {})
    found = ec2.describe_security_groups(
        Filters=[{"Name": "tag:Name", "Values": [tags.get("Name", group.name)]}])["SecurityGroups"]
    if found:
        group_id: str = found[0]["GroupId"]
    else:
        group_id = ec2.create_security_group(
            GroupName=group.name, Description=str(group.inputs["description"]),
            VpcId=str(group.inputs["vpcId"]))["GroupId"]
    # The rules of an earlier declaration, or a new group's allow-all egress: the declared
    # rules replace them.
    _revoke_all(ec2, group_id)
    ec2.create_tags(Resources=[group_id], Tags=_tags(tags))
    ingress = ip_permissions(group.inputs.get("ingress") or [])
    egress = ip_permissions(group.inputs.get("egress") or [])
    if ingress:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=ingress)
    if egress:
        ec2.authorize_security_group_egress(GroupId=group_id, IpPermissions=egress)
    return group_id


def _put_alarms(cw: Any, plan: preview.Plan) -> None:
    """Every declared alarm put; alarms of the stack's monitoring no longer declared deleted."""
    declared = {a.name: a for a in _declared(plan, ALARM)}
    for alarm in declared.values():
        cw.put_metric_alarm(**alarm_request(alarm))
    for monitoring in _declared(plan, MONITORING):
        pages = cw.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=f"{monitoring.name}-")
        stale = [a["AlarmName"] for page in pages for a in page["MetricAlarms"]
                 if a["AlarmName"] not in declared]
        if stale:
            cw.delete_alarms(AlarmNames=stale)


def apply(cfg: StackConfig, plan: preview.Plan, instance_id: str) -> None:
    """Make the kitchen cloud hold what ``plan`` declares beyond buckets and the role: the
    security group (and the instance in it, with the declared tags), the topic and its
    subscriptions, the alarms."""
    ec2 = cloud.aws_client("ec2", cfg.region)
    group_id = _put_security_group(ec2, preview.one(plan.resources, SECURITY_GROUP))
    instance = preview.one(plan.resources, INSTANCE)
    ec2.create_tags(Resources=[instance_id], Tags=_tags(instance.inputs.get("tags") or {}))
    ec2.modify_instance_attribute(InstanceId=instance_id, Groups=[group_id])
    sns = cloud.aws_client("sns", cfg.region)
    for topic in _declared(plan, TOPIC):
        arn = sns.create_topic(Name=topic.name, Tags=_tags(topic.inputs.get("tags") or {})
                               )["TopicArn"]
        if arn != topic.id:
            raise KitchenError(f"the kitchen cloud named topic {topic.name} {arn}, the "
                               f"program's alarms notify {topic.id}",
                               "the kitchen's account or region differs from the mocks'")
    for subscription in _declared(plan, SUBSCRIPTION):
        sns.subscribe(TopicArn=str(subscription.inputs["topic"]),
                      Protocol=str(subscription.inputs["protocol"]),
                      Endpoint=str(subscription.inputs["endpoint"]))
    _put_alarms(cloud.aws_client("cloudwatch", cfg.region), plan)


def put_stack_resources(cfg: StackConfig, instance_id: str, public_ip: str) -> dict[str, Any]:
    """Declare and apply the stack's resources for the kitchen host with this instance id and
    address; return the stack's outputs as the program computes them for that host (what
    ``pulumi stack output --json`` would print)."""
    vpc_id = default_vpc(cloud.aws_client("ec2", cfg.region))
    plan = declare(cfg, instance_id, public_ip, vpc_id)
    apply(cfg, plan, instance_id)
    return dict(plan.outputs)


def remove_stack_resources(cfg: StackConfig) -> None:
    """Delete what :func:`apply` made for the stack (a throwaway one, after a drill or a test):
    its alarms, topics and security group (kept while an instance record still uses it)."""
    from botocore.exceptions import ClientError

    ec2 = cloud.aws_client("ec2", cfg.region)
    # The names do not depend on the host's answers.
    plan = declare(cfg, "i-00000000000000000", "198.51.100.1", default_vpc(ec2))
    names = [a.name for a in _declared(plan, ALARM)]
    if names:
        cloud.aws_client("cloudwatch", cfg.region).delete_alarms(AlarmNames=names)
    sns = cloud.aws_client("sns", cfg.region)
    for topic in _declared(plan, TOPIC):
        sns.delete_topic(TopicArn=topic.id)
    group = preview.one(plan.resources, SECURITY_GROUP)
    tag = dict(group.inputs.get("tags") or {}).get("Name", group.name)
    for found in ec2.describe_security_groups(
            Filters=[{"Name": "tag:Name", "Values": [tag]}])["SecurityGroups"]:
        try:
            ec2.delete_security_group(GroupId=found["GroupId"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "DependencyViolation":
                raise
