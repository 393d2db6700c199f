"""Alarms for the host, and the SNS topic they notify.

Every alarm is an :class:`AlarmSpec`, plain data; :func:`host_alarms` lists the built-in ones
and :class:`Monitoring` turns each spec into a CloudWatch alarm wired to the topic. Alarms on
what the host publishes itself (:func:`backup_freshness_alarm`, :func:`health_alarms`: health
check, disk, memory) are more specs passed in ``MonitoringArgs.extra_alarms``: no new wiring.
Their metric names and thresholds come from the host contract, ``provisioning.spec``'s
``HostMetrics`` and ``BackupPolicy``, the same values the host's tools are rendered with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from provisioning.spec import BackupPolicy, HostMetrics


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm: what metric, when it fires, and whether it also recovers the host."""

    key: str
    description: str
    namespace: str
    metric_name: str
    statistic: str
    comparison_operator: str
    threshold: float
    period: int
    evaluation_periods: int
    dimensions: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    recover_instance: bool = False
    treat_missing_data: str = "missing"
    datapoints_to_alarm: int | None = None  # M of N: None means every evaluated period


def host_alarms(instance_id: pulumi.Input[str]) -> list[AlarmSpec]:
    """The alarms every host gets from EC2's own metrics."""
    on_instance: dict[str, pulumi.Input[str]] = {"InstanceId": instance_id}
    return [
        AlarmSpec(
            key="status-system",
            description="EC2 system status check failed: the host is being recovered "
            "onto new hardware (same instance, same volume, same address).",
            namespace="AWS/EC2",
            metric_name="StatusCheckFailed_System",
            statistic="Maximum",
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=1,
            period=60,
            evaluation_periods=2,
            dimensions=on_instance,
            recover_instance=True,
        ),
        AlarmSpec(
            key="status-instance",
            description="EC2 instance status check failed: the operating system is not "
            "responding. See the incident runbook.",
            namespace="AWS/EC2",
            metric_name="StatusCheckFailed_Instance",
            statistic="Maximum",
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=1,
            period=60,
            evaluation_periods=3,
            dimensions=on_instance,
        ),
        AlarmSpec(
            key="cpu-high",
            description="CPU above 80% for 15 minutes.",
            namespace="AWS/EC2",
            metric_name="CPUUtilization",
            statistic="Average",
            comparison_operator="GreaterThanThreshold",
            threshold=80,
            period=300,
            evaluation_periods=3,
            dimensions=on_instance,
        ),
    ]


def backup_freshness_alarm(host: str, metrics: HostMetrics, policy: BackupPolicy) -> AlarmSpec:
    """The database backup is stale: the replica more than ``policy.stale_after_seconds``
    behind every minute for ``policy.stale_minutes`` minutes, or the host stopped publishing
    the metric (its freshness timer publishes it every minute; missing data counts as stale)."""
    stale_after_seconds, stale_minutes = policy.stale_after_seconds, policy.stale_minutes
    metric = metrics.backup_age
    return AlarmSpec(
        key="backup-stale",
        description=f"The database replica in S3 has been more than {stale_after_seconds}s "
        f"behind for {stale_minutes} minutes, or {metric} stopped arriving: check "
        "choiros-litestream.service and choiros-backup-freshness.timer on the host. See the "
        "backup runbook.",
        namespace=metrics.namespace,
        metric_name=metric,
        statistic="Maximum",
        comparison_operator="GreaterThanThreshold",
        threshold=stale_after_seconds,
        period=60,
        evaluation_periods=stale_minutes,
        dimensions={metrics.dimension: host},
        treat_missing_data="breaching",
    )


def health_alarms(host: str, metrics: HostMetrics, *, unhealthy_minutes: int,
                  disk_percent: int, memory_percent: int) -> list[AlarmSpec]:
    """What choiros-healthcheck.timer publishes every minute (``metrics.healthy``,
    ``disk_used``, ``memory_used``): unhealthy ``unhealthy_minutes`` of the last
    ``unhealthy_minutes + 2`` minutes or not reporting at all; disk or memory above their
    thresholds for 5 minutes."""
    on_host: dict[str, pulumi.Input[str]] = {metrics.dimension: host}
    namespace = metrics.namespace
    window = unhealthy_minutes + 2
    return [
        AlarmSpec(
            key="unhealthy",
            description=f"The health check failed {unhealthy_minutes} of the last {window} "
            "minutes (/health through Caddy or direct, a required unit not running, or a "
            "full filesystem), or "
            f"{metrics.healthy} stopped arriving (host down, choiros-healthcheck.timer "
            "stopped). Start with `choiros-infra diagnose`; see the incident-response runbook.",
            namespace=namespace,
            metric_name=metrics.healthy,
            statistic="Minimum",
            comparison_operator="LessThanThreshold",
            threshold=1,
            period=60,
            evaluation_periods=window,
            datapoints_to_alarm=unhealthy_minutes,
            dimensions=on_host,
            treat_missing_data="breaching",
        ),
        AlarmSpec(
            key="disk-full",
            description=f"/, the data or the log filesystem has been more than "
            f"{disk_percent}% full for 5 minutes. See the capacity-planning runbook.",
            namespace=namespace,
            metric_name=metrics.disk_used,
            statistic="Maximum",
            comparison_operator="GreaterThanThreshold",
            threshold=disk_percent,
            period=60,
            evaluation_periods=5,
            dimensions=on_host,
        ),
        AlarmSpec(
            key="memory-high",
            description=f"Memory use has been above {memory_percent}% for 5 minutes. See the "
            "capacity-planning runbook.",
            namespace=namespace,
            metric_name=metrics.memory_used,
            statistic="Maximum",
            comparison_operator="GreaterThanThreshold",
            threshold=memory_percent,
            period=60,
            evaluation_periods=5,
            dimensions=on_host,
        ),
    ]


@dataclass(frozen=True)
class MonitoringArgs:
    """The host to watch, who to tell, and any alarms beyond the built-in ones."""

    instance_id: pulumi.Input[str]
    region: str
    partition: pulumi.Input[str]
    alert_email: str | None
    tags: Mapping[str, str]
    extra_alarms: Sequence[AlarmSpec] = ()


class Monitoring(pulumi.ComponentResource):
    """An SNS topic, its optional email subscription, and one CloudWatch alarm per spec."""

    topic_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("choiros:infra:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.topic = aws.sns.Topic(
            f"{name}-topic", tags={**args.tags, "Name": f"{name}-topic"}, opts=child
        )
        self.subscription = (
            aws.sns.TopicSubscription(
                f"{name}-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=args.alert_email,
                opts=child,
            )
            if args.alert_email
            else None
        )
        recover = pulumi.Output.concat(
            "arn:", args.partition, ":automate:", args.region, ":ec2:recover"
        )
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        for spec in [*host_alarms(args.instance_id), *args.extra_alarms]:
            actions: list[pulumi.Input[str]] = [self.topic.arn]
            if spec.recover_instance:
                actions = [recover, self.topic.arn]
            self.alarms[spec.key] = aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}",
                alarm_description=spec.description,
                namespace=spec.namespace,
                metric_name=spec.metric_name,
                statistic=spec.statistic,
                comparison_operator=spec.comparison_operator,
                threshold=spec.threshold,
                period=spec.period,
                evaluation_periods=spec.evaluation_periods,
                datapoints_to_alarm=spec.datapoints_to_alarm,
                dimensions=dict(spec.dimensions),
                treat_missing_data=spec.treat_missing_data,
                alarm_actions=actions,
                ok_actions=[self.topic.arn],
                tags={**args.tags, "Name": f"{name}-{spec.key}"},
                opts=child,
            )

        self.topic_arn = self.topic.arn
        self.register_outputs({"topic_arn": self.topic_arn})
