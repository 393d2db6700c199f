"""``choiros-infra diagnose``: collect one host's incident evidence into one Markdown file.

See :mod:`choiros_infra.diagnose` for what is collected. ``kitchen diagnose`` calls
:func:`execute` with the kitchen host's ssh_config.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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
    check_reachable,
    close_shared_connection,
    parse_host_url,
    write_ssh_config,
)
from choiros_infra.host_batch import HostSecrets
from choiros_infra.options import (
    HostOption,
    KeyOption,
    KnownHostsOption,
    OutputsOption,
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
    private: Path | None = None
    if access.ssh_config is None:
        private = Path(tempfile.mkdtemp(prefix="choiros-diagnose-"))
        access = HostAccess(url=access.url, ssh_key=None, ssh_config=write_ssh_config(
            private, ssh_key=access.ssh_key, known_hosts=known_hosts, address=access.address))
    try:
        check_reachable(access)
        generated = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        names = tuple(variable_of(p) for p in secrets)
        sections = collect(ssh_runner(access, secrets=HostSecrets(names=names)))
        text = Redactor(names=frozenset(names))(
            render_markdown(sections, host=access.destination, generated=generated))
    except UsageProblem as problem:
        return refuse(problem.problem, problem.fix)
    finally:
        if private is not None:
            close_shared_connection(access)
            shutil.rmtree(private, ignore_errors=True)
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
    ssh_config: Annotated[Path | None, typer.Option(
        "--ssh-config", help="Use this ssh_config as is instead of a generated one.")] = None,
    known_hosts: KnownHostsOption = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the Markdown here (default: standard output).")] = None,
) -> None:
    if ssh_config is not None and (ssh_key is not None or known_hosts is not None):
        raise typer.Exit(refuse("--ssh-config excludes --ssh-key and --known-hosts",
                                "name the key and known_hosts file in the ssh_config"))
    for given, what in ((ssh_key, "--ssh-key"), (ssh_config, "--ssh-config"),
                        (known_hosts, "--known-hosts"), (outputs, "--outputs")):
        if given is not None and not given.is_file():
            raise typer.Exit(refuse(f"{what} {given} is not a readable file",
                                    f"give {what} the path of an existing file"))
    secrets: tuple[str, ...] = ()
    with refusals():
        if host is None:  # the stack's outputs say where its host is
            found = resolve(stack=stack, stack_file=stack_file, outputs=outputs,
                            need_account=False)
            host, secrets = found.access().url, found.cfg.secrets
        parse_host_url(host)
    access = HostAccess(url=host, ssh_key=ssh_key and ssh_key.resolve(),
                        ssh_config=ssh_config and ssh_config.resolve())
    raise typer.Exit(execute(access, out, known_hosts=known_hosts and known_hosts.resolve(),
                             secrets=secrets))
