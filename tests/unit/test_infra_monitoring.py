"""Alarms: a failed system check recovers the host, and every alarm reaches the topic."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from sample_stack import stack_config

from infra.monitoring import AlarmSpec, Monitoring, MonitoringArgs
from infra.preview import Declared, Recorder, one
from infra.stack import build

pytestmark = pytest.mark.unit

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
RECOVER = "arn:aws:automate:eu-west-1:ec2:recover"


def alarm(resources: list[Declared], key: str) -> Declared:
    return one(resources, ALARM, f"-alarms-{key}")


@pulumi.runtime.test
def test_a_failed_system_status_check_recovers_the_instance_and_notifies(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    outputs = build(stack_config())

    def check(args: list[Any]) -> None:
        resources, topic_arn, instance_id = args
        system = alarm(resources, "status-system")
        inputs = system.inputs
        assert inputs["namespace"] == "AWS/EC2", system.urn
        assert inputs["metricName"] == "StatusCheckFailed_System", system.urn
        assert inputs["dimensions"] == {"InstanceId": instance_id}, f"{system.urn}: {inputs}"
        assert inputs["alarmActions"] == [RECOVER, topic_arn], f"{system.urn}: actions"
        assert inputs["okActions"] == [topic_arn], f"{system.urn}: ok actions"
        assert inputs["comparisonOperator"] == "GreaterThanOrEqualToThreshold", system.urn
        assert inputs["threshold"] == 1, system.urn

    return pulumi.Output.all(
        pulumi_mocks.settled(), outputs["alarm_topic_arn"], outputs["instance_id"]
    ).apply(check)


@pulumi.runtime.test
def test_instance_check_and_sustained_cpu_notify_the_topic(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    outputs = build(stack_config())

    def check(args: list[Any]) -> None:
        resources, topic_arn, instance_id = args
        instance_check = alarm(resources, "status-instance")
        assert instance_check.inputs["metricName"] == "StatusCheckFailed_Instance"
        assert instance_check.inputs["alarmActions"] == [topic_arn], instance_check.urn
        cpu = alarm(resources, "cpu-high")
        inputs = cpu.inputs
        assert (inputs["metricName"], inputs["statistic"]) == ("CPUUtilization", "Average")
        assert inputs["comparisonOperator"] == "GreaterThanThreshold", cpu.urn
        assert inputs["threshold"] == 80, f"{cpu.urn}: threshold {inputs['threshold']}"
        assert inputs["period"] * inputs["evaluationPeriods"] == 15 * 60, f"{cpu.urn}: window"
        assert inputs["period"] == 300, cpu.urn
        assert inputs["alarmActions"] == [topic_arn], cpu.urn
        for each in (instance_check, cpu):
            assert each.inputs["dimensions"] == {"InstanceId": instance_id}, each.urn
            assert RECOVER not in each.inputs["alarmActions"], f"{each.urn}: recovers"

    return pulumi.Output.all(
        pulumi_mocks.settled(), outputs["alarm_topic_arn"], outputs["instance_id"]
    ).apply(check)


@pytest.mark.parametrize("email", ["ops@example.com", None])
@pulumi.runtime.test
def test_the_alert_email_is_subscribed_only_when_set(
    pulumi_mocks: Recorder, email: str | None
) -> pulumi.Output[None]:
    build(stack_config(alert_email=email))

    def check(resources: list[Declared]) -> None:
        topic = one(resources, "aws:sns/topic:Topic")
        subscriptions = [r for r in resources if r.type == SUBSCRIPTION]
        if email is None:
            assert subscriptions == [], f"unexpected {[s.urn for s in subscriptions]}"
            return
        (subscription,) = subscriptions
        assert subscription.inputs == {
            "endpoint": email, "protocol": "email", "topic": topic.id
        }, f"{subscription.urn}: {subscription.inputs}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_a_later_alarm_in_the_choiros_namespace_is_one_more_spec(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    backup_age = AlarmSpec(
        key="backup-stale",
        description="No backup replicated for 15 minutes.",
        namespace="ChoirOS",
        metric_name="BackupAgeSeconds",
        statistic="Maximum",
        comparison_operator="GreaterThanThreshold",
        threshold=900,
        period=300,
        evaluation_periods=1,
        dimensions={"Host": "choiros-example"},
        treat_missing_data="breaching",
    )
    monitoring = Monitoring(
        "watch",
        MonitoringArgs(
            instance_id="i-0123", region="eu-west-1", partition="aws", alert_email=None,
            tags={"project": "choiros"}, extra_alarms=[backup_age],
        ),
    )

    def check(args: list[Any]) -> None:
        resources, topic_arn = args
        stale = one(resources, ALARM, "-backup-stale")
        assert stale.inputs["namespace"] == "ChoirOS", stale.urn
        assert stale.inputs["alarmActions"] == [topic_arn], stale.urn
        assert stale.inputs["treatMissingData"] == "breaching", stale.urn
        assert len([r for r in resources if r.type == ALARM]) == 4, "3 built-in + 1 extra"

    return pulumi.Output.all(pulumi_mocks.settled(), monitoring.topic_arn).apply(check)


@pulumi.runtime.test
def test_a_stale_or_missing_backup_freshness_metric_alarms_the_topic(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    outputs = build(stack_config())

    def check(args: list[Any]) -> None:
        resources, topic_arn = args
        stale = alarm(resources, "backup-stale")
        inputs = stale.inputs
        assert (inputs["namespace"], inputs["metricName"]) == ("ChoirOS", "BackupAgeSeconds")
        assert inputs["dimensions"] == {"Host": "choiros-example"}, (
            f"{stale.urn}: the host publishes Host=<its hostname>, the stack's name")
        assert inputs["treatMissingData"] == "breaching", f"{stale.urn}: a silent host alarms"
        assert inputs["period"] * inputs["evaluationPeriods"] == 15 * 60, stale.urn
        assert (inputs["statistic"], inputs["comparisonOperator"]) == (
            "Maximum", "GreaterThanThreshold"), stale.urn
        assert 5 < inputs["threshold"] <= 120, f"{stale.urn}: above the RPO, well below 15 min"
        assert inputs["alarmActions"] == [topic_arn] and inputs["okActions"] == [topic_arn]

    return pulumi.Output.all(pulumi_mocks.settled(), outputs["alarm_topic_arn"]).apply(check)


@pulumi.runtime.test
def test_the_health_check_alarms_on_3_of_5_unhealthy_minutes_or_silence(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    outputs = build(stack_config())

    def check(args: list[Any]) -> None:
        resources, topic_arn = args
        unhealthy = alarm(resources, "unhealthy")
        inputs = unhealthy.inputs
        assert (inputs["namespace"], inputs["metricName"]) == ("ChoirOS", "Healthy"), unhealthy.urn
        assert inputs["dimensions"] == {"Host": "choiros-example"}, unhealthy.urn
        assert (inputs["statistic"], inputs["comparisonOperator"], inputs["threshold"]) == (
            "Minimum", "LessThanThreshold", 1), unhealthy.urn
        assert (inputs["period"], inputs["evaluationPeriods"], inputs["datapointsToAlarm"]) == (
            60, 5, 3), f"{unhealthy.urn}: 3 of 5 minutes"
        assert inputs["treatMissingData"] == "breaching", f"{unhealthy.urn}: a silent host alarms"
        assert inputs["alarmActions"] == [topic_arn] and inputs["okActions"] == [topic_arn]

    return pulumi.Output.all(pulumi_mocks.settled(), outputs["alarm_topic_arn"]).apply(check)


@pulumi.runtime.test
def test_disk_and_memory_alarm_above_the_configured_percentages(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    outputs = build(stack_config(alarm_disk_percent=75, alarm_memory_percent=85,
                                 alarm_unhealthy_minutes=2))

    def check(args: list[Any]) -> None:
        resources, topic_arn = args
        for key, metric, threshold in (("disk-full", "DiskUsedPercent", 75),
                                       ("memory-high", "MemoryUsedPercent", 85)):
            found = alarm(resources, key)
            inputs = found.inputs
            assert (inputs["namespace"], inputs["metricName"]) == ("ChoirOS", metric), found.urn
            assert inputs["dimensions"] == {"Host": "choiros-example"}, found.urn
            assert (inputs["statistic"], inputs["comparisonOperator"], inputs["threshold"]) == (
                "Maximum", "GreaterThanThreshold", threshold), found.urn
            assert inputs["period"] * inputs["evaluationPeriods"] == 5 * 60, found.urn
            assert inputs["alarmActions"] == [topic_arn], found.urn
        unhealthy = alarm(resources, "unhealthy").inputs
        assert (unhealthy["evaluationPeriods"], unhealthy["datapointsToAlarm"]) == (4, 2)

    return pulumi.Output.all(pulumi_mocks.settled(), outputs["alarm_topic_arn"]).apply(check)
