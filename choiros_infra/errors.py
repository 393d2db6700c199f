"""How every subcommand reports a refusal: ``Error: ...`` then ``Try: ...`` on stderr, and its
exit code (2, the command could not run, unless the error says otherwise).

One boundary, :func:`refusals`, turns each error type the layers below raise into that form:
a stack config's ``ConfigError``, host access's ``UsageProblem``, a release's ``ReleaseError``
and the host tools' ``ToolError``, and the kitchen's ``KitchenError``. Whatever they say is
printed as text, never as Rich markup, so a ``[secure]`` or ``[0]`` in a message survives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from choiros_infra.host_access import UsageProblem
from choiros_infra.release_store import ReleaseError
from infra.config import ConfigError
from kitchen.errors import KitchenError
from provisioning.host_tools.choiros_tool import ToolError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2


def refuse(problem: str, fix: str | None, detail: str | None = None,
           code: int = EXIT_UNUSABLE) -> int:
    """Print the refusal (problem, extra lines, fix) as plain text; return ``code``."""
    stderr.print(f"[bold red]Error:[/] {escape(problem)}", markup=True)
    if detail:
        stderr.print(detail, markup=False)
    if fix:
        stderr.print(f"[bold]Try:[/] {escape(fix)}", markup=True)
    return code


def fail(problem: str, fix: str, code: int = EXIT_UNUSABLE) -> NoReturn:
    """Report the refusal and end the command with ``code``."""
    raise typer.Exit(refuse(problem, fix, code=code))


def report_config(error: ConfigError) -> int:
    """Print a refused stack config value (its own Error:/Try: lines); return 2."""
    stderr.print(error.render(), markup=False)
    return EXIT_UNUSABLE


def fail_config(error: ConfigError) -> NoReturn:
    raise typer.Exit(report_config(error))


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """The error boundary of a command: each refusal from below as ``Error:``/``Try:`` and
    the exit code it carries."""
    try:
        yield
    except ConfigError as e:
        fail_config(e)
    except UsageProblem as e:
        fail(e.problem, e.fix)
    except ReleaseError as e:
        fail(e.problem, e.fix, e.code)
    except ToolError as e:
        fail(str(e), e.hint, e.code)
    except KitchenError as e:
        raise typer.Exit(refuse(e.message, e.fix, e.detail, e.exit_code)) from None
