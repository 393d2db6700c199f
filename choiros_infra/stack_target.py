"""Which stack a command acts on, and where its host and buckets are: the Pulumi way.

``--stack NAME`` means the stack file ``Pulumi.NAME.yaml`` (``--stack-file F`` names one
directly). Where its host and buckets are comes from the stack's outputs (``public_ip``,
``ssh_user``, ``account_id``, ``artifacts_bucket``, ``backups_bucket``): read through the
Automation API when a Pulumi CLI is installed, or from a file saved with
``pulumi stack output --json > F`` and given as ``--outputs F``. A kitchen host needs none of
that: its state records where it is and which stack file built it.

Flags given on the command line win over outputs (``--host``, ``--account-id``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from choiros_infra.host_access import HostAccess, UsageProblem, parse_host_url
from choiros_infra.release_store import ReleaseStore
from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice
from infra.config import ConfigError, StackConfig, load_stack_file, stack_name_of
from infra.naming import account_id_problem
from infra.user_data import bucket_names

OUTPUT_KEYS = ("public_ip", "ssh_user", "account_id", "artifacts_bucket", "backups_bucket")


@dataclass(frozen=True)
class StackTarget:
    """One stack, the target it was rendered for, and where its host and buckets are."""

    stack_file: Path
    cfg: StackConfig
    target: TargetChoice
    account_id: str
    artifacts_bucket: str
    host_url: str | None = None
    ssh_config: Path | None = None  # a kitchen host's own ssh_config

    def s3(self) -> Any:
        """An S3 client for the stack's buckets: the kitchen cloud, or AWS's default chain."""
        if self.target is TargetChoice.kitchen:
            from kitchen import cloud

            return cloud.aws_client("s3", self.cfg.region)
        import boto3

        return boto3.client("s3", region_name=self.cfg.region)

    def releases(self) -> ReleaseStore:
        return ReleaseStore(self.s3(), self.artifacts_bucket)

    def access(self, ssh_key: Path | None = None) -> HostAccess:
        if self.host_url is None:
            raise UsageProblem(f"no address for stack {self.cfg.stack}'s host",
                               "give --host ssh://USER@ADDR, or --outputs F (pulumi stack "
                               "output --json > F) with public_ip and ssh_user")
        return HostAccess(url=self.host_url, ssh_config=self.ssh_config,
                          ssh_key=None if self.ssh_config else ssh_key)


def stack_file_for(stack: str | None, stack_file: Path | None) -> Path:
    """``--stack NAME`` -> ``Pulumi.NAME.yaml``; ``--stack-file`` as given; both must agree."""
    if stack is None and stack_file is None:
        raise UsageProblem("no stack given", "give --stack NAME (for Pulumi.NAME.yaml) or "
                           "--stack-file F")
    if stack is not None and stack_file is not None:
        try:
            named = stack_name_of(stack_file)
        except ConfigError:
            named = None
        if named != stack:
            raise UsageProblem(f"--stack {stack} and --stack-file {stack_file} disagree",
                               "give one of them")
    path = stack_file if stack_file is not None else Path(f"Pulumi.{stack}.yaml")
    if not path.is_file():
        raise UsageProblem(f"stack file {path} does not exist",
                           "run in the directory of Pulumi.yaml, or give --stack-file")
    return path


def read_outputs_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageProblem(f"--outputs {path} cannot be read ({e.strerror})",
                           "save them with: pulumi stack output --json > F") from None
    except ValueError as e:
        raise UsageProblem(f"--outputs {path} is not JSON ({e})",
                           "save them with: pulumi stack output --json > F") from None
    if not isinstance(data, dict):
        raise UsageProblem(f"--outputs {path} is not a JSON object",
                           "save them with: pulumi stack output --json > F")
    return data


def automation_outputs(stack: str, work_dir: Path) -> dict[str, Any]:
    """The stack's outputs through the Automation API (needs the Pulumi CLI and a login)."""
    from pulumi import automation as auto

    try:
        selected = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        return {k: v.value for k, v in selected.outputs().items()}
    except Exception as e:  # no such stack, no login, CLI failure: all mean "give --outputs"
        raise UsageProblem(f"cannot read stack {stack}'s outputs: {e}",
                           "pulumi stack output --json > F, then give --outputs F") from None


def resolve(*, stack: str | None = None, stack_file: Path | None = None,
            target: TargetChoice = TargetChoice.aws, outputs: Path | None = None,
            host: str | None = None, account_id: str | None = None,
            work_dir: Path | None = None, need_host: bool = True,
            need_account: bool = True) -> StackTarget:
    """The stack target from command-line options. Raises UsageProblem or ConfigError.
    ``need_host`` False: only the buckets matter (``release publish``); ``need_account``
    False: only the host does (``diagnose``)."""
    path = stack_file_for(stack, stack_file)
    cfg = load_stack_file(path)
    if host is not None:
        parse_host_url(host)
    if target is TargetChoice.kitchen:
        account = account_id or KITCHEN_ACCOUNT
        if problem := account_id_problem(account):
            raise UsageProblem(f"--account-id {problem}", "leave it out for the kitchen")
        return StackTarget(path, cfg, target, account, bucket_names(cfg, account).artifacts,
                           host_url=host)
    values: dict[str, Any] = {}
    missing_host = need_host and host is None
    missing_account = need_account and account_id is None
    if outputs is not None:
        values = read_outputs_file(outputs)
    elif missing_host or missing_account:
        if shutil.which("pulumi") is None and not missing_host:
            raise UsageProblem("--target aws needs the stack's AWS account id: the buckets "
                               "(and so the host's config) are named for it",
                               "--account-id $(aws sts get-caller-identity --query Account "
                               "--output text), or --outputs F (pulumi stack output --json)")
        if shutil.which("pulumi") is None:
            raise UsageProblem(f"where stack {cfg.stack} runs is in its outputs, and there is "
                               "no Pulumi CLI here to read them",
                               "pulumi stack output --json > F (where the CLI is), then give "
                               "--outputs F; or give --host and --account-id")
        values = automation_outputs(cfg.stack, work_dir or Path.cwd())
    account = account_id or str(values.get("account_id") or "")
    if need_account and not account:
        raise UsageProblem("no AWS account id: the outputs have no account_id",
                           "give --account-id, or outputs from this version of the program")
    if account and (problem := account_id_problem(account)):
        raise UsageProblem(f"--account-id {problem}", "give the 12-digit id of the stack's "
                           "account (aws sts get-caller-identity --query Account)")
    if host is None and values.get("public_ip"):
        host = f"ssh://{values.get('ssh_user') or 'admin'}@{values['public_ip']}"
    artifacts = str(values.get("artifacts_bucket") or (
        bucket_names(cfg, account).artifacts if account else ""))
    return StackTarget(path, cfg, TargetChoice.aws, account, artifacts, host_url=host)


def kitchen_target(name: str) -> StackTarget:
    """A kitchen host by name: its stack file, the kitchen cloud's buckets, its ssh_config."""
    from choiros_infra.kitchen_stack import built_from
    from kitchen import lifecycle
    from kitchen.ssh_access import ssh_config

    st = lifecycle.status(name)
    path = built_from(st)
    cfg = load_stack_file(path)
    return StackTarget(path, cfg, TargetChoice.kitchen, KITCHEN_ACCOUNT,
                       bucket_names(cfg, KITCHEN_ACCOUNT).artifacts,
                       host_url=f"ssh://{st.ssh_user}@{st.address}", ssh_config=ssh_config(st))
