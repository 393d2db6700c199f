"""Pulumi entry point: validate the stack config, declare the stack, export its outputs.

A bad config value stops the program before any resource is declared; Pulumi prints the
error (``Error: ...`` / ``Try: ...``) without a stack trace.
"""

from __future__ import annotations

import pulumi

from infra.config import ConfigError, from_pulumi
from infra.stack import build

try:
    cfg = from_pulumi()
except ConfigError as exc:
    raise pulumi.RunError(exc.render()) from None

for key, value in build(cfg).items():
    pulumi.export(key, value)
