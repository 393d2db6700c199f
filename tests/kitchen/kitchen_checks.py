"""Independent checks that a kitchen host left nothing behind (not using kitchen's own
``leftovers``, so a bug there cannot hide a leak)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kitchen.paths import hosts_dir


def _proc_cmdlines() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return found


def traces_of(name: str, number: int, pids: dict[str, int]) -> list[str]:
    machine = f"choiros-{name}"
    traces = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    if any(line.split()[0] == machine for line in netns.splitlines() if line.strip()):
        traces.append(f"netns {machine}")
    if subprocess.run(["ip", "link", "show", f"chk-{number}"], capture_output=True,
                      check=False).returncode == 0:
        traces.append(f"link chk-{number}")
    for role, pid in pids.items():
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z":
            traces.append(f"{role} process {pid}")
    traces += [f"process {c}" for c in _proc_cmdlines() if f"--machine={machine} " in c + " "]
    mountinfo = Path("/proc/self/mountinfo").read_text()
    traces += [f"mount {line.split()[4]}" for line in mountinfo.splitlines()
               if f"/hosts/{name}/" in line.split()[4] + "/" or machine in line.split()[4]]
    if (hosts_dir() / name).exists():
        traces.append("host state dir")
    for hierarchy in ("", "systemd", "unified"):
        cgroup = Path("/sys/fs/cgroup", hierarchy, "choiros-kitchen", name)
        if cgroup.exists():
            traces.append(f"cgroup {cgroup}")
    return traces
