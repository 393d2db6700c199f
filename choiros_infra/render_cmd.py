"""``choiros-infra render``: the host configuration as files, exactly as the host receives it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from choiros_infra.errors import fail, fail_config
from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice, rendering_for
from infra.config import ConfigError, account_id, load_stack_file

# What a render writes at the top of --out; a directory holding only these is an earlier
# render, which a new one replaces whole (so no stale file survives).
RENDERED = frozenset({"user-data", "cloud-config.yaml", "manifest.json", "files"})


def clear_earlier_render(out: Path) -> None:
    """Empty ``out`` of an earlier render, or refuse a directory that holds anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        fail(f"--out {out} is a file", "give a directory (it is created if missing)")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    if "manifest.json" not in entries or not entries <= RENDERED:
        others = ", ".join(sorted(entries - RENDERED)[:5]) or "no manifest.json"
        fail(f"--out {out} is not empty and not an earlier render ({others})",
             "give an empty or new directory")
    for name in entries:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def render_to(out: Path, stack_file: Path, target: TargetChoice, account: str) -> int:
    """Write user-data, cloud-config.yaml, files/ and manifest.json under ``out``; return the
    number of files."""
    rendering = rendering_for(load_stack_file(stack_file), target, account)
    clear_earlier_render(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "user-data").write_bytes(rendering.user_data)
    (out / "cloud-config.yaml").write_text(rendering.cloud_config, encoding="utf-8")
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
        out: Annotated[Path, typer.Option(
            help="Directory to write into: created, or empty, or an earlier render (replaced "
            "whole).")],
        target: Annotated[TargetChoice, typer.Option(help="Where the host runs.")] = (
            TargetChoice.aws),
        account_id_option: Annotated[str | None, typer.Option(
            "--account-id",
            help="AWS account id (12 digits) the bucket names end in. Required for aws (`aws "
            "sts get-caller-identity --query Account`); the kitchen's is "
            f"{KITCHEN_ACCOUNT}.")] = None,
    ) -> None:
        """Render the host's user-data and managed files.

        Writes OUT/user-data (the exact gzip bytes the instance receives), OUT/cloud-config.yaml
        (the same document decoded, for review), OUT/files/<path> for every managed file, and
        OUT/manifest.json (path, mode, owner, sha256). A render into a directory that holds an
        earlier render replaces it whole; any other non-empty directory is refused.
        Exit codes: 0 written, 2 invalid stack config, account id or output directory.
        """
        if account_id_option is None and target is TargetChoice.aws:
            fail("--target aws needs --account-id: the bucket names, and so the user-data "
                 "bytes, end in the account's id",
                 "--account-id $(aws sts get-caller-identity --query Account --output text)")
        try:
            account = account_id(account_id_option or KITCHEN_ACCOUNT)
            count = render_to(out, stack_file, target, account)
        except ConfigError as error:
            fail_config(error)
        except OSError as error:
            fail(f"cannot write {out}: {error.strerror}", "choose a writable --out directory")
        typer.echo(f"rendered {count} files, user-data and cloud-config.yaml for {target.value} "
                   f"(account {account}) into {out}")
