#!/usr/bin/env python3
"""Time `choiros-infra verify` against a kitchen host: checks, seconds and SSH round trips,
with every host fact read ahead in one round trip (what verify does) against the runner
without read-ahead (each check asks the host itself, over the shared SSH connection, with
the xdist workers that runner used). Prints JSON.

Both run the same checks (suites, runbook expectations, managed files) through the same
runner and the same shared SSH connection; the round trips are counted in the pytest
processes (choiros_infra/verify_batch.py, ``--read-ahead-stats``) plus the reachability check
that opens the connection. Boots its own kitchen host from Pulumi.example.yaml and destroys
it at the end, unless --name names a running one. Needs root, like the kitchen.

    .venv/bin/python bench/verify_speed.py                 # boot fv-bench-XXXX, 3 runs each
    .venv/bin/python bench/verify_speed.py --name i16 --runs 1
"""

from __future__ import annotations

import argparse
import dataclasses
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
from choiros_infra.verify import (
    CONNECT_TIMEOUT,
    KITCHEN_WORKERS,
    PROJECT_ROOT,
    VerifyRun,
    run_checked,
)
from choiros_infra.verify_report import read_junit, total
from infra.config import load_stack_file
from kitchen import lifecycle
from kitchen.state import HostState

STACK_FILE = PROJECT_ROOT / "Pulumi.example.yaml"
# The runner before read-ahead: every check asked the host, with 2 xdist workers, and a
# connect from outside waited 3 s before a port counted as closed.
BASELINE_WORKERS = 2
BASELINE_CONNECT_TIMEOUT = CONNECT_TIMEOUT
TARGET_SECONDS = 3.0


def timed_run(st: HostState, stack_file: Path, *, read_ahead: bool,
              workers: int) -> dict[str, Any]:
    """One verify of the host; seconds from the first SSH connection to pytest's exit."""
    with tempfile.TemporaryDirectory(prefix="chb-") as tmp:
        workdir = Path(tmp)
        config = write_ssh_config(workdir, ssh_key=Path(st.ssh_key), multiplex=True,
                                  known_hosts=Path(st.known_hosts))
        access = HostAccess(url=f"ssh://{st.ssh_user}@{st.address}", ssh_config=config)
        stats = workdir / "read-ahead.json"
        run = VerifyRun.for_stack(
            access, stack_file, "kitchen", load_stack_file(stack_file), workers=workers,
            junit=workdir / "junit.xml",
            extra=(f"--read-ahead-stats={stats}", f"--read-ahead={'on' if read_ahead else 'off'}"))
        if not read_ahead:
            run = dataclasses.replace(run, connect_timeout=BASELINE_CONNECT_TIMEOUT)
        started = time.monotonic()
        try:  # as verify runs it: the reachability check while pytest starts
            code = run_checked(run, lambda: check_reachable(access), stdout=subprocess.DEVNULL)
            seconds = time.monotonic() - started
        finally:
            close_shared_connection(access)
        counts = total(read_junit(workdir / "junit.xml"))
        per_process = [json.loads(p.read_text()) for p in sorted(workdir.glob("read-ahead.json*"))]
    return {"seconds": round(seconds, 2), "checks": counts.total, "failed": counts.failed,
            "ssh_round_trips": 1 + sum(p["round_trips"] for p in per_process),
            "read_ahead_commands": sum(p["planned"] for p in per_process),
            "asked_one_by_one": sorted({c for p in per_process for c in p["asked_one_by_one"]}),
            "batch_seconds": max((p["batch_seconds"] for p in per_process), default=0.0),
            "slowest_commands": [c for p in per_process for c in p["slowest"]][:5],
            "pytest_exit": code}


def summary(runs: list[dict[str, Any]], config: str) -> dict[str, Any]:
    seconds = [r["seconds"] for r in runs]
    return {"config": config, "checks": runs[0]["checks"],
            "median_seconds": statistics.median(seconds),
            "spread_seconds": [min(seconds), max(seconds)],
            "ssh_round_trips": runs[0]["ssh_round_trips"], "runs": runs}


def measure(st: HostState, stack_file: Path, runs: int, baseline_runs: int) -> dict[str, Any]:
    batched = [timed_run(st, stack_file, read_ahead=True, workers=KITCHEN_WORKERS)
               for _ in range(runs)]
    baseline = [timed_run(st, stack_file, read_ahead=False, workers=BASELINE_WORKERS)
                for _ in range(baseline_runs)]
    now = summary(batched, f"host facts read ahead, {KITCHEN_WORKERS} workers")
    result: dict[str, Any] = {
        "host": f"{st.ssh_user}@{st.address}", "read_ahead": now,
        "targets": {f"read_ahead<={TARGET_SECONDS:g}s": now["median_seconds"] <= TARGET_SECONDS}}
    if baseline:  # --baseline-runs 0: the read-ahead's figures only
        before = summary(baseline, f"no read-ahead (each check asks), {BASELINE_WORKERS} "
                                   f"workers, {BASELINE_CONNECT_TIMEOUT:g} s connect timeout")
        result["baseline"] = before
        result["speedup"] = round(before["median_seconds"] / now["median_seconds"], 2)
        result["targets"]["same_checks"] = now["checks"] == before["checks"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--name", help="use this running kitchen host instead of booting one")
    parser.add_argument("--stack-file", type=Path, default=STACK_FILE,
                        help="the stack file the host was built from (default the example)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median; default 3)")
    parser.add_argument("--baseline-runs", type=int, default=None,
                        help="runs without read-ahead (default: --runs; 0: none)")
    args = parser.parse_args()
    name = args.name or f"fv-bench-{secrets.token_hex(2)}"
    try:
        st = lifecycle.status(name) if args.name else stack_up(name, args.stack_file)
        result = measure(st, args.stack_file, args.runs,
                         args.runs if args.baseline_runs is None else args.baseline_runs)
    finally:
        if not args.name:
            lifecycle.destroy(name)
    print(json.dumps(result, indent=2))
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
