#!/usr/bin/env python3
"""Restore drills at several database sizes: RPO, RTO and restore time against the kitchen.

Runs ``choiros-infra kitchen drill`` (choiros_infra.kitchen_stack.run_drill) once per size:
a throwaway host from a copy of the stack, grown by SIZE MiB through the app, written to
continuously, killed hard, replaced; then prints one JSON object per size and, with --out,
writes them all. Also records the kitchen moto server's resident memory after each drill:
moto keeps S3 in memory, which is what bounds the sizes the kitchen can drill.

    sudo .venv/bin/python bench/restore_drill.py --sizes 0,100,500 --out bench/restore_drill.json

Needs root and the kitchen's prerequisites (like `choiros-infra kitchen up`).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from choiros_infra.kitchen_drill import run_drill  # noqa: E402
from kitchen import cloud  # noqa: E402


def moto_rss_mb() -> float | None:
    pid = cloud._load().get("moto_pid")  # the kitchen cloud's own record of its daemon
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines()
               if line.startswith("VmRSS:")), 0)
    return round(kb / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,100", help="MiB to grow the database by, "
                        "comma-separated (default 0,100)")
    parser.add_argument("--stack-file", type=Path, default=ROOT / "Pulumi.example.yaml")
    parser.add_argument("--write-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="write the results here as a JSON list")
    args = parser.parse_args()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        started, peak, done = time.monotonic(), [moto_rss_mb() or 0.0], threading.Event()

        def sample(peak: list[float] = peak, done: threading.Event = done) -> None:
            while not done.wait(1.0):
                peak[0] = max(peak[0], moto_rss_mb() or 0.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = run_drill(args.stack_file, db_mb=size, write_seconds=args.write_seconds)
        finally:
            done.set()
            sampler.join()
        row = {"db_mb_requested": size, **result.as_dict(),
               "drill_seconds": round(time.monotonic() - started, 1),
               "moto_rss_mb_peak": peak[0], "moto_rss_mb_after": moto_rss_mb()}
        print(json.dumps(row, sort_keys=True), flush=True)
        results.append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
