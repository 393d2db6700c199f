"""Where a rendering goes: EC2, or the kitchen. The only allowed differences live here.

The kitchen boots the same user-data EC2 gets; what it cannot share is named in
``Target`` and nowhere else: how apt reaches the archive, how the host reaches "AWS" (the
kitchen cloud's endpoint and its test credentials, since there is no instance role), and the TLS
mode (a kitchen host has no public DNS name, so Caddy uses its internal CA to exercise 443).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from provisioning.spec import TlsMode

TargetName = Literal["aws", "kitchen"]

# The named differences between the aws and the kitchen rendering (a unit test holds them to it).
TARGET_SETTINGS: tuple[str, ...] = ("apt_proxy", "aws_endpoint", "tls_mode")


@dataclass(frozen=True)
class AwsEndpoint:
    """An S3/SSM/CloudWatch stand-in and the credentials it accepts (kitchen only)."""

    url: str
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class Target:
    name: TargetName
    apt_proxy: str | None = None
    aws_endpoint: AwsEndpoint | None = None
    tls_mode: TlsMode | None = None


AWS = Target(name="aws")


def kitchen_target(apt_proxy: str, aws_endpoint: AwsEndpoint) -> Target:
    """The kitchen's target: apt through its proxy, AWS through its stand-in, Caddy's own CA."""
    return Target(name="kitchen", apt_proxy=apt_proxy, aws_endpoint=aws_endpoint,
                  tls_mode="internal")
