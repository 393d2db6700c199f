"""``choiros-infra plan``: what a stack file would declare, without Pulumi CLI, AWS or credentials.

The real program (:func:`infra.stack.build`) runs under Pulumi's mocks; every resource it
declares is summarised (:mod:`choiros_infra.plan_summary`), listed in full, or compared with an
older plan (:mod:`choiros_infra.plan_diff`). The stack file is validated first: a bad value
stops the command before anything is declared.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from choiros_infra import plan_diff, plan_summary
from choiros_infra.errors import fail, fail_config
from choiros_infra.plan_summary import short_type
from infra import preview
from infra.config import ConfigError, StackConfig, load_stack_file

OUTPUTS_TYPE = "pulumi:outputs"
CELL_LIMIT = 100

HELP = f"""Show what a stack file declares, by running the program under mocks.

Nothing touches AWS and no Pulumi CLI is needed. Mocked values are deterministic (account
123456789012, ids derived from names), so the same stack file always prints the same bytes.

By default, a compact plan: the image the host boots (and whether choiros:ami pins it), the
user-data's size and sha256, the security facts (inbound rules, IMDS, root volume encryption,
each bucket's public access block, versioning, encryption and TLS-only policy), then one line
per resource with the inputs that matter, and the outputs. --full prints every input of every
resource, the lookups and the outputs as tables. Secret values are shown as \\[secret];
user-data as its sha256 and length.

With --json, prints a JSON list of {{"type", "name", "inputs"}} objects, one per resource in
name order (each component, then its children); the last element has type "{OUTPUTS_TYPE}"
and holds the stack outputs as "inputs". Save it to compare with later.

With --against OLD (the stack file before a change, under the same stack name, or a saved
plan --json), prints what `pulumi up` would do to each resource: create, update, replace or
delete, and why a resource is replaced; a line starting THE HOST WOULD BE REPLACED says when
the instance goes (user-data, image, subnet, key pair). With --json, the comparison as
{{"against", "counts", "changes": [{{"type", "name", "op", "keys", "replace_because"}}]}}.

--no-default-vpc models an account without a default VPC (as under Control Tower): without
choiros:subnet_id the plan then stops with the error pulumi preview would meet.

Exit codes: 0 the plan was printed, 2 the stack file (or OLD) is invalid (the error names the
key and the fix; nothing is declared).
"""


def document(plan: preview.Plan, stack_name: str) -> list[dict[str, Any]]:
    """The ``--json`` document: resources in name order, then the outputs."""
    items: list[dict[str, Any]] = [
        {"type": r.type, "name": r.name, "inputs": preview.shown(r.inputs)}
        for r in plan.resources
    ]
    items.append({"type": OUTPUTS_TYPE, "name": stack_name, "inputs": preview.shown(plan.outputs)})
    return items


def _cell(inputs: dict[str, Any]) -> str:
    lines = []
    for key, value in sorted(inputs.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > CELL_LIMIT:
            text = text[: CELL_LIMIT - 1] + "…"
        lines.append(f"{key}: {text}")
    return escape("\n".join(lines))


def _print_tables(console: Console, plan: preview.Plan, stack_name: str) -> None:
    resources = Table(title=f"{stack_name}: {len(plan.resources)} resources", show_lines=True)
    resources.add_column("type", overflow="fold")
    resources.add_column("name", overflow="fold")
    resources.add_column("inputs", overflow="fold")
    for r in plan.resources:
        resources.add_row(short_type(r.type), r.name, _cell(preview.shown(r.inputs)))
    console.print(resources)

    counts = Table(title="resources by type")
    counts.add_column("type")
    counts.add_column("count", justify="right")
    for type_, count in sorted(Counter(short_type(r.type) for r in plan.resources).items()):
        counts.add_row(type_, str(count))
    console.print(counts)

    lookups = Table(title="lookups (data sources)")
    lookups.add_column("function", overflow="fold")
    lookups.add_column("arguments", overflow="fold")
    for call in plan.invokes:
        lookups.add_row(call.token, _cell(preview.shown(call.args)))
    console.print(lookups)

    outputs = Table(title="outputs")
    outputs.add_column("output", no_wrap=True)
    outputs.add_column("value", overflow="fold")
    for key, value in preview.shown(plan.outputs).items():
        outputs.add_row(key, str(value))
    console.print(outputs)


def _run(cfg: StackConfig, default_vpc: bool) -> preview.Plan:
    # A refused program leaves futures the engine never collected; their tracebacks would bury
    # the one Error:/Try: that matters.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        return preview.run(cfg, default_vpc=default_vpc)
    except ConfigError as error:
        fail_config(error)


def _old_plan(against: Path, cfg: StackConfig, default_vpc: bool) -> list[dict[str, Any]]:
    """The plan to compare with: a saved plan --json, or the plan of another stack file."""
    if against.suffix == ".json":
        try:
            return plan_diff.load_plan(against.read_text(encoding="utf-8"))
        except OSError as exc:
            fail(f"--against {against} cannot be read ({exc.strerror})",
                 "give the path of a saved plan --json or of a stack file")
        except plan_diff.PlanFileError as exc:
            fail(f"--against {against} {exc}",
                 "save one with: choiros-infra plan --stack-file F --json > plan.json")
    try:
        old_cfg = load_stack_file(against)
    except ConfigError as error:
        fail_config(error)
    if old_cfg.name != cfg.name:
        fail(f"--against {against} is stack {old_cfg.stack}, not {cfg.stack}: every resource "
             "would differ", "compare with the same stack's file from before the change (copy "
             "it to another directory under the same name), or with a saved plan --json")
    return document(_run(old_cfg, default_vpc), old_cfg.name)


def plan(
    stack_file: Annotated[
        Path, typer.Option("--stack-file", help="A Pulumi.<stack>.yaml stack file.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of text (see above).")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Every input of every resource, as tables.")
    ] = False,
    against: Annotated[
        Path | None, typer.Option("--against", metavar="OLD", help=(
            "Compare with this stack file (same stack) or saved plan --json: what each "
            "resource would undergo, and whether the host is replaced."))
    ] = None,
    no_default_vpc: Annotated[
        bool, typer.Option("--no-default-vpc",
                           help="Model an account without a default VPC.")
    ] = False,
) -> None:
    try:
        cfg = load_stack_file(stack_file)
    except ConfigError as exc:
        fail_config(exc)
    if full and (as_json or against is not None):
        fail("--full shows every input; it goes with neither --json nor --against",
             "drop --full, or run it on its own")

    result = _run(cfg, default_vpc=not no_default_vpc)
    for warning in result.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    if result.constructed_in_apply:
        typer.echo(f"Warning: {result.constructed_in_apply} resources were declared inside "
                   "apply callbacks; a preview cannot show them", err=True)
    current = document(result, cfg.name)
    if against is not None:
        old = _old_plan(against, cfg, default_vpc=not no_default_vpc)
        changes = plan_diff.compare(old, current,
                                    {(r.type, r.name): r.id for r in result.resources})
        if as_json:
            typer.echo(json.dumps({"against": str(against), "counts": plan_diff.counts(changes),
                                   "changes": [c.as_json() for c in changes]},
                                  indent=2, sort_keys=True))
        else:
            typer.echo("\n".join(plan_diff.report(changes, str(against))))
    elif as_json:
        typer.echo(json.dumps(current, indent=2, sort_keys=True))
    elif full:
        _print_tables(Console(), result, cfg.name)
    else:
        typer.echo("\n".join(plan_summary.summary(cfg, result)))


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to the CLI."""
    app.command("plan", help=HELP)(plan)
