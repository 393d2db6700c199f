"""Where the kitchen keeps things on the machine, in one place.

Layout under the state root (``/var/lib/choiros-kitchen``, or ``$CHOIROS_KITCHEN_HOME``)::

    kitchen.lock                  serialises host-number allocation and cloud start
    cloud/                        the kitchen cloud: state.json, daemon logs, apt-cacher-ng logs
    images/<key>/rootfs           base images, one per suite + package list (kept across runs)
    images/<key>.lock             serialises builds of one image
    hosts/<name>/                 one kitchen host: state.json, rootfs/, SSH key, console.log,
                                  outputs.json (its stack's outputs, for --outputs)

The apt cache lives where apt-cacher-ng keeps it by default, ``/var/cache/apt-cacher-ng``,
so it survives ``destroy --all`` and warms every later image build and converge.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kitchen.errors import UsageError

STATE_ROOT_ENV = "CHOIROS_KITCHEN_HOME"
DEFAULT_STATE_ROOT = Path("/var/lib/choiros-kitchen")
APT_CACHE_DIR = Path("/var/cache/apt-cacher-ng")

# Short enough that "choiros-<name>" stays a valid hostname label and netns name.
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$")


def state_root() -> Path:
    return Path(os.environ.get(STATE_ROOT_ENV, str(DEFAULT_STATE_ROOT)))


def lock_file() -> Path:
    return state_root() / "kitchen.lock"


def cloud_dir() -> Path:
    return state_root() / "cloud"


def images_dir() -> Path:
    return state_root() / "images"


def hosts_dir() -> Path:
    return state_root() / "hosts"


def validate_name(name: str) -> str:
    """Host names become netns, machine and host names: lowercase letters, digits, dashes."""
    if not _NAME.match(name):
        raise UsageError(
            f"invalid kitchen name {name!r}",
            "use 1-32 lowercase letters, digits and dashes, starting with a letter "
            "(e.g. --name dev)",
        )
    return name


@dataclass(frozen=True)
class HostPaths:
    """Files of one kitchen host; all of them go away with ``destroy``."""

    name: str

    @property
    def root(self) -> Path:
        return hosts_dir() / self.name

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def ssh_key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def ssh_public_key(self) -> Path:
        return self.root / "id_ed25519.pub"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    @property
    def outputs_file(self) -> Path:
        """The host's stack outputs, as ``pulumi stack output --json`` prints them."""
        return self.root / "outputs.json"

    @property
    def seed_dir(self) -> Path:
        return self.rootfs / "var/lib/cloud/seed/nocloud"

    @property
    def cloud_init_output_log(self) -> Path:
        return self.rootfs / "var/log/cloud-init-output.log"
