"""Run the real program under Pulumi's mocks and record everything it declares.

``choiros-infra plan`` and the unit tests share this: no Pulumi CLI, no AWS, no credentials.
:class:`AwsMocks` answers resource registrations and provider calls with plausible,
deterministic values (ids and addresses derived from names, account ``123456789012``);
:class:`RecordingMonitor` keeps each registration as the engine would receive it, including
the resource options that mocks alone never see (``delete_before_replace``, ``protect``,
``ignore_changes``, the provider); :class:`Recorder` knows every resource the program
constructed, so a caller can wait until all of them have been registered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks

from infra.config import ConfigError, StackConfig
from infra.stack import build

ACCOUNT = "123456789012"
PARTITION = "aws"
HIDDEN_INPUTS = frozenset({"userData", "userDataBase64"})
HIDDEN_VALUE = "[secret]"

AMI_NAMES = {
    "136693071363": "debian-12-amd64-20250101-1234",
}
DEFAULT_VPC = "vpc-0mock0default0"


def _hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Declared:
    """One resource registration, as the engine would have received it (and the mock id)."""

    id: str
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    custom: bool
    inputs: Mapping[str, Any]
    delete_before_replace: bool
    replace_on_changes: tuple[str, ...]
    ignore_changes: tuple[str, ...]
    protect: bool
    retain_on_delete: bool
    dependencies: tuple[str, ...]


@dataclass(frozen=True)
class Invoked:
    """One provider function call (data source), such as the AMI lookup."""

    token: str
    args: Mapping[str, Any]
    provider: str


class AwsMocks(Mocks):
    """Deterministic stand-ins for the AWS provider: same program in, same values out."""

    def __init__(self, region: str, account: str = ACCOUNT, *,
                 default_vpc: bool = True) -> None:
        self.region = region
        self.account = account
        # False models an account without a default VPC (as under Control Tower).
        self.default_vpc = default_vpc
        self._lock = threading.Lock()
        self.invokes: list[Invoked] = []

    def _arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{PARTITION}:{service}:{region}:{self.account}:{resource}"

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        name, inputs = args.name, dict(args.inputs)
        token = args.typ.rsplit(":", 1)[-1]
        short = _hex(f"{args.typ}/{name}", 17)
        state: dict[str, Any] = dict(inputs)
        if args.typ == "aws:s3/bucket:Bucket":
            bucket = str(inputs.get("bucket") or name)
            state |= {"bucket": bucket, "arn": f"arn:{PARTITION}:s3:::{bucket}",
                      "region": self.region, "bucketDomainName": f"{bucket}.s3.amazonaws.com"}
            return bucket, state
        if args.typ == "aws:ec2/instance:Instance":
            instance_id = f"i-{short}"
            state |= {"arn": self._arn("ec2", f"instance/{instance_id}"),
                      "privateIp": f"172.31.{int(short[:2], 16) % 250}.{int(short[2:4], 16) % 250}",
                      "instanceState": "running"}
            return instance_id, state
        if args.typ == "aws:ec2/eip:Eip":
            allocation = f"eipalloc-{short}"
            state |= {"allocationId": allocation,
                      "publicIp": f"198.51.100.{1 + int(short[:2], 16) % 254}"}
            return allocation, state
        if args.typ == "aws:ec2/securityGroup:SecurityGroup":
            group = f"sg-{short}"
            state |= {"arn": self._arn("ec2", f"security-group/{group}"), "name": name}
            return group, state
        if args.typ == "aws:ec2/keyPair:KeyPair":
            state |= {"keyName": inputs.get("keyName") or name,
                      "arn": self._arn("ec2", f"key-pair/{name}")}
            return name, state
        if args.typ == "aws:iam/role:Role":
            state |= {"name": inputs.get("name") or name,
                      "arn": self._arn("iam", f"role/{name}", regional=False)}
            return name, state
        if args.typ == "aws:iam/instanceProfile:InstanceProfile":
            state |= {"name": inputs.get("name") or name,
                      "arn": self._arn("iam", f"instance-profile/{name}", regional=False)}
            return name, state
        if args.typ == "aws:sns/topic:Topic":
            arn = self._arn("sns", name)
            state |= {"arn": arn, "name": name}
            return arn, state
        if args.typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            state |= {"arn": self._arn("cloudwatch", f"alarm:{name}")}
            return name, state
        return f"{name}-{token.lower()}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        with self._lock:
            self.invokes.append(Invoked(args.token, dict(args.args), args.provider))
        function = args.token.rsplit(":", 1)[-1]
        if function == "getCallerIdentity":
            return {"accountId": self.account, "id": self.account, "userId": "AIDAMOCKUSER",
                    "arn": f"arn:{PARTITION}:iam::{self.account}:user/plan"}, []
        if function == "getPartition":
            return {"partition": PARTITION, "id": PARTITION, "dnsSuffix": "amazonaws.com",
                    "reverseDnsPrefix": "com.amazonaws"}, []
        if function == "getVpcs":
            ids = [DEFAULT_VPC] if self.default_vpc else []
            return {"id": self.region, "ids": ids}, []
        if function == "getSubnet":
            subnet = str(args.args.get("id"))
            vpc = f"vpc-{_hex(subnet, 17)}"
            return {"id": subnet, "vpcId": vpc, "availabilityZone": f"{self.region}a",
                    "arn": self._arn("ec2", f"subnet/{subnet}")}, []
        if function == "getAmi":
            owners = args.args.get("owners") or [""]
            owner = str(owners[0])
            image = f"ami-{_hex(owner, 17)}"
            return {"id": image, "imageId": image, "ownerId": owner,
                    "name": AMI_NAMES.get(owner, "unknown-image"),
                    "architecture": "x86_64", "rootDeviceName": "/dev/xvda"}, []
        return {}, []


class RecordingMonitor(MockMonitor):
    """The mock engine, keeping every registration with the options the engine would see."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self._lock = threading.Lock()
        self.declared: list[Declared] = []

    def RegisterResource(self, request: Any) -> Any:
        register: Callable[[MockMonitor, Any], Any] = MockMonitor.RegisterResource
        response = register(self, request)
        if request.type != "pulumi:pulumi:Stack":
            record = Declared(
                id=response.id,
                type=request.type,
                name=request.name,
                urn=self.make_urn(request.parent, request.type, request.name),
                parent=request.parent,
                provider=request.provider,
                custom=bool(request.custom),
                inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                delete_before_replace=bool(request.deleteBeforeReplace),
                replace_on_changes=tuple(request.replaceOnChanges),
                ignore_changes=tuple(request.ignoreChanges),
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                dependencies=tuple(sorted(request.dependencies)),
            )
            with self._lock:
                self.declared.append(record)
        return response


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Recorder:
    """What one mocked run declared, and a way to wait until all of it was registered."""

    def __init__(self, mocks: AwsMocks, monitor: RecordingMonitor, log: _Collector) -> None:
        self.mocks = mocks
        self.monitor = monitor
        self._log = log
        self.constructed: list[pulumi.Resource] = []
        self.classes: dict[str, type[pulumi.Resource]] = {}  # by URN, filled by settled()

    def _collect(
        self, args: pulumi.ResourceTransformationArgs
    ) -> pulumi.ResourceTransformationResult | None:
        self.constructed.append(args.resource)
        return None

    @property
    def resources(self) -> list[Declared]:
        """Every registration so far, by name: a component, then its children (``name-...``).

        Registration order is not deterministic (registrations run on worker threads)."""
        return sorted(self.monitor.declared, key=lambda d: (d.name, d.type, d.urn))

    @property
    def invokes(self) -> list[Invoked]:
        def order(call: Invoked) -> tuple[str, str]:
            return call.token, json.dumps(call.args, sort_keys=True)

        return sorted(self.mocks.invokes, key=order)

    @property
    def warnings(self) -> list[str]:
        return list(self._log.messages)

    def settled(self) -> pulumi.Output[list[Declared]]:
        """Resolves once every resource constructed so far has been registered."""
        constructed = list(self.constructed)

        def remember(urns: list[str]) -> list[Declared]:
            self.classes.update({urn: type(r) for urn, r in zip(urns, constructed, strict=True)})
            return self.resources

        return pulumi.Output.all(*[r.urn for r in constructed]).apply(remember)

    def of_type(self, type_: str) -> list[Declared]:
        return [d for d in self.resources if d.type == type_]


def one(resources: Sequence[Declared], type_: str, name_suffix: str = "") -> Declared:
    """The single resource of a type (whose name ends with ``name_suffix``), or a clear error."""
    found = [r for r in resources if r.type == type_ and r.name.endswith(name_suffix)]
    if len(found) != 1:
        urns = "\n  ".join(r.urn for r in found) or "(none)"
        raise LookupError(f"expected one {type_} named *{name_suffix}, found:\n  {urns}")
    return found[0]


def install(project: str, stack: str, region: str, *, default_vpc: bool = True,
            mocks: AwsMocks | None = None) -> Recorder:
    """Point the Pulumi runtime at fresh recording mocks (``mocks``, or AwsMocks for
    ``region``), with a fresh root stack resource."""
    pulumi.runtime.reset_options(project=project, stack=stack, preview=False)
    mocks = mocks or AwsMocks(region, default_vpc=default_vpc)
    monitor = RecordingMonitor(mocks)
    log = _Collector()
    logger = logging.getLogger(f"choiros.preview.{stack}")
    logger.propagate = False
    logger.handlers[:] = [log]
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, logger=logger, monitor=monitor
    )
    recorder = Recorder(mocks, monitor, log)
    pulumi.runtime.register_stack_transformation(recorder._collect)
    return recorder


@dataclass(frozen=True)
class Plan:
    """The result of running the program under mocks: what it declares and what it exports."""

    resources: tuple[Declared, ...]
    invokes: tuple[Invoked, ...]
    outputs: Mapping[str, Any]
    warnings: tuple[str, ...]
    constructed_in_apply: int


def _config_error_in(exc: BaseException) -> ConfigError | None:
    """The ConfigError a program raised inside an apply: the engine wraps it in ValueErrors."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConfigError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def run(cfg: StackConfig, *, default_vpc: bool = True, mocks: AwsMocks | None = None) -> Plan:
    """Run :func:`infra.stack.build` for ``cfg`` under mocks and return everything it declared.

    ``default_vpc=False`` models an account without one; a ConfigError raised by the program
    (such as the missing ``choiros:subnet_id``) propagates to the caller. ``mocks``: other
    answers than AwsMocks' (the kitchen's: its instance id, address and VPC)."""
    recorder = install(cfg.project, cfg.stack, cfg.region, default_vpc=default_vpc,
                       mocks=mocks)
    outputs: dict[str, Any] = {}
    built: list[int] = []

    def program() -> pulumi.Output[None]:
        exported = build(cfg)
        built.append(len(recorder.constructed))
        names = list(exported)
        values = pulumi.Output.all(*exported.values())
        return pulumi.Output.all(recorder.settled(), values).apply(
            lambda done: outputs.update(zip(names, done[1], strict=True))
        )

    # pulumi.runtime.test is the SDK's public way to run a program under mocks to completion:
    # it awaits the returned Output and then every outstanding registration.
    run_to_completion: Callable[[Callable[[], Any]], Callable[[], None]] = pulumi.runtime.test
    try:
        run_to_completion(program)()
    except Exception as exc:
        refusal = _config_error_in(exc)
        if refusal is not None:
            raise refusal from None
        raise
    return Plan(
        resources=tuple(recorder.resources),
        invokes=tuple(recorder.invokes),
        outputs=dict(sorted(outputs.items())),
        warnings=tuple(recorder.warnings),
        constructed_in_apply=len(recorder.constructed) - built[0],
    )


def shown(value: Any, key: str = "") -> Any:
    """A value fit to print: secrets hidden, user-data shown as its digest and size."""
    if rpc.is_rpc_secret(value):
        return HIDDEN_VALUE
    if key in HIDDEN_INPUTS and isinstance(value, str):
        digest = hashlib.sha256(value.encode()).hexdigest()
        return f"[sha256:{digest} {len(value)} chars]"
    if isinstance(value, pulumi.StringAsset):
        text = value.text if isinstance(value.text, str) else ""
        digest = hashlib.sha256(text.encode()).hexdigest()
        return f"[asset sha256:{digest} {len(text.encode())} bytes]"
    if isinstance(value, pulumi.FileAsset):
        return f"[file {value.path}]"
    if isinstance(value, Mapping):
        return {str(k): shown(v, str(k)) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [shown(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire format has only floats; 20 GiB reads better than 20.0
    return value
