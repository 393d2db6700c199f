#!/usr/bin/env python3
"""Audit a fresh kitchen host with Debian's own auditing tools; print the figures as JSON.

- ``ssh-audit`` (from PyPI, pinned in requirements.txt: Debian 12's 2.5.0 predates OpenSSH's
  Terrapin marker and post-quantum key exchange; run from this machine against the host's
  port 22): how many of its notes are fail and warn, and its version. The goal is 0 and 0.
- ``lynis audit system`` (Debian package, installed on the host for the audit: a throwaway
  host, destroyed afterwards): the hardening index (goal >= 80) and the suggestions left open
  (each is listed with its reason in docs/runbooks/30-operations/04-security.md).

Boots its own host from a throwaway copy of the stack file, so the figures are those of a
freshly converged host. Needs root and the kitchen, like ``kitchen up``, and the project's
.venv (``make setup`` installs ssh-audit there).

    .venv/bin/python bench/hardening_audit.py [--stack-file Pulumi.example.yaml] [--keep]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from choiros_infra.kitchen_stack import remove_stack_objects, stack_up, throwaway_stack
from choiros_infra.verify import PROJECT_ROOT
from infra.config import load_stack_file
from kitchen import lifecycle

LYNIS_REPORT = "/var/log/lynis-report.dat"
LYNIS_LOG = "/var/log/lynis.log"


def points_missed(log: str) -> dict[str, int]:
    """Hardening points each lynis test did not award, from its log, largest first."""
    missed: dict[str, int] = {}
    test = "?"
    for line in log.splitlines():
        started = re.search(r"Performing test ID (\S+)", line)
        if started:
            test = started.group(1)
        partial = re.search(r"partial number of hardening points \((\d+) of (\d+)\)", line)
        if partial:
            missed[test] = missed.get(test, 0) + int(partial.group(2)) - int(partial.group(1))
    return dict(sorted(missed.items(), key=lambda item: -item[1]))


# The pinned ssh-audit, in the virtualenv this script runs in (not Debian's older one).
SSH_AUDIT = Path(sys.executable).with_name("ssh-audit")


def ssh_audit(address: str) -> dict[str, Any]:
    """ssh-audit's verdict on the host's sshd: its fail and warn notes, counted and listed.
    The connection-rate test is left out: it opens dozens of connections at once, which is
    fail2ban's business, and its result is a note, never a fail or warn."""
    if not SSH_AUDIT.is_file():
        sys.exit(f"Error: {SSH_AUDIT} is not installed\nTry: make setup")
    version = subprocess.run([str(SSH_AUDIT), "--help"], capture_output=True, text=True,
                             check=False).stdout
    done = subprocess.run([str(SSH_AUDIT), "--batch", "--no-colors", "--skip-rate-test",
                           address], capture_output=True, text=True, timeout=120, check=False)
    notes = [line.strip() for line in done.stdout.splitlines()
             if re.search(r"-- \[(fail|warn)\]", line)]
    found = re.search(r"ssh-audit v([0-9.]+)", version)
    return {"version": found.group(1) if found else "?",
            "fail": sum("[fail]" in n for n in notes), "warn": sum("[warn]" in n for n in notes),
            "notes": notes, "exit_code": done.returncode}


def lynis(name: str) -> dict[str, Any]:
    """Install lynis on the host, run the full system audit, read its report."""
    install = lifecycle.exec_in(name, ["apt-get", "install", "-y", "-q", "lynis"], timeout=600)
    if install.returncode != 0:
        sys.exit(f"Error: cannot install lynis on {name}: {install.stderr[-500:]}")
    lifecycle.exec_in(name, ["lynis", "audit", "system", "--quick", "--no-colors"],
                      timeout=900)
    report = lifecycle.exec_in(name, ["cat", LYNIS_REPORT], check=True).stdout
    log = lifecycle.exec_in(name, ["cat", LYNIS_LOG], check=True).stdout
    index = re.search(r"^hardening_index=(\d+)$", report, re.MULTILINE)
    suggestions = re.findall(r"^suggestion\[\]=([^|]+)\|([^|]*)\|", report, re.MULTILINE)
    warnings = re.findall(r"^warning\[\]=([^|]+)\|([^|]*)\|", report, re.MULTILINE)
    return {"hardening_index": int(index.group(1)) if index else None,
            "suggestions": [f"{test}: {text}" for test, text in suggestions],
            "warnings": [f"{test}: {text}" for test, text in warnings],
            "points_missed": points_missed(log)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack-file", type=Path, default=PROJECT_ROOT / "Pulumi.example.yaml")
    parser.add_argument("--keep", action="store_true", help="leave the host running")
    args = parser.parse_args()
    name = f"audit-{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory(prefix="choiros-audit-") as tmp:
        path = throwaway_stack(args.stack_file, Path(tmp), prefix="audit")
        try:
            st = stack_up(name, path)
            print(f"auditing {name} at {st.address}", file=sys.stderr, flush=True)
            result = {"host": name, "ssh_audit": ssh_audit(st.address), "lynis": lynis(name)}
        finally:
            if not args.keep:
                lifecycle.destroy(name)
                remove_stack_objects(load_stack_file(path))
    print(json.dumps(result, indent=2))
    audit, index = result["ssh_audit"], result["lynis"]["hardening_index"]
    print(f"ssh-audit: {audit['fail']} fail, {audit['warn']} warn; lynis hardening index "
          f"{index}, {len(result['lynis']['suggestions'])} suggestions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
