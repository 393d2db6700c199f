"""choiros-secrets: SSM parameters (moto) to the backend's EnvironmentFile."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from module_loading import host_tool
from moto import mock_aws

pytestmark = pytest.mark.unit

TOOLS = Path(__file__).resolve().parents[2] / "provisioning" / "host_tools"


tool = host_tool("choiros_tool")
cs = host_tool("choiros_secrets")

PREFIX = "/choiros/test/"
VALUES = {
    "OPENAI_API_KEY": "sk-test-0123456789",
    "SHELL_SPECIALS": 'say "hi" \\ `id` $HOME ${PATH} $(id) \\$ \\\\',
    "MULTILINE": "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
    "PADDED": "  padded\t ",
    "HASHES": "a#b # not a comment",
    "QUOTES": "it's \"both\"",
    "EQUALS": "a=b=c",
    "UNICODE": "naïve ✓",
    "TRAILING_BACKSLASH": "ends with \\",
    **{f"FILLER_{i}": f"value-{i}" for i in range(4)},  # 13 parameters: two GetParameters calls
}
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_CONFIG_FILE": "/dev/null",
                 "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        client = boto3.client("ssm", region_name="eu-west-1")
        for name, value in VALUES.items():
            client.put_parameter(Name=PREFIX + name, Value=value, Type="SecureString")
        yield client


@pytest.fixture
def env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHOIROS_SECRETS_GROUP", MY_GROUP)
    etc = tmp_path / "etc"
    etc.mkdir()
    return etc / "backend.env"


def run_secrets(env_file: Path, names: list[str], **extra: Any) -> int:
    config = env_file.parent / "host.json"
    config.write_text(json.dumps({"region": "eu-west-1", "env_file": str(env_file),
                                  "secrets": names, **extra}))
    code: int = cs.secrets_main(["--config", str(config)])
    return code


def source_with_sh(path: Path, names: list[str]) -> dict[str, str]:
    """What a POSIX shell makes of the file (systemd 252 undoes the same four escapes)."""
    dump = "import json, os, sys; print(json.dumps({k: os.environ[k] for k in sys.argv[1:]}))"
    done = subprocess.run(["sh", "-c", 'set -a; . "$1"; shift; exec "$@"', "sh", str(path),
                           sys.executable, "-c", dump, *names],
                          capture_output=True, text=True, check=True,
                          env={"PATH": os.environ["PATH"]})
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_secrets_are_written_to_the_env_file(ssm: Any, env_file: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    real_client = tool.aws_client

    def spying_client(cfg: Any, service: str) -> Any:
        client = real_client(cfg, service)
        client.meta.events.register("provide-client-params.ssm.GetParameters",
                                    lambda params, **_: batches.append(len(params["Names"])))
        return client

    monkeypatch.setattr(cs, "aws_client", spying_client)
    names = [PREFIX + n for n in VALUES]

    assert run_secrets(env_file, names) == 0

    assert batches == [10, 3]
    st = env_file.stat()
    assert (st.st_mode & 0o7777, st.st_gid) == (0o640, os.getgid())
    text = env_file.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# Written by choiros-secrets")
    assert lines[1] == 'OPENAI_API_KEY="sk-test-0123456789"'
    assert lines[2] == r'SHELL_SPECIALS="say \"hi\" \\ \`id\` \$HOME \${PATH} \$(id) \\\$ \\\\"'
    assert source_with_sh(env_file, list(VALUES)) == VALUES
    assert sorted(p.name for p in env_file.parent.iterdir()) == ["backend.env", "host.json"]
    out, err = capsys.readouterr()
    assert out.startswith(f"Wrote 13 secrets to {env_file}: OPENAI_API_KEY, SHELL_SPECIALS, ")
    for value in VALUES.values():
        if len(value) > 6:
            assert value not in out + err


def test_missing_parameters_are_named_and_the_old_file_is_untouched(
        ssm: Any, env_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file.write_text('OPENAI_API_KEY="old"\n')
    env_file.chmod(0o600)
    names = [PREFIX + "OPENAI_API_KEY", PREFIX + "NOT_THERE", "/choiros/other/ALSO_MISSING"]

    assert run_secrets(env_file, names) == 3

    err = capsys.readouterr().err
    assert ("Error: missing SSM parameters: /choiros/other/ALSO_MISSING, "
            "/choiros/test/NOT_THERE\n") in err
    assert "Try: aws ssm put-parameter" in err
    assert env_file.read_text() == 'OPENAI_API_KEY="old"\n'
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in env_file.parent.iterdir()) == ["backend.env", "host.json"]


@pytest.mark.parametrize(("names", "why"), [
    ([PREFIX + "bad-name"], "does not end in a unique env var name"),
    ([PREFIX + "9LIVES"], "does not end in a unique env var name"),
    ([PREFIX + "X", "/choiros/other/X"], "does not end in a unique env var name"),
])
def test_bad_secret_names_are_configuration_errors(
        ssm: Any, env_file: Path, names: list[str], why: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run_secrets(env_file, names) == 2
    assert why in capsys.readouterr().err
    assert not env_file.exists()


def test_no_secrets_configured_writes_an_empty_env_file(
        env_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The backend unit needs its EnvironmentFile, so a stack without secrets still gets one."""
    monkeypatch.setattr(cs, "aws_client", lambda cfg, service: pytest.fail("no AWS call"))
    assert run_secrets(env_file, []) == 0
    assert env_file.read_text().splitlines() == [
        "# Written by choiros-secrets from SSM Parameter Store. Do not edit."]
    assert capsys.readouterr().out == f"Wrote 0 secrets to {env_file}\n"


def test_an_unknown_group_is_refused_before_writing(
        ssm: Any, env_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHOIROS_SECRETS_GROUP", "no-such-group-choiros")
    assert run_secrets(env_file, [PREFIX + "OPENAI_API_KEY"]) == 2
    assert "group 'no-such-group-choiros' does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in env_file.parent.iterdir()) == ["host.json"]


def test_aws_errors_are_reported_without_writing(
        env_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    class DeniedSSM:
        def get_parameters(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                              "GetParameters")

    monkeypatch.setattr(cs, "aws_client", lambda cfg, service: DeniedSSM())
    assert run_secrets(env_file, [PREFIX + "OPENAI_API_KEY"]) == 3
    err = capsys.readouterr().err
    assert "Error: cannot read SSM parameters: An error occurred (AccessDeniedException)" in err
    assert "Try: check the instance role" in err
    assert not env_file.exists()


def test_aws_clients_use_the_kitchen_endpoint_only_when_configured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint is the kitchen's; the credentials come from the default chain on both (the
    instance role through the metadata service; here the environment, first in the chain)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session caches what it resolved
    kitchen = tool.Config(region="eu-west-1", aws={"endpoint_url": "http://10.213.0.1:4566"})
    client = tool.aws_client(kitchen, "ssm")
    assert client.meta.endpoint_url == "http://10.213.0.1:4566"
    assert client.meta.region_name == "eu-west-1"
    assert client._request_signer._credentials.access_key == "from-env"
    ec2 = tool.aws_client(tool.Config(region="eu-west-1"), "s3")
    assert ec2.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"


def test_quoting_round_trips_through_sh(tmp_path: Path) -> None:
    nasty = {f"V{i}": v for i, v in enumerate(
        ['"', "\\", "`", "$", "\\\"", "\\$x", "'", "\n", "a\\\nb", " ", "", "#", "${a:-b}"])}
    path = tmp_path / "env"
    path.write_text(cs.render_env_file(nasty))
    assert source_with_sh(path, list(nasty)) == nasty
