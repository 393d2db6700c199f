#!/usr/bin/env python3
"""What clients see while the backend switches: a deploy, a rollback and a plain restart on a
kitchen host, each under a steady load through Caddy. Prints one JSON object per switch:
requests sent, failed, p50/p99/max latency of the requests started during the switch, and the
switch's duration. Needs root, like the kitchen; boots and destroys its own host and stack.

    .venv/bin/python bench/deploy_downtime.py [--rate 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from choiros_infra.kitchen_site import site_url
from choiros_infra.kitchen_stack import (
    built_from,
    publish_stand_in,
    remove_stack_objects,
    stack_up,
    throwaway_stack,
)
from choiros_infra.release_store import ReleaseStore
from choiros_infra.targets import KITCHEN_ACCOUNT, kitchen
from choiros_infra.verify import PROJECT_ROOT
from infra.config import load_stack_file
from infra.user_data import bucket_names
from kitchen import cloud, lifecycle
from kitchen.load import Load, percentile

CLI = PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"


def measure(name: str, rate: float, what: str, switch: Callable[[], None]) -> dict[str, object]:
    st = lifecycle.status(name)
    cfg = load_stack_file(built_from(st))
    with Load(tuple(site_url(cfg, kitchen(), st.address, path)
                    for path in ("/health", "/api/events/count")), rate=rate) as load:
        time.sleep(2.0)
        began = time.monotonic()
        switch()
        ended = time.monotonic()
        time.sleep(2.0)
    during = [o.seconds * 1000 for o in load.during(began, ended)]
    return {"switch": what, "requests": len(load.outcomes), "failed": len(load.failed()),
            "p50_ms": round(percentile(during, 50), 1), "p99_ms": round(percentile(during, 99), 1),
            "max_ms": round(max(during, default=0.0), 1),
            "switch_seconds": round(ended - began, 2)}


def cli(*argv: str) -> None:
    subprocess.run([str(CLI), *argv], check=True, capture_output=True, cwd=PROJECT_ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    args = parser.parse_args()
    cloud.ensure_cloud()
    with tempfile.TemporaryDirectory() as tmp:
        stack_file = throwaway_stack(PROJECT_ROOT / "Pulumi.example.yaml", Path(tmp), "bench")
        cfg = load_stack_file(stack_file)
        name = f"bench-{cfg.stack.rsplit('-', 1)[-1]}"
        try:
            stack_up(name, stack_file)
            store = ReleaseStore(cloud.aws_client("s3", cfg.region),
                                 bucket_names(cfg, KITCHEN_ACCOUNT).artifacts)
            publish_stand_in(store, "2.0.0", Path(tmp))
            for what, switch in (
                    ("deploy", lambda: cli("kitchen", "deploy", "2.0.0", "--name", name)),
                    ("rollback", lambda: cli("kitchen", "rollback", "--name", name)),
                    ("restart", lambda: lifecycle.exec_in(
                        name, ["systemctl", "restart", "choiros-backend"]))):
                print(json.dumps(measure(name, args.rate, what, switch)), flush=True)
        finally:
            lifecycle.destroy(name)
            remove_stack_objects(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
