#!/usr/bin/env python3
"""Time `choiros-infra verify` against a kitchen host, tuned and naive; print JSON.

tuned: what verify does: an ssh_config sharing one connection (ControlMaster, opened by the
reachability check) and the kitchen's default xdist workers (KITCHEN_WORKERS). naive: a new SSH
connection per command (ControlMaster no, ControlPath none) and no workers. Both run the same
checks (suites, runbook expectations, managed files) through the same runner.

Boots its own kitchen host from Pulumi.example.yaml and destroys it at the end, unless --name
names a running one. Needs root, like the kitchen.

    .venv/bin/python bench/verify_speed.py               # boot fv-bench-XXXX, 3 tuned, 1 naive
    .venv/bin/python bench/verify_speed.py --name default --runs 1
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from choiros_infra.host_access import (
    HostAccess,
    check_reachable,
    close_shared_connection,
    write_ssh_config,
)
from choiros_infra.kitchen_stack import stack_up
from choiros_infra.verify import KITCHEN_WORKERS, PROJECT_ROOT, VerifyRun, pytest_argv
from choiros_infra.verify_report import read_junit, total
from infra.config import load_stack_file
from kitchen import lifecycle
from kitchen.state import HostState

STACK_FILE = PROJECT_ROOT / "Pulumi.example.yaml"


def timed_run(st: HostState, *, multiplex: bool, workers: int) -> dict[str, Any]:
    """One verify of the host; seconds from the first SSH connection to pytest's exit."""
    with tempfile.TemporaryDirectory(prefix="chb-") as tmp:
        workdir = Path(tmp)
        config = write_ssh_config(workdir, ssh_key=Path(st.ssh_key), multiplex=multiplex,
                                  known_hosts=Path(st.known_hosts))
        access = HostAccess(url=f"ssh://{st.ssh_user}@{st.address}", ssh_config=config)
        run = VerifyRun.for_stack(access, STACK_FILE, "kitchen", load_stack_file(STACK_FILE),
                                  workers=workers, junit=workdir / "junit.xml")
        started = time.monotonic()
        try:
            check_reachable(access)
            code = subprocess.run(pytest_argv(run), cwd=PROJECT_ROOT, check=False,
                                  stdout=subprocess.DEVNULL).returncode
            seconds = time.monotonic() - started
        finally:
            if multiplex:
                close_shared_connection(access)
        counts = total(read_junit(workdir / "junit.xml"))
    return {"seconds": round(seconds, 2), "checks": counts.total, "failed": counts.failed,
            "checks_per_second": round(counts.total / seconds, 1), "pytest_exit": code}


def measure(st: HostState, runs: int, naive_runs: int, workers: int) -> dict[str, Any]:
    tuned = [timed_run(st, multiplex=True, workers=workers) for _ in range(runs)]
    naive = [timed_run(st, multiplex=False, workers=0) for _ in range(naive_runs)]
    tuned_s = statistics.median(r["seconds"] for r in tuned)
    naive_s = statistics.median(r["seconds"] for r in naive)
    checks = tuned[0]["checks"]
    return {
        "host": f"{st.ssh_user}@{st.address}",
        "checks": checks,
        "tuned": {"config": f"shared SSH connection, {workers} workers",
                  "median_seconds": tuned_s,
                  "checks_per_second": round(checks / tuned_s, 1), "runs": tuned},
        "naive": {"config": "new SSH connection per command, serial",
                  "median_seconds": naive_s,
                  "checks_per_second": round(checks / naive_s, 1), "runs": naive},
        "speedup": round(naive_s / tuned_s, 2),
        "targets": {"checks>=150": checks >= 150, "tuned<=15s": tuned_s <= 15,
                    "speedup>=3": naive_s / tuned_s >= 3},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--name", help="use this running kitchen host instead of booting one")
    parser.add_argument("--runs", type=int, default=3, help="tuned runs (median; default 3)")
    parser.add_argument("--naive-runs", type=int, default=1, help="naive runs (default 1)")
    parser.add_argument("--workers", type=int, default=KITCHEN_WORKERS,
                        help=f"xdist workers of the tuned run (default {KITCHEN_WORKERS})")
    args = parser.parse_args()
    name = args.name or f"fv-bench-{secrets.token_hex(2)}"
    try:
        st = lifecycle.status(name) if args.name else stack_up(name, STACK_FILE)
        result = measure(st, args.runs, args.naive_runs, args.workers)
    finally:
        if not args.name:
            lifecycle.destroy(name)
    print(json.dumps(result, indent=2))
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
