"""The kitchen's AWS enforces the instance role from ``infra/iam.py``'s policy documents.

The host's tools have no keys: they take the role's credentials from the kitchen's metadata
service, and the kitchen cloud (moto with IAM enforced) checks each call against the role's
policy, built by the same function the Pulumi program uses. So a permission the tools need and
the policy lacks fails here, before a production host.

Runbook: 50-testing/01-testing.md#the-kitchens-aws
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guest_kit import host_name, stack_host

from choiros_infra.kitchen_stack import put_stack_role, stack_instance_policy
from infra.config import StackConfig, load_stack_file
from kitchen import lifecycle
from kitchen.state import HostState

pytestmark = pytest.mark.kitchen

SECRETS_TOOL = "/usr/local/sbin/choiros-secrets"


@pytest.fixture(scope="module")
def host(stack_file: Path) -> Iterator[HostState]:
    with stack_host(host_name("iam"), stack_file) as host:
        yield host


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    """``policy`` with ``action`` taken out of every statement that grants it."""
    statements = []
    for statement in policy["Statement"]:
        actions = statement["Action"]
        kept = [a for a in ([actions] if isinstance(actions, str) else actions) if a != action]
        if kept:
            statements.append({**statement, "Action": kept})
    return {**policy, "Statement": statements}


def test_the_host_reads_its_secrets_with_the_role_and_fails_without_the_permission(
        host: HostState) -> None:
    cfg: StackConfig = load_stack_file(Path(host.stack_file))
    assert cfg.secrets, "the example stack names SSM parameters"
    assert lifecycle.exec_in(host.name, [SECRETS_TOOL]).returncode == 0
    policy = stack_instance_policy(cfg)
    try:
        put_stack_role(cfg, without(policy, "ssm:GetParameters"))
        refused = lifecycle.exec_in(host.name, [SECRETS_TOOL])
        assert refused.returncode != 0, refused
        assert "cannot read SSM parameters" in refused.stderr, refused.stderr
        assert "AccessDenied" in refused.stderr and "ssm:GetParameters" in refused.stderr
    finally:
        put_stack_role(cfg, policy)
    restored = lifecycle.exec_in(host.name, [SECRETS_TOOL])
    assert restored.returncode == 0, restored.stderr
