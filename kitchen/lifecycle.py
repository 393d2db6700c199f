"""Kitchen host lifecycle: up, reboot, destroy, status, and running things in a host.

``up`` goes through named phases (preflight, cloud, image, network, rootfs, seed, boot,
converge), reports each to an optional progress callback with its duration, and writes the
host's state after each, so ``destroy`` can always find what exists. Any failure or Ctrl-C
before the guest converged rolls the host back completely. A host that booted but did not
converge (cloud-init error, failed units) is kept, state ``failed``, so it can be inspected;
``destroy`` removes it.

``destroy`` is idempotent and works from whatever is on the machine (state file or not):
the nspawn process and anything left in the host's cgroup, mounts, the rootfs copy, the
netns and veth pair. ``destroy_all`` also does it for strays and stops the kitchen cloud.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kitchen import cgroups, cloud, container, instances, network, preflight, rootfs
from kitchen import state as host_state
from kitchen.errors import ConvergeError, KitchenError, UsageError
from kitchen.image import ensure_image
from kitchen.locks import locked
from kitchen.mounts import mounts_below, remove_tree
from kitchen.paths import HostPaths, lock_file, validate_name
from kitchen.processes import cmdline, find_processes, pid_alive, poll_until, run
from kitchen.seed import generate_ssh_key, known_hosts_lines, write_seed
from kitchen.ssh_access import close_connections
from kitchen.state import HostState, HostStatus, now

SSH_USER = "admin"
SSH_PORT = 22
CONVERGE_TIMEOUT = 1200.0
BOOT_TIMEOUT = 60.0
SSH_TIMEOUT = 60.0
DESTROY_GRACE = 5.0
LOG_EXCERPT_LINES = 40


def invoked_as() -> str:
    """``choiros-infra`` as the operator ran it, so a printed hint can be pasted as is: the
    path as typed (``.venv/bin/choiros-infra`` after ``make setup``, the bare name when it is
    on PATH); the ``.venv`` path when run another way (``python -m``, tests)."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 if Path(argv0).name == "choiros-infra" else ".venv/bin/choiros-infra"


CLI = f"{invoked_as()} kitchen"

_LIVE_STATES = {HostStatus.BOOTING, HostStatus.CONVERGING, HostStatus.READY,
                HostStatus.FAILED, HostStatus.REBOOTING}


@dataclass(frozen=True)
class PhaseEvent:
    phase: str
    status: Literal["start", "done", "failed"]
    seconds: float = 0.0


Progress = Callable[[PhaseEvent], None]


@contextmanager
def phase(progress: Progress | None, name: str) -> Iterator[None]:
    started = time.monotonic()
    if progress:
        progress(PhaseEvent(name, "start"))
    try:
        yield
    except BaseException:
        if progress:
            progress(PhaseEvent(name, "failed", time.monotonic() - started))
        raise
    if progress:
        progress(PhaseEvent(name, "done", time.monotonic() - started))


def machine_name(name: str) -> str:
    """nspawn machine name, netns name and guest hostname of kitchen ``name``."""
    return f"{network.NETNS_PREFIX}{name}"


def _save(st: HostState, status: HostStatus | None = None) -> None:
    if status is not None:
        st.state = status
    host_state.save(st)


# --- up -----------------------------------------------------------------------------------

def _traces(name: str) -> list[str]:
    """What exists on the machine for kitchen ``name``, whatever the state file says."""
    paths = HostPaths(name)
    machine = machine_name(name)
    found = []
    if paths.root.exists():
        found.append(str(paths.root))
    if (network.NETNS_DIR / machine).exists():
        found.append(f"netns {machine}")
    found += [f"nspawn process {pid}" for pid in container.nspawn_pids(machine)]
    found += [f"cgroup {path}" for path in cgroups.host_cgroups(name) if path.exists()]
    return found


def _reserve(name: str, replica: str = "") -> HostState:
    """Claim ``name`` and a free host number, atomically with respect to other ``up``s; refuse
    a second live host replicating into ``replica`` (as EC2's delete-before-replace does)."""
    paths = HostPaths(name)
    with locked(lock_file()):
        for other in host_state.all_states():
            if (replica and other.replica == replica and other.name != name
                    and pid_alive(other.pids.get("nspawn"))):
                raise UsageError(
                    f"kitchen {other.name!r} already replicates its database into {replica}; "
                    "two hosts must never write one backup",
                    f"`{CLI} destroy --name {other.name}` first (its successor restores the "
                    f"data at boot), or `{CLI} replace --name {other.name}`")
        existing = host_state.load(name)
        if existing is not None and pid_alive(existing.pids.get("nspawn")):
            raise UsageError(
                f"kitchen {name!r} already exists ({existing.state}, {existing.address})",
                f"`{CLI} destroy --name {name}` first, or choose another --name",
            )
        traces = _traces(name)
        if traces:
            raise UsageError(
                f"a stale half-created kitchen {name!r} is in the way: {', '.join(traces)}",
                f"`{CLI} destroy --name {name}` to clean it up",
            )
        used = {st.number for st in host_state.all_states()} | network.numbers_in_use()
        free = [n for n in range(1, network.MAX_HOSTS + 1) if n not in used]
        if not free:
            raise UsageError(f"all {network.MAX_HOSTS} kitchen host numbers are in use",
                             f"`{CLI} list`, then destroy hosts you no longer need")
        net = network.HostNetwork(name, free[0])
        machine = machine_name(name)
        st = HostState(
            name=name, number=net.number, state=HostStatus.CREATING,
            address=net.guest_address, ssh_user=SSH_USER, ssh_key=str(paths.ssh_key),
            ssh_port=SSH_PORT, machine=machine, hostname=machine, netns=net.netns,
            host_interface=net.host_interface, guest_interface=net.guest_interface,
            gateway=net.gateway, rootfs=str(paths.rootfs), known_hosts=str(paths.known_hosts),
            console_log=str(paths.console_log), replica=replica,
        )
        _save(st)
    return st


def up(
    name: str,
    user_data: bytes,
    *,
    progress: Progress | None = None,
    converge_timeout: float = CONVERGE_TIMEOUT,
    keep_failed: bool = True,
    prepare_cloud: Callable[[cloud.CloudInfo], str | None] | None = None,
    replica: str = "",
    region: str = cloud.DEFAULT_REGION,
) -> HostState:
    """Create, boot and converge kitchen host ``name`` from ``user_data`` (bytes, as EC2
    would get them, gzip or not); return its state once cloud-init finished and systemd runs.

    Raises ConvergeError (host kept as ``failed`` unless ``keep_failed`` is false) when
    cloud-init or systemd reported failure; any other failure or interruption removes the
    half-created host before re-raising. ``prepare_cloud`` runs once the kitchen cloud is up,
    before the host boots: where the caller puts the buckets, parameters and release the
    converge will fetch, and the instance role, whose ARN it returns (None: the host has no
    role, and the metadata service gives it no credentials). ``replica``
    (s3://bucket/prefix/) is where the host will replicate its database; ``up`` refuses while
    another live host replicates there. The host's instance record is registered in the
    kitchen cloud's EC2 in ``region`` (its stack's), and its id is the host's instance id.
    """
    validate_name(name)
    with phase(progress, "preflight"):
        preflight.check()
        st = _reserve(name, replica)
    paths = HostPaths(name)
    net = network.HostNetwork(name, st.number)
    try:
        with phase(progress, "cloud"):
            info = cloud.ensure_cloud()
        if prepare_cloud is not None:
            with phase(progress, "stack"):
                st.instance_role = prepare_cloud(info) or ""
                _save(st)
        with phase(progress, "image"):
            image = ensure_image(info.apt_proxy_url)
            st.image = image.key
            _save(st)
        with phase(progress, "network"):
            network.create_host_network(net)
        with phase(progress, "rootfs"):
            st.rootfs_mode = rootfs.create(image, paths.root, paths.rootfs)
            _save(st)
        with phase(progress, "seed"):
            public_key = generate_ssh_key(paths, f"choiros-kitchen-{name}")
            st.instance_id = instances.register(name, region)
            st.instance_region = region
            write_seed(paths, user_data, st.instance_id, st.hostname, public_key)
            _save(st)
        with phase(progress, "boot"):
            _boot(st)
        with phase(progress, "converge"):
            _converge(st, converge_timeout)
        _save(st, HostStatus.READY)
        return st
    except ConvergeError as exc:
        if keep_failed:
            st.error = exc.message
            _save(st, HostStatus.FAILED)
        else:
            _rollback(name, progress)
        raise
    except BaseException:
        _rollback(name, progress)
        raise


def _rollback(name: str, progress: Progress | None) -> None:
    with phase(progress, "rollback"):
        destroy(name)


def _boot(st: HostState) -> container.Guest:
    paths = HostPaths(st.name)
    net = network.HostNetwork(st.name, st.number)
    st.pids = {"nspawn": container.boot(st.machine, paths.rootfs, net.netns_path,
                                        paths.console_log, st.name)}
    st.started_at = now()
    _save(st, HostStatus.BOOTING)
    guest = container.wait_for_init(st.machine, st.pids["nspawn"], paths.console_log,
                                    BOOT_TIMEOUT)
    st.pids["init"] = guest.init_pid
    _save(st)
    return guest


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _converge(st: HostState, timeout: float) -> None:
    """Wait for cloud-init and systemd; raise ConvergeError with the evidence if either failed."""
    _save(st, HostStatus.CONVERGING)
    paths = HostPaths(st.name)
    init = st.pids["init"]
    deadline = time.monotonic() + timeout
    try:
        report = container.guest_exec(init, ["cloud-init", "status", "--wait", "--long"],
                                      timeout=timeout).stdout
    except KitchenError:
        report = f"status: still running after {timeout:.0f}s"
    status = next((line.split(":", 1)[1].strip() for line in report.splitlines()
                   if line.startswith("status:")), "unknown")
    system = container.system_state(init, max(deadline - time.monotonic(), 30))
    # Host keys exist once cloud-init's ssh module ran; record them even for a failed host,
    # so `kitchen ssh` into it (to investigate) can check them.
    lines = known_hosts_lines(paths.rootfs, st.address)
    paths.known_hosts.write_text("".join(f"{line}\n" for line in lines))
    problem = None
    if status != "done" or system != "running":
        problem = f"cloud-init: {status}, systemd: {system}"
    elif not poll_until(lambda: _port_open(st.address, st.ssh_port), SSH_TIMEOUT, interval=0.2):
        problem = f"SSH on {st.address}:{st.ssh_port} did not answer"
    if problem is not None:
        try:
            log = paths.cloud_init_output_log.read_text(errors="replace")
        except OSError:
            log = ""
        raise ConvergeError(
            f"kitchen {st.name!r} did not converge ({problem})",
            f"`{CLI} ssh --name {st.name}` to look around (sudo cloud-init status --long, "
            f"journalctl -b); `{CLI} destroy --name {st.name}` when done",
            cloud_init_status=status,
            status_report=report,
            log_excerpt=_tail(log, LOG_EXCERPT_LINES),
            failed_units=container.failed_units(init),
        )
    st.error = None


def _port_open(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), 1):
        return True
    return False


# --- running hosts ------------------------------------------------------------------------

def status(name: str) -> HostState:
    """The host's state; ``stopped`` when the state says running but the container is gone."""
    validate_name(name)
    st = host_state.load(name)
    if st is None:
        if _traces(name):
            raise UsageError(f"kitchen {name!r} is stale (no readable state)",
                             f"`{CLI} destroy --name {name}`")
        raise UsageError(f"no kitchen named {name!r}", f"`{CLI} up --name {name}`")
    if st.state in _LIVE_STATES and not pid_alive(st.pids.get("nspawn")):
        st.state = HostStatus.STOPPED
    return st


def list_hosts() -> list[HostState]:
    hosts = []
    for name in host_state.host_names():
        try:
            hosts.append(status(name))
        except UsageError:
            hosts.append(HostState(name=name, number=0, state="stale", address="",
                                   ssh_user=SSH_USER, ssh_key="", ssh_port=SSH_PORT))
    return hosts


def running_guest(name: str) -> container.Guest:
    st = status(name)
    init = st.pids.get("init")
    if st.state == HostStatus.STOPPED or init is None or not pid_alive(init):
        raise UsageError(f"kitchen {name!r} is not running ({st.state})",
                         f"`{CLI} destroy --name {name}`, then `{CLI} up --name {name}`")
    return container.Guest(st.machine, st.pids["nspawn"], init)


def exec_in(name: str, argv: Sequence[str], *, user: str | None = None,
            timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in kitchen ``name``'s guest (as root, or as ``user``)."""
    guest = running_guest(name)
    return container.guest_exec(guest.init_pid, argv, user=user, timeout=timeout, check=check)


def reboot(name: str, *, progress: Progress | None = None,
           timeout: float = CONVERGE_TIMEOUT) -> HostState:
    """Reboot the guest the way `sudo reboot` on EC2 would, then wait for it to come back
    with systemd running and cloud-init's per-boot stage done."""
    guest = running_guest(name)
    st = status(name)
    with phase(progress, "shutdown"):
        _save(st, HostStatus.REBOOTING)
        container.request_reboot(guest.init_pid)
        if not container.wait_exit(guest.nspawn_pid, container.SHUTDOWN_TIMEOUT * 2):
            container.stop(st.machine, guest.nspawn_pid)
        cgroups.kill_all(name)
        cgroups.remove(name)
        container.cleanup_runtime(st.machine)
    with phase(progress, "boot"):
        _boot(st)
    try:
        with phase(progress, "converge"):
            _converge(st, timeout)
    except ConvergeError as exc:
        st.error = exc.message
        _save(st, HostStatus.FAILED)
        raise
    _save(st, HostStatus.READY)
    return st


# --- destroy ------------------------------------------------------------------------------

def leftovers(name: str, number: int | None = None) -> list[str]:
    """What destroy should have removed but is still there (empty when clean)."""
    found = _traces(name)
    found += [f"mount {p}" for p in mounts_below(HostPaths(name).root)]
    if number is not None and network.link_exists(f"{network.HOST_LINK_PREFIX}{number}"):
        found.append(f"link {network.HOST_LINK_PREFIX}{number}")
    return found


def destroy(name: str, *, progress: Progress | None = None) -> bool:
    """Remove kitchen ``name`` and everything it made; True if there was anything."""
    validate_name(name)
    paths = HostPaths(name)
    machine = machine_name(name)
    st = host_state.load(name)
    number = st.number if st is not None else network.number_in_netns(machine)
    existed = st is not None or bool(_traces(name))
    with phase(progress, "destroy"):
        if st is not None:
            close_connections(st)
            _terminate_record(st)
        # Short grace: the guest is about to be deleted, an orderly shutdown buys nothing.
        container.stop(machine, st.pids.get("nspawn") if st else None, DESTROY_GRACE)
        cgroups.kill_all(name)
        cgroups.remove(name)
        container.cleanup_runtime(machine)
        network.destroy_host_network(machine, number)
        remove_tree(paths.root)
    left = leftovers(name, number)
    if left:
        raise KitchenError(f"kitchen {name!r} was not removed completely: {', '.join(left)}",
                           f"run `{CLI} destroy --name {name}` again; if it persists, "
                           "remove these by hand")
    return existed


def _terminate_record(st: HostState) -> None:
    """Terminate the host's instance record, if the kitchen cloud that holds it still runs
    (a stopped cloud took its records with it; destroy never starts one). A cloud that does
    not answer never stops a destroy: the record is only a record."""
    from botocore.exceptions import BotoCoreError, ClientError

    if st.instance_id and st.instance_region and cloud.cloud_running():
        with contextlib.suppress(BotoCoreError, ClientError, KitchenError):
            instances.terminate(st.instance_id, st.instance_region)


def _stray_names() -> set[str]:
    """Kitchen names known only from the machine (netns, cgroups, nspawn processes)."""
    names = set(host_state.host_names())
    names |= {ns.removeprefix(network.NETNS_PREFIX) for ns in network.kitchen_netns()}
    for root in cgroups.hierarchies():
        top = root / cgroups.KITCHEN_CGROUP
        if top.is_dir():
            names |= {p.name for p in top.iterdir() if p.is_dir()}
    for pid in find_processes(lambda argv: bool(argv) and argv[0].endswith(container.NSPAWN)):
        for arg in cmdline(pid):
            if arg.startswith(f"--machine={network.NETNS_PREFIX}"):
                names.add(arg.removeprefix(f"--machine={network.NETNS_PREFIX}"))
    valid = set()
    for name in names:
        with contextlib.suppress(UsageError):
            valid.add(validate_name(name))
    return valid


def destroy_all(*, progress: Progress | None = None) -> list[str]:
    """Destroy every kitchen host, stray veths, then stop the kitchen cloud."""
    destroyed = []
    for name in sorted(_stray_names()):
        if destroy(name, progress=progress):
            destroyed.append(name)
    with phase(progress, "cloud"):
        for link in network.host_links().values():
            run(["ip", "link", "delete", link], check=False)
        cloud.stop_cloud()
        cgroups.remove_parent()
    return destroyed
