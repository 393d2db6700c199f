"""A stack file made into a kitchen host: the kitchen cloud seeded like the stack's AWS account,
and the host booted from the stack's kitchen rendering.

The kitchen cloud gets what ``pulumi up`` and the operator would have put in AWS: the two
buckets, the instance role (from the policy documents the Pulumi program declares, enforced
by the kitchen cloud; the host gets its credentials from the metadata service), the host's
artifacts (host tools and the pinned Litestream binary, as the Pulumi
program uploads them), the SSM parameters the stack names (with test values), the rest of
what the program declares in AWS (security group, alarms, topic, the instance's record:
:mod:`choiros_infra.kitchen_aws`) with the stack's outputs beside the host's state (what
``pulumi stack output --json`` prints, for ``--outputs``), and, for a stack
that wants no release yet, the stand-in app's FIRST_RELEASE published and set as the stack's
wanted release, as an operator's first ``choiros-infra deploy`` would. A stack that already
wants a release (its replica and bucket outlived a host) keeps it. The host then converges
exactly as an EC2 instance would, deploying the wanted release at first boot.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
from pathlib import Path
from typing import Any

from choiros_infra.kitchen_aws import put_stack_resources, remove_stack_resources
from choiros_infra.release_store import ReleaseStore, file_sha256
from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice, rendering_for
from infra.config import StackConfig, load_stack_file, stack_name_of
from infra.user_data import bucket_names
from kitchen import cgroups, cloud, container, lifecycle
from kitchen import iam as kitchen_iam
from kitchen import state as host_state
from kitchen.artifacts import publish_artifacts
from kitchen.lifecycle import Progress
from kitchen.paths import HostPaths
from kitchen.release import build_release
from kitchen.state import HostState
from provisioning.iam_policy import instance_policy
from provisioning.render import published_artifacts

DEFAULT_STACK_FILE = Path("Pulumi.example.yaml")
# The stand-in release a kitchen stack starts with when it wants none yet.
FIRST_RELEASE = "1.0.0"


def test_secret_value(parameter: str) -> str:
    """The value the kitchen stores for an SSM parameter: recognisable, never a real secret."""
    return f"kitchen-test-value-for-{parameter.rsplit('/', 1)[-1]}"


def instance_role_name(cfg: StackConfig) -> str:
    """The name of the stack's instance role in the kitchen cloud."""
    return f"{cfg.name}-host"


def stack_instance_policy(cfg: StackConfig) -> dict[str, Any]:
    """The inline policy ``infra/iam.py`` gives the stack's role, for the kitchen account."""
    names = bucket_names(cfg, KITCHEN_ACCOUNT)
    return instance_policy(
        partition="aws", region=cfg.region, account=KITCHEN_ACCOUNT,
        backups_bucket_arn=f"arn:aws:s3:::{names.backups}", backup_prefix=cfg.backup_prefix,
        artifacts_bucket_arn=f"arn:aws:s3:::{names.artifacts}", secrets=cfg.secrets,
        secrets_kms_key=cfg.secrets_kms_key)


def put_stack_role(cfg: StackConfig, policy: dict[str, Any] | None = None) -> str:
    """Create or update the stack's instance role (``policy``: instead of the stack's own,
    for a test that takes a permission away); return its ARN."""
    return kitchen_iam.put_instance_role(
        cloud.aws_client("iam", cfg.region), instance_role_name(cfg),
        stack_instance_policy(cfg) if policy is None else policy, cloud.ec2_keys().arn)


def seed_stack(cfg: StackConfig) -> str:
    """Put the stack's buckets, instance role, parameters and first release into the running
    kitchen cloud; return the role's ARN."""
    names = bucket_names(cfg, KITCHEN_ACCOUNT)
    cloud.seed_cloud([names.artifacts, names.backups],
                     {p: test_secret_value(p) for p in cfg.secrets}, region=cfg.region)
    role = put_stack_role(cfg)
    s3 = cloud.aws_client("s3", cfg.region)
    publish_artifacts(s3, names.artifacts, published_artifacts())
    store = ReleaseStore(s3, names.artifacts)
    if store.wanted() is None:
        with tempfile.TemporaryDirectory(prefix="choiros-release-") as out:
            sha256 = publish_stand_in(store, FIRST_RELEASE, Path(out))
        store.set_wanted(FIRST_RELEASE, sha256, since=None, verified=True)
    return role


def publish_stand_in(store: ReleaseStore, version: str, out_dir: Path, *,
                     unhealthy: bool = False) -> str:
    """Build the stand-in release ``version`` into ``out_dir`` and publish it (the same bytes
    again change nothing); returns its sha256."""
    tarball = build_release(version, out_dir, unhealthy=unhealthy)
    sha256 = file_sha256(tarball)
    store.publish(tarball, sha256)
    return sha256


def stack_up(name: str, stack_file: Path, progress: Progress | None = None) -> HostState:
    """Boot kitchen host ``name`` from ``stack_file``'s kitchen rendering."""
    return _boot(name, stack_file, load_stack_file(stack_file), progress)


def _boot(name: str, stack_file: Path, cfg: StackConfig,
          progress: Progress | None) -> HostState:
    user_data = rendering_for(cfg, TargetChoice.kitchen).user_data
    st = lifecycle.up(name, user_data, progress=progress,
                      prepare_cloud=lambda _info: seed_stack(cfg), replica=replica_of(cfg),
                      region=cfg.region)
    st.stack_file = str(stack_file.resolve())
    host_state.save(st)
    with lifecycle.phase(progress, "aws"):
        outputs = put_stack_resources(cfg, st.instance_id, st.address)
        HostPaths(name).outputs_file.write_text(json.dumps(outputs, indent=2, sort_keys=True)
                                                + "\n")
    return st


def built_from(st: HostState) -> Path:
    """The stack file a kitchen host was built from (the example stack for older hosts)."""
    return Path(st.stack_file) if st.stack_file else DEFAULT_STACK_FILE


def replica_of(cfg: StackConfig) -> str:
    """Where a host of this stack replicates its database in the kitchen cloud."""
    return f"s3://{bucket_names(cfg, KITCHEN_ACCOUNT).backups}/{cfg.backup_prefix}"


# --- replacement and the restore drill ---------------------------------------------------

def replace_host(name: str, stack_file: Path, *, hard: bool = False,
                 progress: Progress | None = None) -> HostState:
    """Replace kitchen host ``name`` by a new one from ``stack_file``, as ``pulumi up`` replaces
    the instance when its user-data changes: the old host goes first (two hosts must never
    replicate into one prefix), the new one restores the database at boot.

    Soft: an orderly shutdown, so Litestream uploads what is pending. ``hard``: every process of
    the host is killed at once, like a lost instance: only what was already in S3 survives.
    """
    cfg = load_stack_file(stack_file)
    st = lifecycle.status(name)
    if hard:
        cgroups.kill_all(name)
    else:
        container.stop(st.machine, st.pids.get("nspawn"), container.SHUTDOWN_TIMEOUT)
    lifecycle.destroy(name, progress=progress)
    return _boot(name, stack_file, cfg, progress)


def throwaway_stack(stack_file: Path, workdir: Path, prefix: str = "drill", *,
                    own_parameters: bool = False) -> Path:
    """A copy of ``stack_file`` under a fresh stack name ``<prefix>-<hex>``: its own buckets and
    backup prefix, so a drill or a test never touches another host's backups. With
    ``own_parameters``, its secrets under ``/choiros/<stack>/`` are renamed to the new stack's
    (``/choiros/<prefix>-<hex>/...``), so that changing one (the security runbook's rotation)
    changes no other host's."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    path = workdir / f"Pulumi.{name}.yaml"
    text = stack_file.read_text()
    if own_parameters:
        text = text.replace(f"/choiros/{stack_name_of(stack_file)}/", f"/choiros/{name}/")
    path.write_text(text)
    load_stack_file(path)
    return path


def remove_stack_objects(cfg: StackConfig) -> None:
    """Delete the stack's buckets and everything in them, its instance role, its own SSM
    parameters (those under ``/choiros/<stack>/``) and its other AWS resources (alarms, topic,
    security group) from the kitchen cloud (moto keeps them in memory)."""
    remove_stack_resources(cfg)
    iam = cloud.aws_client("iam", cfg.region)
    with contextlib.suppress(iam.exceptions.NoSuchEntityException):
        iam.delete_role_policy(RoleName=instance_role_name(cfg),
                               PolicyName=kitchen_iam.ROLE_POLICY_NAME)
        iam.delete_role(RoleName=instance_role_name(cfg))
    own = [p for p in cfg.secrets if p.startswith(f"/choiros/{cfg.stack}/")]
    if own:
        cloud.aws_client("ssm", cfg.region).delete_parameters(Names=own)
    s3 = cloud.aws_client("s3", cfg.region)
    names = bucket_names(cfg, KITCHEN_ACCOUNT)
    for bucket in (names.backups, names.artifacts):
        with contextlib.suppress(s3.exceptions.ClientError, s3.exceptions.NoSuchBucket):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=obj["Key"])
            s3.delete_bucket(Bucket=bucket)
