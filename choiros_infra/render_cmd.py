"""``choiros-infra render``: the host configuration as files, exactly as the host receives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from choiros_infra.errors import fail, fail_config
from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice, rendering_for
from infra.config import ConfigError, load_stack_file


def render_to(out: Path, stack_file: Path, target: TargetChoice, account: str) -> int:
    """Write user-data, files/ and manifest.json under ``out``; return the number of files."""
    rendering = rendering_for(load_stack_file(stack_file), target, account)
    out.mkdir(parents=True, exist_ok=True)
    (out / "user-data").write_bytes(rendering.user_data)
    for managed in rendering.files:
        path = out / "files" / managed.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(managed.data)
        path.chmod(managed.mode)
    manifest = json.dumps(rendering.manifest(), indent=2, sort_keys=True) + "\n"
    (out / "manifest.json").write_text(manifest)
    return len(rendering.files)


def register(app: typer.Typer) -> None:
    @app.command()
    def render(
        stack_file: Annotated[Path, typer.Option(help="Pulumi stack file to read.")],
        out: Annotated[Path, typer.Option(help="Directory to write into (created).")],
        target: Annotated[TargetChoice, typer.Option(help="Where the host runs.")] = (
            TargetChoice.aws),
        account_id: Annotated[str, typer.Option(
            help="AWS account id the bucket names end in (for aws: `aws sts "
            "get-caller-identity --query Account`); default: the kitchen cloud's.")] = (
            KITCHEN_ACCOUNT),
    ) -> None:
        """Render the host's user-data and managed files.

        Writes OUT/user-data (the exact gzip bytes the instance receives), OUT/files/<path> for
        every managed file, and OUT/manifest.json (path, mode, owner, sha256).
        Exit codes: 0 written, 2 invalid stack config or unwritable output.
        """
        try:
            count = render_to(out, stack_file, target, account_id)
        except ConfigError as error:
            fail_config(error)
        except OSError as error:
            fail(f"cannot write {out}: {error.strerror}", "choose a writable --out directory")
        typer.echo(f"rendered {count} files and user-data for {target.value} into {out}")
