"""The kitchen base image: a Debian 12 root filesystem holding what a Debian cloud image
holds for our purposes, configured the way Debian's EC2 AMIs are.

Built once with ``mmdebstrap --variant=minbase`` (through the kitchen's apt-cacher-ng when it
runs, so a cold build warms the cache guests install from), cached under
``images/<suite>-<hash>/`` where the hash covers the suite, mirrors, package list and the
configuration files written here, so changing any of them builds a new image. Builds go to a
temporary directory renamed into place, so a half-built image is never used. Each host gets
it as the read-only lower layer of an overlay, or a copy (see :mod:`kitchen.rootfs`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kitchen.errors import KitchenError
from kitchen.locks import locked
from kitchen.mounts import remove_tree
from kitchen.paths import images_dir
from kitchen.processes import run
from kitchen.state import now

SUITE = "bookworm"
MIRRORS: tuple[str, ...] = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)

# Every package on top of minbase, and why it is there. The first seven are the brief's
# Debian 12 cloud image. Measured: cloud-init converges without the last three (iproute2 comes
# in as a dependency anyway); they are here because every Debian cloud image has them and the
# host's own software expects them.
IMAGE_PACKAGES: Mapping[str, str] = {
    "systemd": "the init of a Debian 12 cloud image",
    "systemd-sysv": "/sbin/init -> systemd, which `systemd-nspawn -b` runs",
    "cloud-init": "converges the host from the user-data, as on EC2",
    "openssh-server": "how test suites and operators reach the host",
    "python3": "in every Debian cloud image (cloud-init pulls it in anyway)",
    "sudo": "the default user's passwordless sudo",
    "ca-certificates": "the TLS trust store of a cloud image",
    "dbus": "recommended by systemd and in every cloud image: hostnamectl, timedatectl, "
            "loginctl and systemd-logind need the system bus",
    "iproute2": "`ip`, which cloud-init uses to list interfaces (its ci-info network table)",
    "netbase": "/etc/services and /etc/protocols (priority important, absent from minbase); "
               "getservbyname() users such as fail2ban and nftables read them",
}

BUILD_TIMEOUT = 1800.0
MANIFEST = "manifest.json"

# Files written into the image after mmdebstrap; part of the image key.
CLOUD_CFG = """\
# The kitchen's analogue of Debian's EC2 image configuration.
# The seed is a NoCloud directory written by the kitchen before boot.
datasource_list: [NoCloud, None]
# Debian's EC2 AMIs call the default user "admin".
system_info:
  default_user:
    name: admin
    lock_passwd: true
    gecos: Debian
    groups: [adm, audio, cdrom, dialout, dip, floppy, plugdev, sudo, video]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
# /etc/hosts gets localhost and the hostname (Caddy and sudo resolve it).
manage_etc_hosts: true
# The kitchen configures the guest's interface from outside; cloud-init must not touch it.
network:
  config: disabled
"""

IMAGE_FILES: Mapping[str, str] = {
    "etc/cloud/cloud.cfg.d/01_kitchen.cfg": CLOUD_CFG,
    # cloud-init's locale module keeps a C.UTF-8 system as it is; with no /etc/default/locale
    # it wants en_US.UTF-8, which needs the locales package and locale-gen at every first boot.
    "etc/default/locale": "LANG=C.UTF-8\n",
    "etc/hostname": "localhost\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
                 "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
    # Guests have no DNS: the cloud is addressed by IP and apt resolves through its proxy.
    # No nameserver means lookups fail at once instead of timing out.
    "etc/resolv.conf": "# kitchen guests have no DNS; the kitchen cloud is addressed by IP\n",
    # Empty: systemd gives each container its own machine-id at first boot.
    "etc/machine-id": "",
}

# The guest's interface is configured from outside; systemd-networkd must not manage it.
MASKED_UNITS: tuple[str, ...] = (
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
)

# Written by mmdebstrap or the build host; a cloud image has none of these.
REMOVED_FILES: tuple[str, ...] = (
    "etc/apt/apt.conf.d/99mmdebstrap",  # holds the build-time apt proxy
    "var/lib/dbus/machine-id",
)


@dataclass(frozen=True)
class Image:
    key: str
    rootfs: Path
    built: bool  # True when this call built it, False when it came from the cache
    seconds: float


def image_key(suite: str = SUITE, packages: Sequence[str] = tuple(IMAGE_PACKAGES),
              mirrors: Sequence[str] = MIRRORS) -> str:
    recipe = {
        "suite": suite,
        "packages": sorted(packages),
        "mirrors": list(mirrors),
        "files": dict(sorted(IMAGE_FILES.items())),
        "masked": sorted(MASKED_UNITS),
        "removed": sorted(REMOVED_FILES),
        "ssh_host_keys": "removed",
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{suite}-{digest[:12]}"


def configure_rootfs(rootfs: Path) -> None:
    """Turn mmdebstrap's output into the kitchen's cloud image."""
    for rel, content in IMAGE_FILES.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(content)
    for rel in REMOVED_FILES:
        (rootfs / rel).unlink(missing_ok=True)
    # Generated per instance by cloud-init's ssh module (it runs before ssh.service); hosts
    # sharing the image must not share host keys.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for unit in MASKED_UNITS:
        link = rootfs / "etc/systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")


def _mmdebstrap_argv(target: Path, suite: str, packages: Sequence[str],
                     mirrors: Sequence[str], apt_proxy: str | None) -> list[str]:
    argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages)]
    if apt_proxy:
        argv.append(f'--aptopt=Acquire::http::Proxy "{apt_proxy}"')
    return [*argv, suite, str(target), *mirrors]


def _build(tmp: Path, suite: str, packages: Sequence[str], mirrors: Sequence[str],
           apt_proxy: str | None) -> None:
    log = tmp / "build.log"
    argv = _mmdebstrap_argv(tmp / "rootfs", suite, packages, mirrors, apt_proxy)
    with open(log, "wb") as out:
        try:
            code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT,
                                  check=False).returncode
        except FileNotFoundError as exc:
            raise KitchenError("mmdebstrap is not installed",
                               "apt-get install mmdebstrap, or `make system-deps`") from exc
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise KitchenError(f"mmdebstrap failed with exit code {code}",
                           "check that deb.debian.org is reachable (through the apt proxy "
                           "when the kitchen cloud runs)", tail)
    configure_rootfs(tmp / "rootfs")


def ensure_image(apt_proxy: str | None = None, *, suite: str = SUITE,
                 packages: Sequence[str] = tuple(IMAGE_PACKAGES),
                 mirrors: Sequence[str] = MIRRORS) -> Image:
    """Return the cached image for this recipe, building it first if there is none."""
    started = time.monotonic()
    key = image_key(suite, packages, mirrors)
    root = images_dir()
    final = root / key
    if (final / MANIFEST).exists():
        return Image(key, final / "rootfs", False, time.monotonic() - started)
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / f"{key}.lock"):
        if (final / MANIFEST).exists():  # another process built it while we waited
            return Image(key, final / "rootfs", False, time.monotonic() - started)
        for stale in root.glob(f".tmp-{key}-*"):
            remove_tree(stale)  # an interrupted earlier build
        remove_tree(final)  # a directory without manifest is not an image
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{key}-"))
        try:
            _build(tmp, suite, packages, mirrors, apt_proxy)
            version = run(["mmdebstrap", "--version"], check=False).stdout.strip()
            manifest = {
                "key": key, "suite": suite, "packages": list(packages), "mirrors": list(mirrors),
                "apt_proxy": apt_proxy, "built_at": now(), "mmdebstrap": version,
                "build_seconds": round(time.monotonic() - started, 1),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
    return Image(key, final / "rootfs", True, time.monotonic() - started)


def cached_images() -> list[str]:
    root = images_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).exists())
