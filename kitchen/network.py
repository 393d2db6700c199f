"""Kitchen networking: a fixed cloud address, and one veth-connected netns per host.

* The cloud address 10.213.0.1/32 sits on ``chk-cloud``, a bridge with no ports in the root
  namespace (the ``dummy`` link type is not available on every kernel; a port-less bridge is
  a local-only interface just the same). The cloud daemons bind to it and nothing else, and
  it never changes, so rendered user-data does not depend on which host number was picked.
* Host number N (1..250) gets netns ``choiros-<name>`` and a veth pair: ``chk-<N>`` in the
  root namespace with 10.213.N.1/24, ``eth0`` inside the netns with 10.213.N.2/24 and a
  default route via 10.213.N.1. The guest reaches the cloud address because it is a local
  address of the root namespace. There is no forwarding: a guest reaches the cloud and its
  own gateway, not the internet.
* The one NAT rule: a guest's TCP to the instance metadata address 169.254.169.254:80, as it
  arrives on a host end of a veth, goes to the kitchen's metadata service on the cloud address
  (nftables table ``ip choiros_kitchen_metadata``). The guest keeps its source address, so the
  service knows which host asks. Only IPv4, like an EC2 instance whose IPv6 metadata endpoint
  is off (the stack's default).

Everything is removable: deleting the netns deletes the veth pair with it; the bridge goes
with ``destroy --all``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitchen.errors import KitchenError
from kitchen.processes import run

CLOUD_ADDRESS = "10.213.0.1"
# Every kitchen address: the machine's (the cloud address, the host end of each veth, from
# which it logs in to its hosts) and the guests'. A guest sees the machine running the kitchen
# only from here, so this is the kitchen's admin network (fail2ban never bans it).
MACHINE_CIDR = "10.213.0.0/16"
CLOUD_BRIDGE = "chk-cloud"
HOST_LINK_PREFIX = "chk-"
NETNS_PREFIX = "choiros-"
NETNS_DIR = Path("/run/netns")
GUEST_INTERFACE = "eth0"
MAX_HOSTS = 250
METADATA_ADDRESS = "169.254.169.254"
METADATA_TABLE = "choiros_kitchen_metadata"


@dataclass(frozen=True)
class HostNetwork:
    """The addresses and names of host number ``number`` called ``name``."""

    name: str
    number: int

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_interface(self) -> str:
        return f"{HOST_LINK_PREFIX}{self.number}"

    @property
    def guest_interface(self) -> str:
        return GUEST_INTERFACE

    @property
    def gateway(self) -> str:
        return f"10.213.{self.number}.1"

    @property
    def guest_address(self) -> str:
        return f"10.213.{self.number}.2"


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = run(["ip", "-j", *args], what="ip " + " ".join(args)).stdout.strip()
    parsed: list[dict[str, Any]] = json.loads(out) if out else []
    return parsed


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def ensure_cloud_address() -> None:
    """Create the port-less bridge holding the cloud address (idempotent)."""
    if not link_exists(CLOUD_BRIDGE):
        run(["ip", "link", "add", CLOUD_BRIDGE, "type", "bridge"])
    run(["ip", "address", "replace", f"{CLOUD_ADDRESS}/32", "dev", CLOUD_BRIDGE])
    run(["ip", "link", "set", CLOUD_BRIDGE, "up"])


def remove_cloud_address() -> None:
    if link_exists(CLOUD_BRIDGE):
        run(["ip", "link", "delete", CLOUD_BRIDGE])


def metadata_redirect_rules(address: str, port: int) -> str:
    """The nftables table that sends the guests' metadata requests to ``address:port``
    (replacing any older version of itself atomically)."""
    return (
        f"table ip {METADATA_TABLE}\n"
        f"delete table ip {METADATA_TABLE}\n"
        f"table ip {METADATA_TABLE} {{\n"
        "    chain prerouting {\n"
        "        type nat hook prerouting priority dstnat; policy accept;\n"
        f'        iifname "{HOST_LINK_PREFIX}*" ip daddr {METADATA_ADDRESS} tcp dport 80 '
        f"dnat to {address}:{port}\n"
        "    }\n"
        "}\n"
    )


def ensure_metadata_redirect(address: str, port: int) -> None:
    run(["nft", "-f", "-"], input=metadata_redirect_rules(address, port),
        what="nft (the metadata redirect)")


def remove_metadata_redirect() -> None:
    run(["nft", "delete", "table", "ip", METADATA_TABLE], check=False)


def cloud_address_present() -> bool:
    if not link_exists(CLOUD_BRIDGE):
        return False
    for link in _ip_json("address", "show", "dev", CLOUD_BRIDGE):
        for info in link.get("addr_info", []):
            if info.get("local") == CLOUD_ADDRESS:
                return True
    return False


def kitchen_netns() -> list[str]:
    """Names of all kitchen network namespaces (ours or stale)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


def host_links() -> dict[int, str]:
    """Host-side veth ends in the root namespace, by host number."""
    found: dict[int, str] = {}
    for link in _ip_json("link", "show"):
        ifname = str(link.get("ifname", ""))
        suffix = ifname.removeprefix(HOST_LINK_PREFIX)
        if ifname.startswith(HOST_LINK_PREFIX) and suffix.isdigit():
            found[int(suffix)] = ifname
    return found


def number_in_netns(netns: str) -> int | None:
    """Recover a host number from the guest address inside a netns (when no state says it)."""
    result = run(["ip", "-n", netns, "-j", "address", "show"], check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return None
    for link in json.loads(result.stdout):
        for info in link.get("addr_info", []):
            parts = str(info.get("local", "")).split(".")
            if parts[:2] == ["10", "213"] and parts[3:] == ["2"]:
                return int(parts[2])
    return None


def numbers_in_use() -> set[int]:
    used = set(host_links())
    for netns in kitchen_netns():
        number = number_in_netns(netns)
        if number is not None:
            used.add(number)
    return used


def create_host_network(net: HostNetwork) -> None:
    """Create the netns and veth pair and address both ends; undo everything on failure."""
    if net.netns_path.exists():
        raise KitchenError(f"network namespace {net.netns} already exists")
    if link_exists(net.host_interface):
        raise KitchenError(f"interface {net.host_interface} already exists")
    try:
        run(["ip", "netns", "add", net.netns])
        run(["ip", "link", "add", net.host_interface, "type", "veth",
             "peer", "name", net.guest_interface, "netns", net.netns])
        run(["ip", "address", "add", f"{net.gateway}/24", "dev", net.host_interface])
        run(["ip", "link", "set", net.host_interface, "up"])
        inside = ["ip", "-n", net.netns]
        run([*inside, "link", "set", "lo", "up"])
        run([*inside, "address", "add", f"{net.guest_address}/24", "dev", net.guest_interface])
        run([*inside, "link", "set", net.guest_interface, "up"])
        run([*inside, "route", "add", "default", "via", net.gateway])
    except BaseException:
        destroy_host_network(net.netns, net.number)
        raise


def destroy_host_network(netns: str, number: int | None) -> None:
    """Remove the netns (taking the veth pair with it) and a leftover host end; idempotent."""
    if (NETNS_DIR / netns).exists() or netns in kitchen_netns():
        run(["ip", "netns", "delete", netns], check=False)
    if number is not None and link_exists(f"{HOST_LINK_PREFIX}{number}"):
        run(["ip", "link", "delete", f"{HOST_LINK_PREFIX}{number}"], check=False)
