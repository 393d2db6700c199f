"""The kitchen cloud's stand-in for the stack's AWS resources holds what the Pulumi program
declares: the same alarms (names, metrics, thresholds, actions), the same security group
rules, the instance record in that group with the instance's tags, and the program's outputs.

Runs against moto in-process (``mock_aws``), through the same ``kitchen.cloud.aws_client``
seam the kitchen uses; the expectations come from the program run under its ordinary mocks
(``infra.preview.run``) and from ``infra/network.py``'s rule constants, never restated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudwatch.responses import CloudWatchResponse
from sample_stack import stack_config

from choiros_infra import kitchen_aws
from choiros_infra.targets import KITCHEN_ACCOUNT
from infra import network, preview
from infra.config import StackConfig
from infra.stack import OUTPUTS
from infra.user_data import bucket_names
from kitchen import cloud, instances, moto_server
from kitchen.errors import KitchenError

pytestmark = pytest.mark.unit

CFG = stack_config()
ADDRESS = "10.213.0.42"


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    """moto in-process for the module (each test uses stacks of its own); the kitchen's
    clients (``cloud.aws_client``) talk to it."""
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            patch.delenv(key, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

        def client(service: str, region: str = cloud.DEFAULT_REGION, keys: Any = None) -> Any:
            return boto3.client(service, region_name=region)

        patch.setattr(cloud, "aws_client", client)
        yield client


@pytest.fixture(scope="module")
def applied(aws: Any) -> tuple[str, dict[str, Any]]:
    """CFG's resources put for a registered host: its instance id and the outputs."""
    instance_id = instances.register("unit", CFG.region)
    return instance_id, kitchen_aws.put_stack_resources(CFG, instance_id, ADDRESS)


@pytest.fixture(scope="module")
def declared() -> preview.Plan:
    """What the program declares for the stack, under its ordinary (non-kitchen) mocks."""
    return preview.run(CFG)


def _group(ec2: Any, cfg: StackConfig = CFG) -> dict[str, Any]:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "tag:Name", "Values": [f"{cfg.name}-net-sg"]}])["SecurityGroups"]
    assert len(found) == 1, found
    group: dict[str, Any] = found[0]
    return group


def _rules(permissions: list[dict[str, Any]]) -> set[tuple[str, int | None, str]]:
    return {(p["IpProtocol"], p.get("FromPort"), r.get("CidrIp") or r.get("CidrIpv6"))
            for p in permissions for r in p["IpRanges"] + p["Ipv6Ranges"]}


def test_instance_record_is_registered_running_and_terminated(aws: Any) -> None:
    instance_id = instances.register("unit", CFG.region)
    ec2 = aws("ec2", CFG.region)
    status = ec2.describe_instance_status(InstanceIds=[instance_id],
                                          IncludeAllInstances=True)["InstanceStatuses"][0]
    assert status["InstanceState"]["Name"] == "running", status
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    tags = {t["Key"]: t["Value"] for t in described["Instances"][0]["Tags"]}
    assert tags[instances.HOST_TAG] == "unit", tags
    instances.terminate(instance_id, CFG.region)
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated", state
    instances.terminate("i-0123456789abcdef0", CFG.region)  # unknown to the cloud: no error


def test_alarms_are_the_programs(aws: Any, applied: tuple[str, dict[str, Any]],
                                declared: preview.Plan) -> None:
    instance_id, _ = applied
    cw = aws("cloudwatch", CFG.region)
    got = {a["AlarmName"]: a for a in cw.describe_alarms(
        AlarmNamePrefix=f"{CFG.name}-alarms-")["MetricAlarms"]}
    alarms = [r for r in declared.resources if r.type == kitchen_aws.ALARM]
    assert len(alarms) >= 7
    assert set(got) == {a.name for a in alarms}
    program_instance = declared.outputs["instance_id"]
    topics = [t["TopicArn"] for t in aws("sns", CFG.region).list_topics()["Topics"]]
    assert declared.outputs["alarm_topic_arn"] in topics
    for alarm in alarms:
        kitchen, inputs = got[alarm.name], alarm.inputs
        for key, (field, kind) in kitchen_aws.ALARM_FIELDS.items():
            if inputs.get(key) is not None:
                want = list(inputs[key]) if kind is list else kind(inputs[key])
                assert kitchen[field] == want, f"{alarm.urn}: {field}"
        # The same dimensions, the instance's id being the kitchen host's.
        want_dims = {k: (instance_id if v == program_instance else v)
                     for k, v in (inputs.get("dimensions") or {}).items()}
        assert {d["Name"]: d["Value"] for d in kitchen["Dimensions"]} == want_dims, alarm.urn


def test_security_group_and_instance_are_the_programs(
        aws: Any, applied: tuple[str, dict[str, Any]]) -> None:
    instance_id, _ = applied
    ec2 = aws("ec2", CFG.region)
    group = _group(ec2)
    ssh = {("tcp", network.SSH_PORT, c) for c in CFG.admin_cidrs}
    web = {("tcp", port, world) for port in network.PUBLIC_PORTS
           for world in (network.WORLD_V4, network.WORLD_V6)}
    assert _rules(group["IpPermissions"]) == ssh | web
    assert _rules(group["IpPermissionsEgress"]) == {("-1", None, network.WORLD_V4),
                                                    ("-1", None, network.WORLD_V6)}
    record = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert [g["GroupId"] for g in record["SecurityGroups"]] == [group["GroupId"]]
    tags = {t["Key"]: t["Value"] for t in record["Tags"]}
    assert tags["Name"] == CFG.name and tags["stack"] == CFG.stack, tags


def test_applying_again_converges_to_the_new_declaration(aws: Any) -> None:
    cfg = stack_config("again")
    first = instances.register("again", cfg.region)
    kitchen_aws.put_stack_resources(cfg, first, ADDRESS)
    cw = aws("cloudwatch", cfg.region)
    for name in (f"{cfg.name}-alarms-dropped", "someone-elses"):
        cw.put_metric_alarm(AlarmName=name, MetricName="m", Namespace="n", Statistic="Maximum",
                            Period=60, EvaluationPeriods=1, Threshold=1,
                            ComparisonOperator="GreaterThanThreshold")
    ec2 = aws("ec2", cfg.region)
    group_id = _group(ec2, cfg)["GroupId"]
    # A replaced host (a new record) of a stack whose admins moved.
    moved = dataclasses.replace(cfg, admin_cidrs=("198.51.100.0/24", "2001:db8::/32"))
    second = instances.register("again", cfg.region)
    kitchen_aws.put_stack_resources(moved, second, ADDRESS)
    group = _group(ec2, cfg)
    assert group["GroupId"] == group_id
    ssh = {r for r in _rules(group["IpPermissions"]) if r[1] == network.SSH_PORT}
    assert ssh == {("tcp", network.SSH_PORT, c) for c in moved.admin_cidrs}
    names = {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]}
    assert f"{cfg.name}-alarms-dropped" not in names and "someone-elses" in names
    cpu = cw.describe_alarms(AlarmNames=[f"{cfg.name}-alarms-cpu-high"])["MetricAlarms"][0]
    assert cpu["Dimensions"] == [{"Name": "InstanceId", "Value": second}]


def test_outputs_are_the_programs_for_the_kitchen_host(
        applied: tuple[str, dict[str, Any]]) -> None:
    instance_id, outputs = applied
    names = bucket_names(CFG, KITCHEN_ACCOUNT)
    assert set(outputs) == set(OUTPUTS)
    assert outputs["instance_id"] == instance_id
    assert outputs["public_ip"] == ADDRESS and outputs["url"] == f"http://{ADDRESS}"
    assert outputs["account_id"] == KITCHEN_ACCOUNT
    assert (outputs["backups_bucket"], outputs["artifacts_bucket"]) == (names.backups,
                                                                        names.artifacts)


def test_an_alarm_input_the_kitchen_does_not_pass_on_is_refused(declared: preview.Plan) -> None:
    alarm = next(r for r in declared.resources if r.type == kitchen_aws.ALARM)
    assert kitchen_aws.alarm_request(alarm)["AlarmName"] == alarm.name
    extended = dataclasses.replace(alarm, inputs={**alarm.inputs, "extendedStatistic": "p99"})
    with pytest.raises(KitchenError, match="extendedStatistic"):
        kitchen_aws.alarm_request(extended)


def test_describe_alarms_applies_every_filter(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto applies only the first filter; the kitchen's moto server all of them."""
    cw = aws("cloudwatch", "us-west-2")  # a region of its own
    for name in ("stack-alarms-a", "stack-alarms-b", "other-c"):
        cw.put_metric_alarm(AlarmName=name, MetricName="m", Namespace="n", Statistic="Maximum",
                            Period=60, EvaluationPeriods=1, Threshold=1,
                            ComparisonOperator="GreaterThanThreshold")
    for name in ("stack-alarms-a", "other-c"):
        cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="unit")

    def names(**filters: Any) -> list[str]:
        return sorted(a["AlarmName"] for a in cw.describe_alarms(**filters)["MetricAlarms"])

    assert names(AlarmNamePrefix="stack-alarms", StateValue="ALARM") == [
        "stack-alarms-a", "stack-alarms-b"]  # moto's own answer: the state is ignored
    monkeypatch.setattr(CloudWatchResponse, "describe_alarms", moto_server._describe_alarms)
    assert names(AlarmNamePrefix="stack-alarms", StateValue="ALARM") == ["stack-alarms-a"]
    assert names(AlarmNamePrefix="stack-alarms") == ["stack-alarms-a", "stack-alarms-b"]
    assert names(StateValue="ALARM") == ["other-c", "stack-alarms-a"]
    assert names(AlarmNames=["stack-alarms-b", "other-c"], StateValue="OK") == [
        "stack-alarms-b"]


def test_a_throwaway_stacks_resources_are_removed(
        aws: Any, applied: tuple[str, dict[str, Any]]) -> None:
    cfg = stack_config("throwaway")
    instance_id = instances.register("throwaway", cfg.region)
    kitchen_aws.put_stack_resources(cfg, instance_id, ADDRESS)
    instances.terminate(instance_id, cfg.region)
    kitchen_aws.remove_stack_resources(cfg)
    alarms = aws("cloudwatch", cfg.region).describe_alarms(AlarmNamePrefix=cfg.name)
    assert alarms["MetricAlarms"] == []
    topics = [t["TopicArn"] for t in aws("sns", cfg.region).list_topics()["Topics"]]
    assert not [t for t in topics if cfg.name in t], topics
    assert aws("ec2", cfg.region).describe_security_groups(
        Filters=[{"Name": "tag:Name", "Values": [f"{cfg.name}-net-sg"]}])["SecurityGroups"] == []
    assert _group(aws("ec2", CFG.region))  # another stack's stays
