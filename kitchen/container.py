"""The kitchen host's container: boot systemd-nspawn detached, find the guest's PID 1, run
commands inside it, stop and reboot it.

nspawn runs in its own session (it outlives the CLI that started it), in the host's own
cgroup (see :mod:`kitchen.cgroups`), in the netns the kitchen prepared, and writes the guest
console to ``console.log``. Commands run in the guest through ``nsenter`` on the guest's
PID 1 (the child of nspawn that is PID 1 in its PID namespace), with a clean environment so
the host's variables (proxies, CA bundles) never leak in.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kitchen import cgroups
from kitchen.errors import KitchenError
from kitchen.mounts import remove_tree
from kitchen.processes import (
    children,
    cmdline,
    find_processes,
    pid_alive,
    poll_until,
    run,
    terminate,
)

NSPAWN = "systemd-nspawn"
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_ENV = {"PATH": GUEST_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
INIT_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0

# Popen objects of containers this process started, kept so Python does not warn about
# (or try to reap) children that are meant to outlive it.
_started: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class Guest:
    machine: str
    nspawn_pid: int
    init_pid: int


def nspawn_argv(machine: str, rootfs: Path, netns_path: Path) -> list[str]:
    return [
        NSPAWN,
        "--boot",
        "--register=no",  # no systemd-machined on the kitchen machine
        "--keep-unit",  # no systemd to create a scope; stay in the cgroup we were put in
        f"--directory={rootfs}",
        f"--network-namespace-path={netns_path}",
        "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
        f"--machine={machine}",
        "--private-users=no",
        "--console=read-only",  # console output to our stdout (the log); no input
        "--resolv-conf=off",  # the image's resolv.conf stays: guests have no DNS
        "--timezone=off",  # the image's timezone (UTC), like a cloud image
        "--link-journal=no",
    ]


def is_nspawn_for(machine: str, argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == NSPAWN and f"--machine={machine}" in argv


def nspawn_pids(machine: str) -> list[int]:
    """Live nspawn processes for ``machine``, whether or not a state file recorded them."""
    return find_processes(lambda argv: is_nspawn_for(machine, argv))


def boot(machine: str, rootfs: Path, netns_path: Path, console_log: Path,
         cgroup_name: str) -> int:
    """Start nspawn detached in the host's cgroup; return its PID."""
    procs = [str(path / "cgroup.procs") for path in cgroups.create(cgroup_name)]
    console_log.parent.mkdir(parents=True, exist_ok=True)
    with open(console_log, "ab") as out:
        try:
            proc = subprocess.Popen(
                nspawn_argv(machine, rootfs, netns_path),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd="/",
                preexec_fn=lambda: cgroups.join(procs),  # join() uses only os calls
            )
        except FileNotFoundError as exc:
            raise KitchenError("systemd-nspawn is not installed",
                               "apt-get install systemd-container, or `make system-deps`") from exc
    _started.append(proc)
    return proc.pid


def _guest_pid1(nspawn_pid: int) -> int | None:
    """The child of nspawn that is PID 1 of its own PID namespace, once it runs systemd."""
    for child in children(nspawn_pid):
        try:
            status = Path(f"/proc/{child}/status").read_text()
            comm = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines()
                      if line.startswith("NSpid:")), [])
        if len(nspid) >= 2 and nspid[-1] == "1" and comm == "systemd":
            return child
    return None


def console_tail(console_log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(console_log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for_init(machine: str, nspawn_pid: int, console_log: Path,
                  timeout: float = INIT_TIMEOUT) -> Guest:
    """Wait until systemd runs as the guest's PID 1."""
    found: list[int] = []

    def ready() -> bool:
        if not pid_alive(nspawn_pid):
            return True
        pid = _guest_pid1(nspawn_pid)
        if pid is not None:
            found.append(pid)
        return bool(found)

    poll_until(ready, timeout)
    if not found:
        why = "exited" if not pid_alive(nspawn_pid) else f"did not start systemd in {timeout:.0f}s"
        raise KitchenError(f"container {machine} {why}", f"look at {console_log}",
                           console_tail(console_log) or None)
    return Guest(machine, nspawn_pid, found[0])


def guest_exec(
    init_pid: int,
    argv: Sequence[str],
    *,
    user: str | None = None,
    timeout: float = 120,
    input: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the guest (all its namespaces, its root, a clean environment).

    ``user`` runs it as that guest user (with its groups and a login-like environment).
    """
    command = ["nsenter", f"--target={init_pid}", "--all"]
    if user is not None:
        command += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                    "--reset-env"]
    return run([*command, *argv], timeout=timeout, input=input, check=check, env=GUEST_ENV,
               what=f"`{' '.join(argv)}` in the guest")


def system_state(init_pid: int, timeout: float) -> str:
    """``systemctl is-system-running --wait``: running, degraded, ... once boot has finished.

    Retried until systemd answers (right after PID 1 starts, its socket is not there yet).
    """
    answer: list[str] = []

    def asked() -> bool:
        result = guest_exec(init_pid, ["systemctl", "is-system-running", "--wait"],
                            timeout=timeout)
        word = result.stdout.strip()
        if word in ("running", "degraded", "maintenance", "stopping"):
            answer.append(word)
            return True
        return False

    poll_until(asked, timeout, interval=0.5)
    return answer[0] if answer else "unknown"


def failed_units(init_pid: int) -> list[str]:
    result = guest_exec(init_pid, ["systemctl", "--failed", "--no-legend", "--plain"],
                        timeout=30)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def request_reboot(init_pid: int) -> None:
    """Ask the guest's systemd for an orderly reboot (nspawn then exits with status 133)."""
    guest_exec(init_pid, ["systemctl", "reboot"], timeout=30)


def wait_exit(pid: int, timeout: float) -> bool:
    return poll_until(lambda: not pid_alive(pid), timeout)


def stop(machine: str, nspawn_pid: int | None, timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Shut the container down: SIGTERM makes nspawn halt the guest in order; SIGKILL after
    ``timeout``. Also ends nspawn processes for ``machine`` that no state recorded."""
    pids = set(nspawn_pids(machine))
    if nspawn_pid and pid_alive(nspawn_pid) and is_nspawn_for(machine, cmdline(nspawn_pid)):
        pids.add(nspawn_pid)
    for pid in pids:
        terminate(pid, timeout)


def cleanup_runtime(machine: str) -> None:
    """nspawn cannot remove its propagation directory when /run is not a tmpfs."""
    remove_tree(NSPAWN_RUNTIME / "propagate" / machine)
