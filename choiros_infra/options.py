"""Command-line options shared by every command that acts on a stack and its host, written
once: the same flag means the same thing in verify, drift, diagnose, deploy, rollback and
promote (see :mod:`choiros_infra.stack_target` for how they resolve)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from choiros_infra.targets import TargetChoice

StackOption = Annotated[str | None, typer.Option(
    "--stack", help="Stack name: its file is Pulumi.NAME.yaml.", show_default=False)]
StackFileOption = Annotated[Path | None, typer.Option(
    "--stack-file", help="Stack file (instead of --stack).", show_default=False)]
TargetOption = Annotated[TargetChoice, typer.Option(
    "--target", help="aws (EC2) or kitchen (the kitchen cloud's buckets).")]
OutputsOption = Annotated[Path | None, typer.Option(
    "--outputs", help="The stack's outputs saved with `pulumi stack output --json > F` "
    "(default: read through the Pulumi CLI when installed).", show_default=False)]
HostOption = Annotated[str | None, typer.Option(
    "--host", help="The host: ssh://USER@ADDR (default: from the stack's outputs).",
    show_default=False)]
KeyOption = Annotated[Path | None, typer.Option(
    "--ssh-key", help="Private key to log in with (the only one offered).",
    show_default=False)]
SshConfigOption = Annotated[Path | None, typer.Option(
    "--ssh-config", help="Use this ssh_config as is instead of a generated one: it names the "
    "key and the known_hosts file (and, for one connection shared by every command, "
    "ControlMaster/ControlPath/ControlPersist).", show_default=False)]
KnownHostsOption = Annotated[Path | None, typer.Option(
    "--known-hosts", help="Check the host key against this file only, strictly.",
    show_default=False)]
AccountOption = Annotated[str | None, typer.Option(
    "--account-id", help="AWS account the buckets are named for (default: from the outputs).",
    show_default=False)]


KitchenNameOption = Annotated[str, typer.Option("--name", help="Kitchen host name.")]
