"""Where a rendering goes: EC2, or the kitchen. The only allowed differences live here.

The kitchen boots the same user-data EC2 gets; what it cannot share is named in
``Target`` and nowhere else: how apt reaches the archive, where the host reaches "AWS" (the
kitchen cloud's endpoint; the credentials come from the instance role through the metadata
service on both, so none are rendered), the TLS
mode (a kitchen host has no public DNS name for ACME, so a stack's ``acme`` becomes Caddy's
internal CA; ``off`` and ``internal`` stay as they are), and who is an admin (fail2ban never
bans the admin CIDRs; a kitchen host's operator is the machine running the kitchen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from provisioning.spec import TlsMode

TargetName = Literal["aws", "kitchen"]

# The named differences between the aws and the kitchen rendering (a unit test holds them to it).
TARGET_SETTINGS: tuple[str, ...] = ("apt_proxy", "aws_endpoint", "tls_mode", "admin_cidrs")


@dataclass(frozen=True)
class Target:
    name: TargetName
    apt_proxy: str | None = None
    # The URL of an S3/SSM/CloudWatch stand-in (kitchen only; None: AWS itself).
    aws_endpoint: str | None = None
    # What this target serves for a stack whose tls_mode is acme (None: acme itself).
    acme_tls_mode: TlsMode | None = None
    # The admin networks, instead of the stack's choiros:admin_cidrs (None: the stack's).
    admin_cidrs: tuple[str, ...] | None = None

    def tls_mode(self, stack_mode: TlsMode) -> TlsMode:
        """The TLS mode a host of this target converges for a stack's ``stack_mode``."""
        return (self.acme_tls_mode or stack_mode) if stack_mode == "acme" else stack_mode


AWS = Target(name="aws")


def kitchen_target(apt_proxy: str, aws_endpoint: str,
                   admin_cidrs: tuple[str, ...]) -> Target:
    """The kitchen's target: apt through its proxy, AWS through its stand-in, Caddy's own CA
    instead of ACME, and the kitchen machine's own addresses as the admin networks."""
    return Target(name="kitchen", apt_proxy=apt_proxy, aws_endpoint=aws_endpoint,
                  acme_tls_mode="internal", admin_cidrs=admin_cidrs)
