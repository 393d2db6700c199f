"""Choosing a rendering target by name, with the kitchen cloud's fixed addresses."""

from __future__ import annotations

import enum

from infra.config import StackConfig
from infra.user_data import bucket_names, render_for
from kitchen import cloud, network
from provisioning.render import Rendering
from provisioning.target import AWS, AwsEndpoint, Target, kitchen_target

# The account the kitchen cloud (moto) answers as; offline renders use it when told no other.
KITCHEN_ACCOUNT = "123456789012"


class TargetChoice(enum.StrEnum):
    aws = "aws"
    kitchen = "kitchen"


KITCHEN = kitchen_target(
    cloud.APT_PROXY_URL,
    AwsEndpoint(cloud.AWS_ENDPOINT_URL, cloud.ACCESS_KEY_ID, cloud.SECRET_ACCESS_KEY),
    (network.MACHINE_CIDR,),
)


def target_for(choice: TargetChoice) -> Target:
    return AWS if choice is TargetChoice.aws else KITCHEN


def rendering_for(cfg: StackConfig, choice: TargetChoice,
                  account: str = KITCHEN_ACCOUNT) -> Rendering:
    """The rendering a host built from ``cfg`` for ``choice`` got (buckets named per account)."""
    names = bucket_names(cfg, account)
    return render_for(cfg, target_for(choice), names.artifacts, names.backups)
