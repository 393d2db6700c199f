"""A valid stack config for tests, and variations of it."""

from __future__ import annotations

from typing import Any

from infra.config import StackConfig, parse_config

# A syntactically valid ed25519 public key (the key body encodes its own type name).
ED25519_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG3i1x7kVxOTNwF5TVOXeE0dJ6T+5yGWYjVIMPs8EMnq ops@example"
)

BASE: dict[str, Any] = {
    "region": "eu-west-1",
    "admin_cidrs": ["203.0.113.7/32"],
    "ssh_public_key": ED25519_KEY,
    "secrets": ["/choiros/example/OPENAI_API_KEY"],
}


def stack_config(stack: str = "example", **overrides: Any) -> StackConfig:
    values = {**BASE, **overrides}
    return parse_config({k: v for k, v in values.items() if v is not None}, stack)
