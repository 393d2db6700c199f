"""The restore drill's pieces that need no host: its throwaway stack, its result, its CLI."""

from __future__ import annotations

from pathlib import Path
from typing import get_type_hints

import pytest
from typer.testing import CliRunner

from choiros_infra import kitchen_cmd
from choiros_infra.cli import app
from choiros_infra.kitchen_drill import DrillResult
from choiros_infra.kitchen_stack import throwaway_stack
from infra.config import load_stack_file

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_a_drill_runs_on_a_copy_of_the_stack_with_its_own_name(tmp_path: Path) -> None:
    example = load_stack_file(ROOT / "Pulumi.example.yaml")
    first = load_stack_file(throwaway_stack(ROOT / "Pulumi.example.yaml", tmp_path))
    second = load_stack_file(throwaway_stack(ROOT / "Pulumi.example.yaml", tmp_path))
    assert first.stack.startswith("drill-") and first.stack != second.stack
    assert first.backup_prefix != example.backup_prefix, "never the stack's own backups"
    assert (first.region, first.secrets) == (example.region, example.secrets)


def test_the_drill_json_has_exactly_the_keys_its_help_documents() -> None:
    """``kitchen drill --json``'s help lists the keys an operator may script against; the
    result prints exactly those."""
    option = get_type_hints(kitchen_cmd.drill, include_extras=True)["as_json"].__metadata__[0]
    documented = option.help.removeprefix("Print JSON: ").removesuffix(".").split(", ")
    result = DrillResult(rpo_seconds=0.5, rto_seconds=30.0, events_acknowledged=10,
                         events_lost=1, db_bytes=4096, restore_seconds=0.2, fill_seconds=1.0,
                         stack="drill-x", host="drill-y")
    assert sorted(documented) == list(result.as_dict())


@pytest.mark.parametrize(("command", "words"), [
    ("drill", ["--db-mb", "--json", "rpo_seconds", "rto_seconds"]),
    ("replace", ["--hard", "--stack-file"]),
])
def test_kitchen_replace_and_drill_explain_themselves(command: str, words: list[str]) -> None:
    result = CliRunner().invoke(app, ["kitchen", command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for word in words:
        assert word in result.output, word


def test_a_second_live_host_may_not_replicate_into_the_same_prefix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from kitchen import lifecycle
    from kitchen import state as host_state
    from kitchen.errors import UsageError

    monkeypatch.setenv("CHOIROS_KITCHEN_HOME", str(tmp_path))
    replica = "s3://choiros-x-backups-123456789012/hosts/x/"
    live = host_state.HostState(name="first", number=7, state="ready", address="10.213.7.2",
                                ssh_user="admin", ssh_key="", ssh_port=22, replica=replica,
                                pids={"nspawn": os.getpid()})  # a live process stands in
    host_state.save(live)
    with pytest.raises(UsageError) as refused:
        lifecycle._reserve("second", replica)
    assert "'first' already replicates its database into" in refused.value.message
    assert "destroy --name first" in (refused.value.fix or "")
    host_state.save(host_state.HostState(**{**live.__dict__, "pids": {}}))  # it is gone
    monkeypatch.setattr(lifecycle.network, "numbers_in_use", lambda: set())
    monkeypatch.setattr(lifecycle, "_traces", lambda name: [])
    assert lifecycle._reserve("second", replica).replica == replica


def test_a_throwaway_stack_with_own_parameters_names_its_secrets_after_itself(
        tmp_path: Path) -> None:
    """The rehearsal's stack rotates a secret: its parameters are its own, not the example's."""
    example = load_stack_file(ROOT / "Pulumi.example.yaml")
    own = load_stack_file(throwaway_stack(ROOT / "Pulumi.example.yaml", tmp_path, prefix="kt",
                                          own_parameters=True))
    assert example.secrets == ("/choiros/example/OPENAI_API_KEY",)
    assert own.secrets == (f"/choiros/{own.stack}/OPENAI_API_KEY",)
