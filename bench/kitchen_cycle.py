#!/usr/bin/env python3
"""Time a full kitchen cycle (up, verify, destroy) cold and warm; print per-phase JSON.

Cold means no base image and an empty apt cache: the image is built and every package the
converge installs is downloaded again. That wipes the kitchen's caches and stops the kitchen
cloud, so run it when no other kitchen host is in use. Warm is the same cycle right after,
with both caches full. Needs root, like the kitchen.

    .venv/bin/python bench/kitchen_cycle.py            # cold, then warm
    .venv/bin/python bench/kitchen_cycle.py --warm-only
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from typing import Any

from choiros_infra.kitchen_stack import stack_up
from choiros_infra.verify import PROJECT_ROOT
from kitchen import cloud, lifecycle
from kitchen.lifecycle import PhaseEvent
from kitchen.paths import APT_CACHE_DIR, images_dir

STACK_FILE = PROJECT_ROOT / "Pulumi.example.yaml"
CLI = PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"


def empty_caches() -> None:
    """Forget the base image and the apt cache, as on a machine that never ran the kitchen."""
    if lifecycle.list_hosts():
        sys.exit("other kitchen hosts exist; a cold cycle would disturb them. Destroy them first.")
    cloud.stop_cloud()
    shutil.rmtree(images_dir(), ignore_errors=True)
    if APT_CACHE_DIR.exists():
        for entry in APT_CACHE_DIR.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def cycle(name: str) -> dict[str, Any]:
    phases: dict[str, float] = {}

    def record(event: PhaseEvent) -> None:
        if event.status != "start":
            phases[event.phase] = round(event.seconds, 2)

    started = time.monotonic()
    try:
        st = stack_up(name, STACK_FILE, progress=record)
        mark = time.monotonic()
        verify = subprocess.run([str(CLI), "kitchen", "verify", "--name", st.name],
                                capture_output=True, text=True, check=False)
        verify_code = verify.returncode
        if verify_code != 0:
            sys.stderr.write(verify.stdout[-3000:] + verify.stderr[-3000:])
        phases["verify"] = round(time.monotonic() - mark, 2)
    finally:
        mark = time.monotonic()
        lifecycle.destroy(name)
        phases["destroy"] = round(time.monotonic() - mark, 2)
    return {"phases": phases, "total_seconds": round(time.monotonic() - started, 2),
            "verify_exit_code": verify_code}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-only", action="store_true", help="skip the cold cycle")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if not args.warm_only:
        empty_caches()
        results["cold"] = cycle("bench-cold")
    results["warm"] = cycle("bench-warm")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
