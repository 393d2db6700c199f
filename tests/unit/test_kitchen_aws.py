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
from infra.stack import OUTPUTS
from infra.user_data import bucket_names
from kitchen import cloud, instances, moto_server
from kitchen.errors import KitchenError

pytestmark = pytest.mark.unit

CFG = stack_config()
ADDRESS = "10.213.0.42"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in-process; the kitchen's clients (``cloud.aws_client``) talk to it."""
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        def client(service: str, region: str = cloud.DEFAULT_REGION, keys: Any = None) -> Any:
            return boto3.client(service, region_name=region)

        monkeypatch.setattr(cloud, "aws_client", client)
        yield client


@pytest.fixture(scope="module")
def declared() -> preview.Plan:
    """What the program declares for the stack, under its ordinary (non-kitchen) mocks."""
    return preview.run(CFG)


def _group(ec2: Any) -> dict[str, Any]:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "tag:Name", "Values": [f"{CFG.name}-net-sg"]}])["SecurityGroups"]
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


def test_alarms_are_the_programs(aws: Any, declared: preview.Plan) -> None:
    instance_id = instances.register("unit", CFG.region)
    kitchen_aws.put_stack_resources(CFG, instance_id, ADDRESS)
    cw = aws("cloudwatch", CFG.region)
    got = {a["AlarmName"]: a for a in cw.describe_alarms(
        AlarmNamePrefix=f"{CFG.name}-alarms-")["MetricAlarms"]}
    alarms = [r for r in declared.resources if r.type == kitchen_aws.ALARM]
    assert len(alarms) >= 7
    assert set(got) == {a.name for a in alarms}
    program_instance = declared.outputs["instance_id"]
    topic = aws("sns", CFG.region).list_topics()["Topics"]
    assert [t["TopicArn"] for t in topic] == [declared.outputs["alarm_topic_arn"]]
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


def test_security_group_and_instance_are_the_programs(aws: Any) -> None:
    instance_id = instances.register("unit", CFG.region)
    kitchen_aws.put_stack_resources(CFG, instance_id, ADDRESS)
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
    first = instances.register("unit", CFG.region)
    kitchen_aws.put_stack_resources(CFG, first, ADDRESS)
    cw = aws("cloudwatch", CFG.region)
    cw.put_metric_alarm(AlarmName=f"{CFG.name}-alarms-dropped", MetricName="m", Namespace="n",
                        Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanThreshold")
    cw.put_metric_alarm(AlarmName="someone-elses", MetricName="m", Namespace="n",
                        Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanThreshold")
    ec2 = aws("ec2", CFG.region)
    group_id = _group(ec2)["GroupId"]
    # A replaced host (a new record) of a stack whose admins moved.
    moved = dataclasses.replace(CFG, admin_cidrs=("198.51.100.0/24", "2001:db8::/32"))
    second = instances.register("unit", CFG.region)
    kitchen_aws.put_stack_resources(moved, second, ADDRESS)
    group = _group(ec2)
    assert group["GroupId"] == group_id
    ssh = {r for r in _rules(group["IpPermissions"]) if r[1] == network.SSH_PORT}
    assert ssh == {("tcp", network.SSH_PORT, c) for c in moved.admin_cidrs}
    names = {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]}
    assert f"{CFG.name}-alarms-dropped" not in names and "someone-elses" in names
    cpu = cw.describe_alarms(AlarmNames=[f"{CFG.name}-alarms-cpu-high"])["MetricAlarms"][0]
    assert cpu["Dimensions"] == [{"Name": "InstanceId", "Value": second}]


def test_outputs_are_the_programs_for_the_kitchen_host(aws: Any) -> None:
    instance_id = instances.register("unit", CFG.region)
    outputs = kitchen_aws.put_stack_resources(CFG, instance_id, ADDRESS)
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
    cw = aws("cloudwatch", CFG.region)
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


def test_a_throwaway_stacks_resources_are_removed(aws: Any) -> None:
    instance_id = instances.register("unit", CFG.region)
    kitchen_aws.put_stack_resources(CFG, instance_id, ADDRESS)
    instances.terminate(instance_id, CFG.region)
    kitchen_aws.remove_stack_resources(CFG)
    assert aws("cloudwatch", CFG.region).describe_alarms()["MetricAlarms"] == []
    assert aws("sns", CFG.region).list_topics()["Topics"] == []
    assert aws("ec2", CFG.region).describe_security_groups(
        Filters=[{"Name": "tag:Name", "Values": [f"{CFG.name}-net-sg"]}])["SecurityGroups"] == []
