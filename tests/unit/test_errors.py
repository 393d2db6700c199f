"""choiros_infra/errors.py: the one error boundary of the commands. Every refusal reads
``Error:``/``Try:`` with its exit code, and what it says is text, never Rich markup."""

from __future__ import annotations

import pytest
import typer

from choiros_infra.errors import fail, refusals
from choiros_infra.host_access import UsageProblem
from choiros_infra.release_store import ReleaseError
from infra.config import ConfigError
from kitchen.errors import KitchenError, UsageError
from provisioning.host_tools.choiros_tool import ToolError

pytestmark = pytest.mark.unit

BRACKETS = "[secure] and [bold]x[/bold] and admin_cidrs[0]"


def refused(error: Exception, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as exited, refusals():
        raise error
    captured = capsys.readouterr()
    assert captured.out == ""
    return exited.value.exit_code, captured.err


@pytest.mark.parametrize(("error", "code", "lines"), [
    (UsageProblem(f"bad {BRACKETS}", f"fix {BRACKETS}"), 2,
     [f"Error: bad {BRACKETS}", f"Try: fix {BRACKETS}"]),
    (ReleaseError(f"taken {BRACKETS}", "publish [1.4.3]", 3), 3,
     [f"Error: taken {BRACKETS}", "Try: publish [1.4.3]"]),
    (ToolError(f"refused {BRACKETS}", "rebuild [it]", 4), 4,
     [f"Error: refused {BRACKETS}", "Try: rebuild [it]"]),
    (KitchenError(f"failed {BRACKETS}", "look [here]", detail="log [tail]\n[more]"), 1,
     [f"Error: failed {BRACKETS}", "log [tail]", "[more]", "Try: look [here]"]),
    (UsageError("taken [name]", None), 2, ["Error: taken [name]"]),
    (ConfigError("tags", {"[k]": "v"}, "is [odd]", "fix [it]"), 2,
     ['Error: choiros:tags = {"[k]": "v"}: is [odd]', "Try: fix [it]"]),
], ids=["usage", "release", "tool", "kitchen", "kitchen-usage", "config"])
def test_every_refusal_prints_error_and_try_verbatim_with_its_code(
        error: Exception, code: int, lines: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    got_code, err = refused(error, capsys)
    assert got_code == code
    assert err.splitlines() == lines


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(ZeroDivisionError), refusals():
        raise ZeroDivisionError


def test_fail_prints_markup_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited:
        fail("--path 'choiros:secrets[0]' [red]no[/red]", "[bold]try[/bold]", 3)
    assert exited.value.exit_code == 3
    assert capsys.readouterr().err.splitlines() == [
        "Error: --path 'choiros:secrets[0]' [red]no[/red]", "Try: [bold]try[/bold]"]
