"""moto's server, with two corrections so its IAM enforcement judges requests as AWS does.

1. Which SSM parameters a request is about. moto authorizes a request against the Resource
   of the caller's policies only where its service knows the request's resource: S3 (bucket
   and key ARNs), STS AssumeRole (the role), IAM and SQS. Every other service, SSM among
   them, is authorized as if the resource were ``*``, so a policy scoped to parameter ARNs
   (as the instance role's is) would never match and the host could not read its secrets.
   AWS authorizes each parameter a request names; this module makes moto do the same for
   SSM's parameter actions.
2. The action's service prefix. moto takes it from the request's signing name, which for
   CloudWatch is ``monitoring``: it would ask for ``monitoring:PutMetricData``, an action no
   policy grants, where IAM's is ``cloudwatch:PutMetricData``.
3. CloudWatch's DescribeAlarms applies every filter it is given (name prefix or names,
   action prefix, state); moto applies only the first, so ``describe-alarms
   --alarm-name-prefix P --state-value ALARM`` (the incident runbook's triage) would list
   every alarm of the stack as firing.

Then it runs moto's own server: ``python -m kitchen.moto_server`` takes moto.server's
arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto import server
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult
from moto.iam.access_control import IAMRequestBase
from moto.ssm.responses import SimpleSystemManagerResponse

from provisioning.iam_policy import parameter_arn


def parameter_arns(action: str, param: Callable[[str], Any], partition: str, region: str,
                   account: str) -> list[str]:
    """The ARNs of the parameters an SSM request names ([] when it names none)."""
    if "Parameter" not in action:  # documents, sessions, ...: moto's own "*"
        return []
    names = param("Names") or [param("Name") or param("Path")]
    return [parameter_arn(partition, region, account, str(n)) for n in names if n]


def _authorize_each_parameter(self: SimpleSystemManagerResponse, resource: str = "*") -> None:
    arns = parameter_arns(self._get_action(), self._get_param, self.partition, self.region,
                          self.current_account)
    for arn in arns or [resource]:
        _authorize(self, arn)


_authorize = SimpleSystemManagerResponse._authenticate_and_authorize_normal_action

# Signing names that differ from the service's IAM prefix (of the services the host calls).
IAM_PREFIX = {"monitoring": "cloudwatch"}


def iam_action(action: str) -> str:
    """``monitoring:PutMetricData`` as IAM spells it: ``cloudwatch:PutMetricData``."""
    service, _, name = action.partition(":")
    return f"{IAM_PREFIX.get(service, service)}:{name}"


def _with_iam_prefix(self: IAMRequestBase, *args: Any, **kwargs: Any) -> None:
    _request_init(self, *args, **kwargs)
    self._action = iam_action(self._action)


_request_init = IAMRequestBase.__init__


def matches(alarm: Any, *, names: list[str], name_prefix: str | None,
            action_prefix: str | None, state: str | None) -> bool:
    """Whether ``alarm`` passes every DescribeAlarms filter given (None or empty: not given)."""
    return ((not names or alarm.name in names)
            and (not name_prefix or alarm.name.startswith(name_prefix))
            and (not action_prefix or any(str(a).startswith(action_prefix)
                                          for a in alarm.alarm_actions))
            and (not state or alarm.state_value == state))


def _describe_alarms(self: CloudWatchResponse) -> ActionResult:
    alarms = [a for a in self.cloudwatch_backend.describe_alarms()
              if matches(a, names=self._get_param("AlarmNames", []),
                         name_prefix=self._get_param("AlarmNamePrefix"),
                         action_prefix=self._get_param("ActionPrefix"),
                         state=self._get_param("StateValue"))]
    return ActionResult({"MetricAlarms": [a for a in alarms if a.rule is None],
                         "CompositeAlarms": [a for a in alarms if a.rule is not None]})


def main() -> None:
    ssm = SimpleSystemManagerResponse
    ssm._authenticate_and_authorize_normal_action = _authorize_each_parameter  # type: ignore[method-assign,assignment]
    IAMRequestBase.__init__ = _with_iam_prefix  # type: ignore[method-assign]
    CloudWatchResponse.describe_alarms = _describe_alarms  # type: ignore[method-assign]
    server.main()


if __name__ == "__main__":
    main()
