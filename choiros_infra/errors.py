"""How every subcommand reports a refusal: ``Error: ...`` then ``Try: ...`` on stderr, exit 2."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from infra.config import ConfigError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2


def fail(problem: str, fix: str, code: int = EXIT_UNUSABLE) -> NoReturn:
    stderr.print(f"[bold red]Error:[/] {problem}\n[bold]Try:[/] {fix}", markup=True)
    raise typer.Exit(code)


def fail_config(error: ConfigError) -> NoReturn:
    stderr.print(error.render(), markup=False)
    raise typer.Exit(EXIT_UNUSABLE)
