"""The backend is treated as hostile: from inside its own sandbox, through the agent's tools.

The real backend runs an LLM agent whose bash tool runs ``sh -c COMMAND`` in its working
directory; the stand-in app has the same tool (``POST /api/tools/bash``) and a ``write_file``
tool. Every test here runs its probe through those tools, so the probe has exactly what the
agent would have: the backend's user, group, namespaces, filesystem view and egress firewall.

The kitchen serves instance metadata like EC2 (``kitchen/metadata.py``, reached as
169.254.169.254:80), so the tests first show that root and the other services of the app user
get an IMDSv2 token and the instance role's credentials there: the backend's refusal is then
the firewall's doing, not an unrouted address. EC2's IPv6 endpoint (fd00:ec2::254) is off in
the stack and not served in the kitchen; a stand-in listener on the guest's loopback plays it.

Runbook: 30-operations/04-security.md#the-backends-box
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guest_kit import host_name, wait_until

from choiros_infra.kitchen_stack import instance_role_name, stack_up
from choiros_infra.targets import KITCHEN_ACCOUNT
from infra.config import load_stack_file
from kitchen import cloud, lifecycle
from kitchen.state import HostState
from provisioning.spec import (
    APP_ROOT,
    APP_USER,
    BACKEND_GROUP,
    BACKEND_PORT,
    CONFIG_DIR,
    LITESTREAM_CONFIG,
    METADATA_ADDRESSES,
    WORKSPACE_DIR,
)

pytestmark = pytest.mark.kitchen

TOOL_URL = f"http://127.0.0.1:{BACKEND_PORT}/api/tools"
IPV4_METADATA, IPV6_METADATA = METADATA_ADDRESSES
TOKEN_URL = f"http://{IPV4_METADATA}/latest/api/token"
CREDENTIALS_URL = f"http://{IPV4_METADATA}/latest/meta-data/iam/security-credentials/"
TOKEN_REQUEST = ("-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60")
DEADLINE = 15.0
# Not IMDS's port 80: Caddy's wildcard listener holds it in the guest. The firewall refuses the
# address whatever the port.
STANDIN_PORT = 1338
STANDIN_URL = f"http://[{IPV6_METADATA}]:{STANDIN_PORT}/"
AS_APP_USER = ("systemd-run", "--wait", "--pipe", "--quiet", "--collect", f"--uid={APP_USER}",
               f"--gid={APP_USER}", "--")


@pytest.fixture(scope="module")
def host(stack_file: Path) -> Iterator[HostState]:
    name = host_name("box")
    try:
        st = stack_up(name, stack_file)
        lifecycle.exec_in(name, ["ip", "address", "add", f"{IPV6_METADATA}/128", "dev", "lo"],
                          check=True)
        lifecycle.exec_in(name, ["systemd-run", "--unit=kt-metadata-standin", "python3", "-m",
                                 "http.server", "--bind", IPV6_METADATA, str(STANDIN_PORT)],
                          check=True)
        yield st
    finally:
        lifecycle.destroy(name)


def curl_status(host: HostState, url: str, *prefix: str) -> str:
    """HTTP status of ``url`` fetched in the guest, "000" when the connection failed."""
    done = lifecycle.exec_in(host.name, [*prefix, "curl", "-sS", "-g", "-m", "3", "-o",
                                         "/dev/null", "-w", "%{http_code}", url])
    return done.stdout.strip()


def role_credentials(host: HostState, *prefix: str) -> dict[str, str]:
    """IMDSv2 as an SDK does it, in the guest: a token, the role's name, its credentials."""
    def curl(*args: str) -> str:
        done = lifecycle.exec_in(host.name, [*prefix, "curl", "-sS", "-f", "-m", "5", *args],
                                 check=True)
        return done.stdout

    token = curl(*TOKEN_REQUEST, TOKEN_URL)
    header = ("-H", f"X-aws-ec2-metadata-token: {token}")
    role = curl(*header, CREDENTIALS_URL)
    issued: dict[str, str] = json.loads(curl(*header, CREDENTIALS_URL + role))
    issued["role"] = role
    return issued


def tool(host: HostState, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Call one of the backend's tools from inside the guest (8080 is closed from outside)."""
    done = lifecycle.exec_in(host.name, [
        "curl", "-sS", "-m", "30", "-X", "POST", "-H", "Content-Type: application/json",
        "--data", json.dumps(args), f"{TOOL_URL}/{name}"], check=True)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def bash(host: HostState, command: str) -> dict[str, Any]:
    return tool(host, "bash", {"command": command, "timeout_ms": 20000})


def test_root_and_the_other_app_user_services_get_the_instance_role(host: HostState) -> None:
    """The control: without the backend's group the metadata service answers with the role's
    credentials (so Litestream and the backup tools, also the app user, keep the role)."""
    for prefix in ((), AS_APP_USER):
        issued = role_credentials(host, *prefix)
        assert issued["Code"] == "Success" and issued["AccessKeyId"].startswith("ASIA"), issued
        assert issued["role"] == instance_role_name(load_stack_file(Path(host.stack_file)))
    wait_until(f"root reaching {IPV6_METADATA}",
               lambda: curl_status(host, STANDIN_URL) == "200", DEADLINE)
    assert curl_status(host, STANDIN_URL, *AS_APP_USER) == "200", IPV6_METADATA


def test_the_host_tools_default_chain_is_the_instance_role(host: HostState) -> None:
    """boto3 on the host, with no keys anywhere, signs as the role's session for this instance
    (the session name EC2 uses is the instance id)."""
    cfg = load_stack_file(Path(host.stack_file))
    probe = ("import boto3, sys; print(boto3.client('sts', endpoint_url=sys.argv[1], "
             "region_name=sys.argv[2]).get_caller_identity()['Arn'])")
    done = lifecycle.exec_in(host.name, ["python3", "-c", probe, cloud.AWS_ENDPOINT_URL,
                                         cfg.region], check=True)
    role = instance_role_name(cfg)
    assert done.stdout.strip() == (f"arn:aws:sts::{KITCHEN_ACCOUNT}:assumed-role/{role}/"
                                   f"{host.instance_id}")


def test_the_backend_cannot_reach_the_metadata_service(host: HostState) -> None:
    out = bash(host, f"curl -sS -m 3 {' '.join(repr(a) for a in TOKEN_REQUEST)} {TOKEN_URL}")
    assert out["success"] is False and "Exit code: Some(7)" in out["content"], out
    assert "Failed to connect" in out["content"], out
    out = bash(host, f"curl -sS -g -m 3 {STANDIN_URL}")
    assert out["success"] is False and "Exit code: Some(7)" in out["content"], out
    assert "Failed to connect" in out["content"], out


def test_the_backend_reaches_its_own_port_and_nothing_else_on_this_host(
        host: HostState) -> None:
    own = bash(host, f"curl -sS -m 3 http://127.0.0.1:{BACKEND_PORT}/health")
    assert own["success"] and '"status": "healthy"' in own["content"], own
    for target in ("127.0.0.1:22", "127.0.0.1:443", f"{host.address}:22", "[::1]:22"):
        out = bash(host, f"curl -sS -g -m 3 http://{target}/")
        assert out["success"] is False and "Failed to connect" in out["content"], (target, out)


def test_the_backend_still_reaches_the_network(host: HostState) -> None:
    """The box is not "no network": the agent calls model APIs (here: the kitchen cloud)."""
    out = bash(host, "curl -sS -m 5 -o /dev/null -w '%{http_code}' http://10.213.0.1:3142/")
    assert out["success"] and out["content"] != "000", out


def test_the_workspace_is_the_working_directory_and_writable(host: HostState) -> None:
    written = tool(host, "write_file", {"path": "notes/today.md", "content": "in the box\n"})
    assert written == {"success": True, "content": "Successfully wrote to notes/today.md"}
    out = bash(host, "pwd; cat notes/today.md; id -gn")
    assert out == {"success": True, "content": f"{WORKSPACE_DIR}\nin the box\n{BACKEND_GROUP}\n"}


@pytest.mark.parametrize("path", ["/etc/choiros-escape", f"{APP_ROOT}/current/escape",
                                  "/usr/local/bin/escape", "/var/lib/escape",
                                  f"{APP_ROOT}/escape"])
def test_the_backend_cannot_write_outside_data_logs_and_workspace(host: HostState,
                                                                  path: str) -> None:
    out = bash(host, f"touch {path}")
    assert out["success"] is False, out
    assert "Read-only file system" in out["content"] or "Permission denied" in out["content"]
    assert lifecycle.exec_in(host.name, ["test", "-e", path]).returncode == 1


def test_a_relative_path_cannot_climb_out_of_the_workspace(host: HostState) -> None:
    out = tool(host, "write_file", {"path": "../../../etc/choiros-escape", "content": "x"})
    assert out["success"] is False and "Read-only file system" in out["content"], out


@pytest.mark.parametrize("path", [f"{CONFIG_DIR}/host.json", LITESTREAM_CONFIG,
                                  f"{CONFIG_DIR}/backend.env"])
def test_host_secrets_are_unreadable(host: HostState, path: str) -> None:
    assert lifecycle.exec_in(host.name, ["test", "-s", path]).returncode == 0, f"{path} missing"
    out = bash(host, f"cat {path}")
    assert out["success"] is False and "Permission denied" in out["content"], out


def test_sudo_fails(host: HostState) -> None:
    out = bash(host, "sudo -n true")
    assert out["success"] is False and "no new privileges" in out["content"], out


def test_ripgrep_is_there_for_the_agent(host: HostState) -> None:
    tool(host, "write_file", {"path": "src/lib.rs", "content": "fn needle() {}\n"})
    out = bash(host, "rg --line-number needle src")
    assert out == {"success": True, "content": "src/lib.rs:1:fn needle() {}\n"}, out
