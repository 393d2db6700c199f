"""Library of the ChoirOS host tool choiros-secrets (choiros-secrets.service, at boot).

Installed as /usr/local/lib/choiros/choiros_secrets.py beside choiros_tool.py. Reads the SSM
parameters host.json names under `secrets` and writes the backend's EnvironmentFile; values are
never printed.
"""

from __future__ import annotations

import grp
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__:  # in the repository; on the host, a sibling module
    from provisioning.host_tools.choiros_tool import (
        OK,
        USAGE,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        run_tool,
    )
else:
    from choiros_tool import (
        OK,
        USAGE,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        run_tool,
    )

def fetch_secrets(cfg: Config) -> dict[str, str]:
    """{last part of the parameter name: value}, in config order."""
    names = {p: p.rsplit("/", 1)[-1] for p in cfg.secrets}
    for param, env in names.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env) or list(names.values()).count(env) > 1:
            raise ToolError(f"secret {param!r} does not end in a unique env var name",
                            "fix secrets in host.json", USAGE)
    values: dict[str, str] = {}
    if not (params := list(names)):  # still write an env file: the backend unit needs it
        return {}
    ssm = aws_client(cfg, "ssm")
    try:
        for i in range(0, len(params), 10):
            resp = ssm.get_parameters(Names=params[i:i + 10], WithDecryption=True)
            values.update({p["Name"]: p["Value"] for p in resp["Parameters"]})
    except aws_errors() as e:
        raise ToolError(f"cannot read SSM parameters: {e}",
                        "check the instance role and the region") from e
    if missing := sorted(set(params) - set(values)):
        raise ToolError(f"missing SSM parameters: {', '.join(missing)}",
                        "aws ssm put-parameter --type SecureString --name NAME --value ...")
    if any("\0" in v for v in values.values()):
        raise ToolError("an SSM parameter value contains a NUL byte")
    return {names[p]: values[p] for p in params}


def quote_env(value: str) -> str:
    """Double-quote for an EnvironmentFile: systemd 252 and sh both undo \\" \\\\ \\` \\$."""
    return '"' + re.sub(r'(["\\`$])', r"\\\1", value) + '"'


def render_env_file(env: dict[str, str]) -> str:
    lines = [f"{k}={quote_env(v)}\n" for k, v in env.items()]
    return "# Written by choiros-secrets from SSM Parameter Store. Do not edit.\n" + "".join(lines)


def write_env_file(path: Path, text: str, group: str) -> None:
    """Atomically replace path: mode 0640, owner this user (root), group `group`."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError as e:
        raise ToolError(f"group {group!r} does not exist", "create the choiros user", USAGE) from e
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def secrets(cfg: Config) -> int:
    env = fetch_secrets(cfg)
    write_env_file(cfg.env_file, render_env_file(env),
                   os.environ.get("CHOIROS_SECRETS_GROUP", "choiros"))
    print(f"Wrote {len(env)} secrets to {cfg.env_file}" + (f": {', '.join(env)}" * bool(env)))
    return OK


def secrets_main(argv: list[str] | None = None) -> int:
    return run_tool(argv, "choiros-secrets", "Write the backend's EnvironmentFile from SSM; values "
                    "are never printed.\nGroup: $CHOIROS_SECRETS_GROUP or choiros.",
                    lambda cfg, a: secrets(cfg))

