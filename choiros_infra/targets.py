"""Choosing a rendering target by name, with the kitchen cloud's fixed addresses.

The kitchen target is built on first use: ``render --target aws``, verify and drift of an AWS
host never import the ``kitchen`` package (tests/unit/test_render.py holds that).
"""

from __future__ import annotations

import enum
from functools import cache

from infra.config import StackConfig
from infra.user_data import bucket_names, render_for
from provisioning.render import Rendering
from provisioning.target import AWS, Target, kitchen_target

# The account the kitchen cloud (moto) answers as; offline renders use it when told no other.
KITCHEN_ACCOUNT = "123456789012"


class TargetChoice(enum.StrEnum):
    aws = "aws"
    kitchen = "kitchen"


@cache
def kitchen() -> Target:
    """The kitchen rendering target: the kitchen cloud's apt proxy and AWS stand-in, and the
    machine running the kitchen as the admin network."""
    from kitchen import cloud, network  # here, not at the top: only a kitchen rendering needs it

    return kitchen_target(cloud.APT_PROXY_URL, cloud.AWS_ENDPOINT_URL, (network.MACHINE_CIDR,))


def target_for(choice: TargetChoice) -> Target:
    return AWS if choice is TargetChoice.aws else kitchen()


def rendering_for(cfg: StackConfig, choice: TargetChoice,
                  account: str = KITCHEN_ACCOUNT) -> Rendering:
    """The rendering a host built from ``cfg`` for ``choice`` got (buckets named per account)."""
    names = bucket_names(cfg, account)
    return render_for(cfg, target_for(choice), names.artifacts, names.backups)
