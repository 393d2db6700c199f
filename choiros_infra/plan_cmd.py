"""``choiros-infra plan``: what a stack file would declare, without Pulumi CLI, AWS or credentials.

The real program (:func:`infra.stack.build`) runs under Pulumi's mocks. By default one line per
resource with the few inputs that matter (KEY_INPUTS), the security facts and the user-data's
size and sha256; ``--full`` lists every input, ``--json`` is for machines. The stack file is
validated first: a bad value stops the command before anything is declared.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra import preview
from infra.config import ConfigError, load_stack_file

OUTPUTS_TYPE = "pulumi:outputs"
CELL_LIMIT = 100

HELP = f"""Show every resource a stack file declares, by running the program under mocks.

Nothing touches AWS and no Pulumi CLI is needed. Mocked values are deterministic (account
123456789012, ids derived from names), so the same stack file always prints the same bytes.
Secret values are shown as \\[secret]; user-data as its sha256 and length.

By default: one line per resource (type, name, the inputs that matter), then the security
facts (SSH sources, instance metadata, encryption, public access) and the user-data's size and
sha256. --full prints every input of every resource.

With --json, prints a JSON list of {{"type", "name", "inputs"}} objects, one per resource in
name order (each component, then its children); the last element has type "{OUTPUTS_TYPE}"
and holds the stack outputs as "inputs". The tables abbreviate long values; the JSON does not.

Exit codes: 0 the plan was printed, 2 the stack file is invalid (the error names the key and
the fix; nothing is declared).
"""


def document(plan: preview.Plan, stack_name: str) -> list[dict[str, Any]]:
    """The ``--json`` document: resources in name order, then the outputs."""
    items: list[dict[str, Any]] = [
        {"type": r.type, "name": r.name, "inputs": preview.shown(r.inputs)}
        for r in plan.resources
    ]
    items.append({"type": OUTPUTS_TYPE, "name": stack_name, "inputs": preview.shown(plan.outputs)})
    return items


def short_type(token: str) -> str:
    """``aws:ec2/instance:Instance`` -> ``aws:ec2:Instance``, as the Pulumi CLI shows types."""
    package, module, name = token.split(":", 2)
    return f"{package}:{module.split('/', 1)[0]}:{name}"


# Per resource type, the inputs the compact plan shows (the rest: --full or --json).
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    "aws:ec2/instance:Instance": ("instanceType", "ami", "subnetId"),
    "aws:ec2/securityGroup:SecurityGroup": ("vpcId",),
    "aws:ec2/eip:Eip": ("domain",),
    "aws:s3/bucket:Bucket": ("bucket",),
    "aws:s3/bucketObjectv2:BucketObjectv2": ("key",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName", "threshold"),
    "aws:sns/topicSubscription:TopicSubscription": ("protocol", "endpoint"),
}
INSTANCE = "aws:ec2/instance:Instance"


def _one_line(inputs: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    shown = preview.shown(inputs)
    return " ".join(f"{k}={shown[k] if isinstance(shown[k], str) else json.dumps(shown[k])}"
                    for k in keys if k in shown)


def security_facts(plan: preview.Plan) -> list[str]:
    """What an operator checks first: who reaches SSH, instance metadata, encryption, public
    access to the buckets."""
    facts = []
    for r in plan.resources:
        inputs = preview.shown(r.inputs)
        if r.type == "aws:ec2/securityGroup:SecurityGroup":
            for rule in inputs.get("ingress", []):
                sources = [*rule.get("cidrBlocks", []), *rule.get("ipv6CidrBlocks", [])]
                port = rule.get("fromPort")
                facts.append(f"port {port} from {', '.join(sources)}")
        elif r.type == INSTANCE:
            meta = inputs.get("metadataOptions", {})
            root = inputs.get("rootBlockDevice", {})
            facts.append(f"instance metadata: tokens {meta.get('httpTokens')}, hop limit "
                         f"{meta.get('httpPutResponseHopLimit')}")
            facts.append(f"root volume: {root.get('volumeType')} {root.get('volumeSize')} GiB, "
                         f"encrypted {root.get('encrypted')}")
        elif r.type.endswith("BucketServerSideEncryptionConfiguration"):
            rule = (inputs.get("rules") or [{}])[0].get("applyServerSideEncryptionByDefault", {})
            facts.append(f"{inputs.get('bucket')}: encryption {rule.get('sseAlgorithm')}")
        elif r.type.endswith("BucketPublicAccessBlock"):
            blocked = all(inputs.get(k) for k in ("blockPublicAcls", "blockPublicPolicy",
                                                   "ignorePublicAcls", "restrictPublicBuckets"))
            facts.append(f"{inputs.get('bucket')}: public access "
                         + ("blocked" if blocked else "NOT fully blocked"))
    return facts


def user_data_fact(plan: preview.Plan) -> str:
    for r in plan.resources:
        if r.type == INSTANCE and isinstance(r.inputs.get("userDataBase64"), str):
            return f"user-data: {preview.shown(r.inputs, '')['userDataBase64']}"
    return "user-data: none"


def _print_compact(console: Console, plan: preview.Plan, stack_name: str) -> None:
    console.print(f"{stack_name}: {len(plan.resources)} resources", markup=False)
    width = max((len(short_type(r.type)) for r in plan.resources), default=0)
    for r in plan.resources:
        keys = KEY_INPUTS.get(r.type, ())
        line = f"  {short_type(r.type):<{width}}  {r.name}  {_one_line(r.inputs, keys)}"
        console.print(line.rstrip(), markup=False, soft_wrap=True)
    console.print("security:", markup=False)
    for fact in security_facts(plan):
        console.print(f"  {fact}", markup=False, soft_wrap=True)
    console.print(user_data_fact(plan), markup=False, soft_wrap=True)
    console.print("outputs: " + ", ".join(sorted(plan.outputs)), markup=False, soft_wrap=True)
    console.print("every input: --full; for machines: --json", markup=False)


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
        outputs.add_row(key, escape(str(value)))
    console.print(outputs)


def plan(
    stack_file: Annotated[
        Path, typer.Option("--stack-file", help="A Pulumi.<stack>.yaml stack file.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of tables.")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Every input of every resource, in tables.")
    ] = False,
) -> None:
    try:
        cfg = load_stack_file(stack_file)
    except ConfigError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(2) from None

    result = preview.run(cfg)
    for warning in result.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    if result.constructed_in_apply:
        typer.echo(f"Warning: {result.constructed_in_apply} resources were declared inside "
                   "apply callbacks; a preview cannot show them", err=True)
    if as_json:
        typer.echo(json.dumps(document(result, cfg.name), indent=2, sort_keys=True))
    elif full:
        _print_tables(Console(), result, cfg.name)
    else:
        _print_compact(Console(), result, cfg.name)


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to the CLI."""
    app.command("plan", help=HELP)(plan)
