"""The runbooks state the alarm thresholds the stack config defaults to.

The monitoring and capacity-planning runbooks each carry a table `| config key | default |
alarm |`; every `alarm_*` key of StackConfig must be in both with its default, and nothing
else may be claimed there."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from infra.config import SETTINGS, StackConfig

pytestmark = pytest.mark.unit

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "30-operations"
ROW = re.compile(r"^\| `(alarm_[a-z_]+)` \| (\d+) \|", re.MULTILINE)


def _defaults() -> dict[str, int]:
    return {f.name: int(f.default) for f in fields(StackConfig)
            if f.name.startswith("alarm_")}


@pytest.mark.parametrize("runbook", ["01-monitoring-and-alerting.md", "05-capacity-planning.md"])
def test_the_runbook_states_every_alarm_threshold_default(runbook: str) -> None:
    text = (RUNBOOKS / runbook).read_text()
    stated = {key: int(value) for key, value in ROW.findall(text)}
    defaults = _defaults()
    assert set(defaults) <= set(SETTINGS), "every alarm_* field is a stack config key"
    assert stated == defaults, f"{runbook} states {stated}, the config defaults are {defaults}"


def test_the_monitoring_runbook_sentences_use_the_defaults() -> None:
    text = (RUNBOOKS / "01-monitoring-and-alerting.md").read_text()
    d = _defaults()
    assert f"< 1 in {d['alarm_unhealthy_minutes']} of the last " \
           f"{d['alarm_unhealthy_minutes'] + 2} 1-minute periods" in text
    assert f"> {d['alarm_disk_percent']} % for 5 consecutive" in text
    assert f"> {d['alarm_memory_percent']} % for 5 consecutive" in text
