"""What a host built from a stack file must show, derived from the rendering that built it.

The suites never restate a value the rendering already holds: sshd's effective settings are the
drop-in's directives, the backend's sandbox is its hardening drop-in, the managed files are the
render manifest. Values the runbooks fix (the jail's times, the log rotation) come from the
HostSpec, which is where the rendering got them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from choiros_infra.release_store import ReleaseError, WantedRelease
from choiros_infra.stack_target import StackTarget
from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice, rendering_for, target_for
from infra.config import load_stack_file
from infra.user_data import bucket_names, host_spec
from provisioning.render import Rendering
from provisioning.spec import (
    APP_ROOT,
    APP_USER,
    BACKEND_PORT,
    BACKEND_UNIT,
    CONFIG_DIR,
    OPEN_TCP_PORTS,
    REQUIRED_UNITS,
    SECRETS_ENV_FILE,
    SECRETS_UNIT,
    HostSpec,
)

__all__ = [
    "APP_ROOT",
    "APP_USER",
    "BACKEND_PORT",
    "BACKEND_UNIT",
    "CONFIG_DIR",
    "MAX_BACKEND_EXPOSURE",
    "OPEN_TCP_PORTS",
    "RUNNING_UNITS",
    "SECRETS_ENV_FILE",
    "SECRETS_UNIT",
    "Expectations",
    "for_run",
    "load_expectations",
]

# Exposure score `systemd-analyze security` may report for the backend at most.
MAX_BACKEND_EXPOSURE = 2.0

# The units the host must run: the host contract's, the same list the health check watches.
RUNNING_UNITS = REQUIRED_UNITS

SSHD_DROP_IN = "/etc/ssh/sshd_config.d/10-choiros.conf"
HARDENING_DROP_IN = f"/etc/systemd/system/{BACKEND_UNIT}.d/hardening.conf"


@dataclass(frozen=True)
class Expectations:
    rendering: Rendering
    spec: HostSpec
    tls_mode: str
    # Where the wanted release is read, when a check first asks: collecting the suites needs
    # no AWS (the kitchen cloud's admin key exists only while it runs).
    stack: StackTarget

    @functools.cached_property
    def wanted(self) -> WantedRelease | None:
        """The stack's wanted release, read from its artifacts bucket (not from the host):
        what the host must run. None: the stack wants none yet. Unreadable: the check fails
        with the reason, it is never taken as a pass."""
        try:
            return self.stack.releases().wanted()
        except ReleaseError as e:
            raise AssertionError(f"cannot read the stack's wanted release: {e.problem} "
                                 f"(Try: {e.fix})") from None

    @property
    def scheme(self) -> str:
        return "http" if self.tls_mode == "off" else "https"

    @property
    def site_name(self) -> str | None:
        """The name Caddy serves its certificate for (acme), else None: use the address."""
        return self.spec.domain if self.tls_mode == "acme" else None

    @property
    def served_ports(self) -> tuple[int, ...]:
        """Ports that answer from outside: SSH, and Caddy on 80 (and 443 unless TLS is off)."""
        return tuple(p for p in OPEN_TCP_PORTS if p != 443 or self.tls_mode != "off")

    def sshd_settings(self) -> dict[str, list[str]]:
        """The drop-in's directives as ``sshd -T`` prints them: lower-case key, then every
        value it is given (HostKey is given twice), lower-case (sshd -T prints LogLevel's in
        capitals)."""
        settings: dict[str, list[str]] = {}
        for line in _directive_lines(self.rendering.file(SSHD_DROP_IN).content):
            key, _, value = line.partition(" ")
            settings.setdefault(key.lower(), []).append(value.strip().lower())
        return settings

    def hardening(self) -> dict[str, list[str]]:
        """The hardening drop-in's ``[Service]`` directives, each with every value it is set
        to (SystemCallFilter is set twice)."""
        settings: dict[str, list[str]] = {}
        for line in _directive_lines(self.rendering.file(HARDENING_DROP_IN).content):
            if line.startswith("["):
                continue
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
        return settings


def _directive_lines(text: str) -> list[str]:
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


class _Options(Protocol):
    def getoption(self, name: str) -> Any: ...


def for_run(config: _Options) -> Expectations:
    """The expectations for a pytest run's --stack-file, --target and --account-id."""
    return load_expectations(Path(config.getoption("stack_file")), config.getoption("target"),
                             config.getoption("account_id"))


@functools.cache
def load_expectations(stack_file: Path, target: str, account: str | None) -> Expectations:
    """Cached: the suites ask at collection (to parametrize) and again in fixtures."""
    cfg = load_stack_file(stack_file)
    choice = TargetChoice(target)
    account_id = account or KITCHEN_ACCOUNT
    rendering = rendering_for(cfg, choice, account_id)
    names = bucket_names(cfg, account_id)
    tls_mode = target_for(choice).tls_mode(cfg.tls_mode)
    target_of = StackTarget(stack_file, cfg, choice, account_id, names.artifacts)
    return Expectations(rendering=rendering, spec=host_spec(cfg, names.artifacts, names.backups),
                        tls_mode=tls_mode, stack=target_of)
