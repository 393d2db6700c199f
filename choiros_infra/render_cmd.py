"""``choiros-infra render``: the host configuration as files, exactly as the host receives it,
and the cloud-config decoded beside it for review."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from choiros_infra.errors import fail, fail_config
from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice, rendering_for
from infra.config import ConfigError, load_stack_file
from infra.naming import account_id_problem

# What a render writes into --out: all of it is replaced by the next render there.
RENDERED = ("user-data", "cloud-config.yaml", "manifest.json", "files")


def decoded(user_data: bytes) -> bytes:
    """The cloud-config a user-data carries (gzip-compressed or plain)."""
    return gzip.decompress(user_data) if user_data[:2] == b"\x1f\x8b" else user_data


def prepare(out: Path) -> None:
    """An empty ``out``, or one an earlier render wrote (its files are removed first, so no
    stale file survives); refuse anything else."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / "manifest.json").is_file() or {p.name for p in out.iterdir()} - set(RENDERED):
        raise ValueError(f"--out {out} is not empty and holds more than an earlier render")
    for name in RENDERED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def render_to(out: Path, stack_file: Path, target: TargetChoice, account: str) -> int:
    """Write user-data, cloud-config.yaml, files/ and manifest.json under ``out``; return the
    number of files."""
    rendering = rendering_for(load_stack_file(stack_file), target, account)
    prepare(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "user-data").write_bytes(rendering.user_data)
    (out / "cloud-config.yaml").write_bytes(decoded(rendering.user_data))
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
        out: Annotated[Path, typer.Option(help="Directory to write into: created, or empty, or "
                                          "an earlier render's (replaced whole).")],
        target: Annotated[TargetChoice, typer.Option(help="Where the host runs.")] = (
            TargetChoice.aws),
        account_id: Annotated[str | None, typer.Option(
            help="AWS account id the bucket names end in; required for aws (`aws sts "
            "get-caller-identity --query Account --output text`); the kitchen cloud's for "
            "kitchen.", show_default=False)] = None,
    ) -> None:
        """Render the host's user-data and managed files.

        Writes OUT/user-data (the exact bytes the instance receives), OUT/cloud-config.yaml
        (the same, decoded, for review), OUT/files/<path> for every managed file, and
        OUT/manifest.json (path, mode, owner, sha256).
        Exit codes: 0 written, 2 invalid stack config, account id or output directory.
        """
        if account_id is None and target is TargetChoice.aws:
            fail("--target aws needs --account-id: the bucket names, and so the user-data "
                 "bytes, are the account's",
                 "--account-id $(aws sts get-caller-identity --query Account --output text)")
        account = account_id or KITCHEN_ACCOUNT
        if problem := account_id_problem(account):
            fail(f"--account-id {problem}", "give the 12-digit id of the stack's account")
        try:
            count = render_to(out, stack_file, target, account)
        except ConfigError as error:
            fail_config(error)
        except ValueError as error:
            fail(str(error), "give a new or empty directory, or one an earlier render "
                 "wrote")
        except OSError as error:
            fail(f"cannot write {out}: {error.strerror}",
                 "choose a writable --out directory")
        typer.echo(f"rendered {count} files, user-data and cloud-config.yaml for "
                   f"{target.value} (account {account}) into {out}")
