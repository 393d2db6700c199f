"""The ``choiros-infra`` console script: one entry point, one subcommand per job.

Exit codes shared by every subcommand: 0 success, 1 the checked thing failed, 2 the command
could not run (bad arguments, invalid configuration, missing prerequisites).
"""

from __future__ import annotations

import typer

from choiros_infra import (
    diagnose_cmd,
    drift_cmd,
    kitchen_cmd,
    plan_cmd,
    rehearse_cmd,
    release_cmd,
    render_cmd,
    verify_cmd,
)

app = typer.Typer(
    name="choiros-infra",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Infrastructure as code and a test kitchen for the ChoirOS host.

    Exit codes: 0 success, 1 the checked thing failed, 2 the command could not run.
    """


plan_cmd.register(app)
render_cmd.register(app)
kitchen_cmd.register(app)
verify_cmd.register(app)
diagnose_cmd.register(app)
drift_cmd.register(app)
release_cmd.register(app)
rehearse_cmd.register(app)
