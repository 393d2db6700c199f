"""``choiros-infra release pack|publish``, ``deploy``, ``rollback`` and ``promote``: shipping a
release from the workstation, with the stack's wanted release kept outside the host.

The flows live in :mod:`choiros_infra.release_flow`, the bucket in
:mod:`choiros_infra.release_store`, where a stack's host and buckets are in
:mod:`choiros_infra.stack_target`; here are the options, the progress lines and the errors.
``kitchen deploy`` and ``kitchen rollback`` call the same flows for a kitchen host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from choiros_infra import release_flow
from choiros_infra.errors import fail, refusals
from choiros_infra.host_access import (
    HostAccess,
    access_from_options,
    check_access_options,
    check_files,
    open_access,
)
from choiros_infra.options import (
    AccountOption,
    HostOption,
    KeyOption,
    KnownHostsOption,
    OutputsOption,
    StackFileOption,
    StackOption,
    TargetOption,
)
from choiros_infra.release_store import sidecar_sha256
from choiros_infra.stack_target import StackTarget, resolve
from choiros_infra.targets import TargetChoice
from choiros_infra.verify_cmd import execute
from provisioning.host_tools.choiros_release import inspect_release, tarball_name, valid_version
from provisioning.host_tools.choiros_tool import USAGE, ToolError
from provisioning.release_format import files_from, write_release

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_CODES = (
    "Exit codes: 0 live, healthy and checked; 1 the release failed its health check and the "
    "host switched back (the wanted release too), or the application checks failed; 2 usage "
    "or configuration error; 3 refused before anything changed (not published, checksum "
    "mismatch, the wanted release changed meanwhile); 4 the host could not go back by itself "
    "and needs an operator."
)

release_app = typer.Typer(
    name="release", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Pack a build into a release and publish it to a stack's artifacts bucket.\n\n"
    "Exit codes: 0 done (or already published with the same bytes), 2 bad input (nothing "
    "written), 3 refused (other bytes already published under the version).")

def say(text: str) -> None:
    """A progress line on stderr (stdout stays for results)."""
    stderr.print(escape(text))


def app_checks(stack: StackTarget, access: HostAccess) -> int:
    """verify's application checks (release_flow.APP_CHECKS) against the host."""
    return execute(access, stack.stack_file, stack.target.value, account_id=stack.account_id,
                   paths=release_flow.APP_CHECKS)


def stack_and_access(*, stack: str | None, stack_file: Path | None, target: TargetChoice,
                     outputs: Path | None, host_url: str | None, ssh_key: Path | None,
                     account_id: str | None,
                     known_hosts: Path | None = None) -> tuple[StackTarget, HostAccess]:
    check_access_options(ssh_key=ssh_key, known_hosts=known_hosts)
    check_files((outputs, "--outputs"))
    if target is TargetChoice.kitchen and host_url is None:
        fail("--target kitchen needs the host", "use `choiros-infra kitchen deploy|rollback "
             "--name N`, or give --host ssh://admin@10.213.N.2 and its --ssh-key")
    resolved = resolve(stack=stack, stack_file=stack_file, target=target, outputs=outputs,
                       host=host_url, account_id=account_id)
    return resolved, access_from_options(resolved.access().url, ssh_key=ssh_key)


def _finish(code: int) -> NoReturn:
    raise typer.Exit(code)


# --- release pack / publish ---------------------------------------------------------------

@release_app.command("pack")
def pack(
    sandbox: Annotated[Path, typer.Option("--sandbox", help="The built backend binary "
         "(cargo build -p sandbox --release: target/release/sandbox).", show_default=False)],
    dist: Annotated[Path, typer.Option("--dist", help="The built frontend directory "
         "(dx build --release), with index.html.", show_default=False)],
    version: Annotated[str, typer.Option("--version", help="The release version, e.g. 1.4.2 "
             "(up to 64 of [0-9A-Za-z._+-]).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Directory for choiros-VERSION.tar.gz and "
         "its .sha256.", show_default=False)],
) -> None:
    """Pack a build into choiros-VERSION.tar.gz and its .sha256, checked by the host's own
    validator first; nothing is written when it refuses."""
    with refusals():
        try:
            files = files_from(sandbox, dist, version)
            tarball = write_release(files, version, out)
        except ToolError as e:
            if e.code == USAGE:
                raise
            fail(str(e), "fix the build: --sandbox must be a non-empty executable "
                 "file; --dist must hold index.html and only regular files and directories "
                 "(no links)")
    print(tarball)
    print(tarball.with_name(tarball.name + ".sha256"))


@release_app.command("publish")
def publish(
    tarball: Annotated[Path, typer.Argument(help="choiros-VERSION.tar.gz (its .sha256 beside "
             "it), as `release pack` wrote it.", show_default=False)],
    stack: StackOption = None,
    stack_file: StackFileOption = None,
    target: TargetOption = TargetChoice.aws,
    outputs: OutputsOption = None,
    account_id: AccountOption = None,
) -> None:
    """Upload a release and its checksum to the stack's artifacts bucket, once: the same bytes
    already there is success with nothing uploaded; other bytes under the version are refused
    (exit 3) by S3's conditional write, and the bucket stays as it was."""
    with refusals():
        if not tarball.is_file():
            fail(f"{tarball} is not a file", "give the tarball `choiros-infra "
                 "release pack` wrote")
        version = tarball.name.removeprefix("choiros-").removesuffix(".tar.gz")
        if tarball.name != tarball_name(version) or not valid_version(version):
            fail(f"{tarball.name} is not named choiros-VERSION.tar.gz",
                 "publish the file `choiros-infra release pack` wrote, under its own name")
        sha256 = sidecar_sha256(tarball)
        try:
            inspect_release(tarball, version)
        except ToolError as e:
            fail(str(e), "publish what `choiros-infra release pack` wrote")
        resolved = resolve(stack=stack, stack_file=stack_file, target=target, outputs=outputs,
                           account_id=account_id, need_host=False)
        store = resolved.releases()
        say(f"publishing {version} (sha256 {sha256}) to {store.url('releases/')}…")
        uploaded = store.publish(tarball, sha256)
    print(f"{version}: " + ("published" if uploaded else
                            "already published with the same bytes; nothing uploaded"))


# --- deploy / rollback / promote ----------------------------------------------------------

def deploy(
    version: Annotated[str, typer.Argument(help="A published release version.",
                                           show_default=False)],
    stack: StackOption = None,
    stack_file: StackFileOption = None,
    target: TargetOption = TargetChoice.aws,
    outputs: OutputsOption = None,
    host_url: HostOption = None,
    ssh_key: KeyOption = None,
    known_hosts: KnownHostsOption = None,
    account_id: AccountOption = None,
) -> None:
    """Deploy a published release to the stack's host: check it in the bucket (sha256), set
    the stack's wanted release, run choiros-deploy on the host (it health-checks and switches
    back by itself), then verify's application checks."""
    with refusals():
        resolved, access = stack_and_access(stack=stack, stack_file=stack_file, target=target,
                                            outputs=outputs, host_url=host_url,
                                            ssh_key=ssh_key, account_id=account_id,
                                            known_hosts=known_hosts)
        with open_access(access, known_hosts) as session:
            code = release_flow.deploy(resolved, session, version, check=app_checks, say=say)
    _finish(code)


def rollback(
    stack: StackOption = None,
    stack_file: StackFileOption = None,
    target: TargetOption = TargetChoice.aws,
    outputs: OutputsOption = None,
    host_url: HostOption = None,
    ssh_key: KeyOption = None,
    known_hosts: KnownHostsOption = None,
    account_id: AccountOption = None,
) -> None:
    """Go back to the host's previous release (choiros-rollback) and make it the stack's
    wanted release; then verify's application checks."""
    with refusals():
        resolved, access = stack_and_access(stack=stack, stack_file=stack_file, target=target,
                                            outputs=outputs, host_url=host_url,
                                            ssh_key=ssh_key, account_id=account_id,
                                            known_hosts=known_hosts)
        with open_access(access, known_hosts) as session:
            code = release_flow.rollback(resolved, session, check=app_checks, say=say)
    _finish(code)


def promote(
    version: Annotated[str, typer.Argument(help="The version staging runs and verified.",
                                           show_default=False)],
    from_stack: Annotated[str, typer.Option("--from", help="The staging stack's name.",
                                            show_default=False)],
    to_stack: Annotated[str, typer.Option("--to", help="The production stack's name.",
                                          show_default=False)],
    target: TargetOption = TargetChoice.aws,
    from_outputs: Annotated[Path | None, typer.Option(
        "--from-outputs", help="Staging's saved outputs (pulumi stack output --json).",
        show_default=False)] = None,
    to_outputs: Annotated[Path | None, typer.Option(
        "--to-outputs", help="Production's saved outputs.", show_default=False)] = None,
    from_host: Annotated[str | None, typer.Option(
        "--from-host", help="Staging's host (default: from its outputs).",
        show_default=False)] = None,
    to_host: Annotated[str | None, typer.Option(
        "--to-host", help="Production's host (default: from its outputs).",
        show_default=False)] = None,
    ssh_key: KeyOption = None,
    known_hosts: KnownHostsOption = None,
    account_id: Annotated[str | None, typer.Option(
        "--account-id", help="AWS account of both stacks (default: from their outputs).",
        show_default=False)] = None,
) -> None:
    """Deploy to production exactly the bytes (same sha256) that staging runs and verified;
    refuse a version staging does not run or that failed verify there."""
    with refusals():
        staging, staging_access = stack_and_access(
            stack=from_stack, stack_file=None, target=target, outputs=from_outputs,
            host_url=from_host, ssh_key=ssh_key, account_id=account_id,
            known_hosts=known_hosts)
        production, production_access = stack_and_access(
            stack=to_stack, stack_file=None, target=target, outputs=to_outputs,
            host_url=to_host, ssh_key=ssh_key, account_id=account_id,
            known_hosts=known_hosts)
        _run_promote(version, staging, staging_access, production, production_access,
                     known_hosts)


def _run_promote(version: str, staging: StackTarget, staging_access: HostAccess,
                 production: StackTarget, production_access: HostAccess,
                 known_hosts: Path | None) -> NoReturn:
    with (open_access(staging_access, known_hosts) as from_session,
          open_access(production_access, known_hosts) as to_session):
        code = release_flow.promote(version, staging, from_session, production, to_session,
                                    check=app_checks, say=say)
    _finish(code)


def register(app: typer.Typer) -> None:
    app.add_typer(release_app, name="release")
    app.command("deploy", help=f"{deploy.__doc__}\n\n{EXIT_CODES}",
                short_help="Deploy a published release and set it as the stack's wanted "
                "release.")(deploy)
    app.command("rollback", help=f"{rollback.__doc__}\n\n{EXIT_CODES}",
                short_help="Return the host to its previous release, and the wanted release "
                "with it.")(rollback)
    app.command("promote", help=f"{promote.__doc__}\n\n{EXIT_CODES}",
                short_help="Deploy to production the exact bytes staging runs and "
                "verified.")(promote)

