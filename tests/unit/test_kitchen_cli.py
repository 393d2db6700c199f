"""The kitchen commands' surface, without a kitchen: options that mean what operators expect
(`-n` is pytest-xdist's workers, as in `verify`), hints that can be pasted as printed, and
Test Kitchen's `--destroy` for `kitchen test`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from choiros_infra import kitchen_cmd
from choiros_infra.kitchen_cmd import kitchen_app
from kitchen import lifecycle

pytestmark = pytest.mark.unit


def test_n_means_workers_and_never_the_name() -> None:
    commands: dict[str, Any] = getattr(typer.main.get_command(kitchen_app), "commands", {})
    assert "verify" in commands
    owners = {(name, tuple(param.opts)) for name, command in commands.items()
              for param in command.params if "-n" in param.opts}
    assert owners == {("verify", ("-n", "--workers"))}


@pytest.mark.parametrize(("argv0", "shown"), [
    (".venv/bin/choiros-infra", ".venv/bin/choiros-infra"),
    ("/srv/choiros-infra/.venv/bin/choiros-infra", "/srv/choiros-infra/.venv/bin/choiros-infra"),
    ("choiros-infra", "choiros-infra"),
    ("/usr/lib/python3/dist-packages/pytest", ".venv/bin/choiros-infra"),
])
def test_hints_name_the_command_as_it_was_run(monkeypatch: pytest.MonkeyPatch, argv0: str,
                                              shown: str) -> None:
    monkeypatch.setattr("sys.argv", [argv0, "kitchen", "up"])
    assert lifecycle.invoked_as() == shown


class FakeKitchen:
    """`kitchen test`'s steps, recorded: up, verify with its exit code, destroy."""

    def __init__(self, verify_code: int) -> None:
        self.verify_code, self.calls = verify_code, []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(kitchen_cmd, "_prerequisites", lambda: None)
        monkeypatch.setattr(kitchen_cmd, "_up", lambda name, stack_file: self.calls.append(
            ("up", name)))
        monkeypatch.setattr(kitchen_cmd, "_verify", self.verify)
        monkeypatch.setattr(kitchen_cmd.lifecycle, "destroy",
                            lambda name, **_: self.calls.append(("destroy", name)))

    def verify(self, name: str, stack_file: Path, extra: tuple[str, ...], **kw: Any) -> int:
        self.calls.append(("verify", name, kw.get("junit"), kw.get("report")))
        return self.verify_code


@pytest.mark.parametrize(("when", "verify_code", "destroyed"), [
    ("always", 0, True), ("always", 1, True),
    ("passing", 0, True), ("passing", 1, False),
    ("never", 0, False), ("never", 1, False),
])
def test_destroy_follows_test_kitchens_semantics(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, when: str, verify_code: int,
        destroyed: bool) -> None:
    kitchen = FakeKitchen(verify_code)
    kitchen.install(monkeypatch)
    result = CliRunner().invoke(kitchen_app, [
        "test", "--name", "t1", "--destroy", when, "--junit", str(tmp_path / "j.xml"),
        "--report", str(tmp_path / "r.md")])
    assert result.exit_code == verify_code, result.output
    assert kitchen.calls[:2] == [("up", "t1"), ("verify", "t1", tmp_path / "j.xml",
                                                tmp_path / "r.md")]
    assert (("destroy", "t1") in kitchen.calls) is destroyed
    assert ("kept t1 for debugging" in result.output) is not destroyed


def test_the_default_is_always(monkeypatch: pytest.MonkeyPatch) -> None:
    kitchen = FakeKitchen(1)
    kitchen.install(monkeypatch)
    CliRunner().invoke(kitchen_app, ["test", "--name", "t2"])
    assert ("destroy", "t2") in kitchen.calls
