"""Process helpers: run tools with argument lists, poll with deadlines, find and end processes.

The kitchen's daemons (nspawn, apt-cacher-ng, moto) outlive the CLI invocation that started
them, so a later invocation only has a PID from a state file. Before signalling such a PID we
check its command line still is what we started (PIDs get reused), and we treat a zombie as
dead (a process we started ourselves stays a zombie until we reap it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kitchen.errors import KitchenError

POLL_INTERVAL = 0.1


def run(
    argv: Sequence[str],
    *,
    timeout: float = 120,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never a shell string), capture text output, raise KitchenError on failure."""
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise KitchenError(f"{argv[0]} is not installed", "make system-deps") from exc
    except subprocess.TimeoutExpired as exc:
        raise KitchenError(
            f"{what or ' '.join(argv)} did not finish within {timeout:.0f}s",
            "look at the kitchen logs; the machine may be overloaded",
        ) from exc
    if check and result.returncode != 0:
        raise KitchenError(
            f"{what or ' '.join(argv)} failed with exit code {result.returncode}",
            None,
            (result.stderr or result.stdout).strip()[-2000:] or None,
        )
    return result


def poll_until(predicate: Callable[[], bool], timeout: float,
               interval: float = POLL_INTERVAL) -> bool:
    """Call ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _reap(pid: int) -> None:
    """Collect our own exited child so it stops being a zombie; a no-op for other processes."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; the state follows the last ')'.
    return stat.rpartition(")")[2].split()[0]


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    _reap(pid)
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def children(pid: int) -> list[int]:
    return [child for child in all_pids() if parent_pid(child) == pid]


def find_processes(match: Callable[[list[str]], bool]) -> list[int]:
    """PIDs of live processes whose command line satisfies ``match``."""
    found = []
    for pid in all_pids():
        argv = cmdline(pid)
        if argv and match(argv) and pid_alive(pid):
            found.append(pid)
    return found


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def terminate(pid: int, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL; True if it ended without SIGKILL."""
    if not pid_alive(pid):
        return True
    signal_pid(pid, sig)
    if poll_until(lambda: not pid_alive(pid), timeout):
        return True
    signal_pid(pid, signal.SIGKILL)
    poll_until(lambda: not pid_alive(pid), 10)
    return False
