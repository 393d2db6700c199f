"""The test directories collect together in any order, and destroy --all comes last.

tests/unit and tests/kitchen are both on ``sys.path`` (pytest's rootdir-relative imports), so
a module name in both would make one shadow the other; the kitchen's ``destroy --all`` test
stops the kitchen cloud and must run after every other test, which tests/kitchen/conftest.py
arranges for the ``last`` marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_name_is_in_both_test_directories() -> None:
    unit = {p.name for p in (ROOT / "tests/unit").glob("*.py")}
    kitchen = {p.name for p in (ROOT / "tests/kitchen").glob("*.py")}
    assert unit & kitchen == {"conftest.py"}


@pytest.mark.parametrize("order", [("tests/kitchen", "tests/unit"),
                                   ("tests/unit", "tests/kitchen")])
def test_both_orders_collect_and_destroy_all_is_last(order: tuple[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *order], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    items = [line for line in done.stdout.splitlines() if "::" in line]
    assert items[-1] == ("tests/kitchen/test_kitchen_destroy_all.py::"
                         "test_destroy_all_removes_hosts_and_stops_the_cloud")
    assert sum("test_kitchen_destroy_all.py" in item for item in items) == 1
