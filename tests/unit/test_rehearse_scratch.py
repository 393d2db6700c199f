"""The rehearsal's second host: booted only for a step that needs it running and finds it down,
its name a valid kitchen name, and a rehearsal whose steps never name it leaves it alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_rehearse import local_host, write

from choiros_infra.rehearse import read_runbook
from choiros_infra.rehearse_run import Rehearsal
from choiros_infra.rehearse_scratch import ScratchHost, scratch_name
from kitchen.paths import validate_name

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_expect_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runbooks are outside docs/runbooks, whose expect parser would refuse them; they have
    # none.
    monkeypatch.setattr("choiros_infra.rehearse_run.has_expectations", lambda _path: False)

RUNBOOK = """## Local development

```sh rehearse host
echo up <scratch> from <scratch_stack_file>
```

## Promote

```sh rehearse host
echo promote to <production>
```

## Logs

```sh rehearse host
echo nothing of the second host
```
"""


class FakeKitchen:
    """Which hosts run, and the boots asked for."""

    def __init__(self, up: set[str]) -> None:
        self.up = up
        self.boots: list[tuple[str, Path]] = []

    def running(self, name: str) -> bool:
        return name in self.up

    def boot(self, name: str, stack_file: Path) -> None:
        self.boots.append((name, stack_file))
        self.up.add(name)


def rehearse(tmp_path: Path, text: str, kitchen: FakeKitchen) -> tuple[ScratchHost, list[str]]:
    said: list[str] = []
    scratch = ScratchHost("reh-own", tmp_path / "Pulumi.own-abc.yaml", kitchen.running,
                          kitchen.boot, say=said.append)
    host = local_host(tmp_path)
    host = replace(host, values={**host.values, **scratch.values})
    runbook = read_runbook(write(tmp_path, text), "30-operations/x.md")
    assert not runbook.errors
    rehearsal = Rehearsal(host, say=said.append, check=lambda _h, _p: 0,
                          before=scratch.before)
    assert rehearsal.run([runbook]), rehearsal.results
    return scratch, said


def test_a_step_naming_production_boots_the_host_once_when_it_is_down(tmp_path: Path) -> None:
    kitchen = FakeKitchen(up=set())
    scratch, said = rehearse(tmp_path, RUNBOOK.replace("echo up", "echo would boot"), kitchen)
    assert kitchen.boots == [("reh-own", tmp_path / "Pulumi.own-abc.yaml")]
    assert scratch.used
    # The boot comes as the promote step starts (after its progress line, before it runs),
    # not before the step that only names <scratch>.
    boot = next(i for i, text in enumerate(said) if "booting kitchen host reh-own" in text)
    promote = next(i for i, text in enumerate(said) if "echo promote to" in text)
    local = next(i for i, text in enumerate(said) if "echo would boot" in text)
    assert local < promote < boot and said[boot + 1].startswith("  exit 0 after")


def test_a_running_host_is_not_booted_again(tmp_path: Path) -> None:
    kitchen = FakeKitchen(up={"reh-own"})
    scratch, _ = rehearse(tmp_path, RUNBOOK, kitchen)
    assert kitchen.boots == [] and scratch.used


def test_steps_that_never_name_it_leave_it_unused(tmp_path: Path) -> None:
    kitchen = FakeKitchen(up=set())
    text = RUNBOOK.split("## Logs")[1]
    scratch, _ = rehearse(tmp_path, "## Logs" + text, kitchen)
    assert kitchen.boots == [] and not scratch.used


def test_the_placeholders_are_bound_in_the_steps(tmp_path: Path) -> None:
    kitchen = FakeKitchen(up={"reh-own"})
    stack_file = tmp_path / "Pulumi.own-abc.yaml"
    rehearse(tmp_path, "## S\n\n```sh rehearse host\ntest <scratch> = reh-own\n"
             f"test <production> = reh-own\ntest <scratch_stack_file> = {stack_file}\n```\n",
             kitchen)


@pytest.mark.parametrize("host", ["reh", "a" * 32, "rehearse-1a2b3c-with-a-long-name"])
def test_the_scratch_name_is_a_kitchen_name_of_its_own(host: str) -> None:
    name = scratch_name(host)
    assert validate_name(name) == name
    assert name != host and name.endswith("-own")
