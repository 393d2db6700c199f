"""The `choiros-infra` command table, generated from the Typer app itself, and the commands it
knows: what docs/runbooks/90-reference/commands.md embeds and what the docs test holds every
`choiros-infra ...` command line in the README and the runbooks to.

Regenerate the table with ``UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_commands.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

START = "<!-- commands:start -->"
END = "<!-- commands:end -->"


def commands(app: typer.Typer) -> dict[str, Any]:
    """Every leaf command by its path (``kitchen up``), as click sees it."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        children = getattr(command, "commands", None)
        if children is None:
            found[" ".join(path)] = command
            return
        for name, child in children.items():
            walk(child, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def options(command: Any) -> set[str]:
    """Every option spelling a command accepts (``--stack``, ``-n``), ``--help`` included."""
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("-")} | {"--help"}


def _option_list(command: Any) -> Iterator[str]:
    """Arguments as NAME, options as their spellings (``-n/--workers``); `--help` says more."""
    for param in command.params:
        first = param.opts[0]
        yield "/".join(param.opts) if first.startswith("-") else first.upper()


def _summary(command: Any) -> str:
    text = command.short_help or (command.help or "").split("\n\n")[0]
    return " ".join(text.split()).replace("|", "\\|")


def reference_table(app: typer.Typer) -> str:
    rows = ["| command | options | does |", "|---|---|---|"]
    for path, command in sorted(commands(app).items()):
        listed = ", ".join(f"`{o}`" for o in _option_list(command)).replace("|", "\\|")
        rows.append(f"| `{path}` | {listed} | {_summary(command)} |")
    return "\n".join(rows)


def embed(document: str, app: typer.Typer) -> str:
    """``document`` with the text between the markers replaced by the table."""
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{reference_table(app)}\n{END}{tail}"
