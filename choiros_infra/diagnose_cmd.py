"""``choiros-infra diagnose``: collect one host's incident evidence into one Markdown file.

See :mod:`choiros_infra.diagnose` for what is collected. ``kitchen diagnose`` calls
:func:`execute` with the kitchen host's ssh_config.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from choiros_infra.diagnose import collect, render_markdown, ssh_runner
from choiros_infra.errors import EXIT_OK, refusals, refuse
from choiros_infra.host_access import (
    HostAccess,
    UsageProblem,
    access_from_options,
    check_access_options,
    check_files,
    check_reachable,
    open_access,
)
from choiros_infra.host_batch import HostSecrets
from choiros_infra.options import (
    HostOption,
    KeyOption,
    KnownHostsOption,
    OutputsOption,
    SshConfigOption,
    StackFileOption,
    StackOption,
)
from choiros_infra.redaction import Redactor, variable_of
from choiros_infra.stack_target import resolve

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

HELP = (
    "Collect a host's incident evidence into one Markdown file: unit states, the last lines "
    "of every service's log, disk and memory, listening ports, recent deploys and rollbacks, "
    "fail2ban bans, backup freshness and the /health answers. Only reading commands run, as "
    "root through sudo, over one shared SSH connection.\n\n"
    "Exit codes: 0 the file was written (whatever the host's state); 2 the diagnose could not "
    "run (bad arguments, host unreachable or no sudo)."
)




def execute(access: HostAccess, out: Path | None, *, known_hosts: Path | None = None,
            secrets: Sequence[str] = ()) -> int:
    """Collect the evidence and write it; ``out`` is checked first, so nothing collected is
    lost to a bad path. ``secrets``: the stack's SSM parameter names, when known (the host
    masks the values it holds either way; these names' assignments are masked too)."""
    if out is not None and (problem := unwritable(out)):
        return refuse(problem, "give --out a file path in an existing directory, e.g. "
                      "--out /tmp/diagnose.md")
    try:
        with open_access(access, known_hosts) as access:
            check_reachable(access)
            generated = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            names = tuple(variable_of(p) for p in secrets)
            sections = collect(ssh_runner(access, secrets=HostSecrets(names=names)))
            text = Redactor(names=frozenset(names))(
                render_markdown(sections, host=access.destination, generated=generated))
    except UsageProblem as problem:
        return refuse(problem.problem, problem.fix)
    if out is None:
        print(text)
    else:
        out.write_text(text)
        stderr.print(f"diagnose: wrote {escape(str(out))}")
    return EXIT_OK


def unwritable(out: Path) -> str | None:
    """Why ``out`` cannot take the report, or None."""
    if out.is_dir():
        return f"--out {out} is a directory"
    if not out.parent.is_dir():
        return f"--out {out}: directory {out.parent} does not exist"
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        return f"--out {out} is not writable"
    return None


def register(app: typer.Typer) -> None:
    """Add the ``diagnose`` command to the CLI."""
    app.command(help=HELP, short_help="Collect a host's incident evidence into one Markdown "
                "file (read-only).")(diagnose)


def diagnose(
    host: HostOption = None,
    stack: StackOption = None,
    stack_file: StackFileOption = None,
    outputs: OutputsOption = None,
    ssh_key: KeyOption = None,
    ssh_config: SshConfigOption = None,
    known_hosts: KnownHostsOption = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the Markdown here (default: standard output).")] = None,
) -> None:
    secrets: tuple[str, ...] = ()
    with refusals():
        check_access_options(ssh_key=ssh_key, ssh_config=ssh_config, known_hosts=known_hosts)
        check_files((outputs, "--outputs"))
        if host is None:  # the stack's outputs say where its host is
            found = resolve(stack=stack, stack_file=stack_file, outputs=outputs,
                            need_account=False)
            host, secrets = found.access().url, found.cfg.secrets
        access = access_from_options(host, ssh_key=ssh_key, ssh_config=ssh_config)
    raise typer.Exit(execute(access, out, known_hosts=known_hosts and known_hosts.resolve(),
                             secrets=secrets))
