"""What a host built from a stack file must show, derived from the rendering that built it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from choiros_infra.targets import TargetChoice, rendering_for
from infra.config import load_stack_file
from provisioning.render import Rendering

# Exposure score `systemd-analyze security` may report for the backend at most.
MAX_BACKEND_EXPOSURE = 2.0

RUNNING_UNITS = ("choiros-backend.service", "caddy.service", "fail2ban.service", "ssh.service")


@dataclass(frozen=True)
class Expectations:
    rendering: Rendering
    tls_mode: str

    @property
    def scheme(self) -> str:
        return "http" if self.tls_mode == "off" else "https"


def load_expectations(stack_file: Path, target: str, account: str | None) -> Expectations:
    cfg = load_stack_file(stack_file)
    choice = TargetChoice(target)
    rendering = rendering_for(cfg, choice, account) if account else rendering_for(cfg, choice)
    tls_mode = "internal" if choice is TargetChoice.kitchen else cfg.tls_mode
    return Expectations(rendering=rendering, tls_mode=tls_mode)
