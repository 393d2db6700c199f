"""A stack file made into a kitchen host: the kitchen cloud seeded like the stack's AWS account,
and the host booted from the stack's kitchen rendering.

The kitchen cloud gets what ``pulumi up`` and the operator would have put in AWS: the two
buckets, the SSM parameters the stack names (with test values), and the release named by
``choiros:app_version`` (the stand-in app, built here) in the artifacts bucket. The host then
converges exactly as an EC2 instance would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice, rendering_for
from infra.config import StackConfig, load_stack_file
from infra.user_data import bucket_names
from kitchen import cloud, lifecycle
from kitchen.errors import UsageError
from kitchen.lifecycle import Progress
from kitchen.release import build_release, upload_release
from kitchen.state import HostState


def test_secret_value(parameter: str) -> str:
    """The value the kitchen stores for an SSM parameter: recognisable, never a real secret."""
    return f"kitchen-test-value-for-{parameter.rsplit('/', 1)[-1]}"


def seed_stack(cfg: StackConfig) -> None:
    """Put the stack's buckets, parameters and first release into the running kitchen cloud."""
    names = bucket_names(cfg, KITCHEN_ACCOUNT)
    cloud.seed_cloud([names.artifacts, names.backups],
                     {p: test_secret_value(p) for p in cfg.secrets}, region=cfg.region)
    if cfg.app_version is not None:
        with tempfile.TemporaryDirectory(prefix="choiros-release-") as out:
            tarball = build_release(cfg.app_version, Path(out))
            upload_release(cloud.aws_client("s3", cfg.region), names.artifacts, tarball)


def load_kitchen_stack(stack_file: Path) -> StackConfig:
    cfg = load_stack_file(stack_file)
    if cfg.app_version is None:
        raise UsageError(
            f"{stack_file} sets no choiros:app_version, so the kitchen host would run no app",
            f"add `choiros:app_version: 1.0.0` to {stack_file}; the kitchen builds that "
            "version of its stand-in release")
    return cfg


def stack_up(name: str, stack_file: Path, progress: Progress | None = None) -> HostState:
    """Boot kitchen host ``name`` from ``stack_file``'s kitchen rendering."""
    cfg = load_kitchen_stack(stack_file)
    user_data = rendering_for(cfg, TargetChoice.kitchen).user_data
    return lifecycle.up(name, user_data, progress=progress,
                        prepare_cloud=lambda _info: seed_stack(cfg))
