"""Rendering: deterministic, within EC2's limit, and the kitchen differs only where named."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
import yaml
from sample_stack import stack_config

from choiros_infra.targets import KITCHEN
from infra.user_data import aws_user_data, render_for
from provisioning.render import EC2_USER_DATA_LIMIT, Rendering
from provisioning.target import AWS, TARGET_SETTINGS

pytestmark = pytest.mark.unit



def rendered(target: Any = AWS, **overrides: Any) -> Rendering:
    return render_for(stack_config(**overrides), target, "choiros-example-artifacts",
                      "choiros-example-backups")


def test_rendering_is_byte_for_byte_deterministic() -> None:
    first, second = rendered(), rendered()
    assert first.user_data == second.user_data
    assert aws_user_data(stack_config(), "a", "b") == aws_user_data(stack_config(), "a", "b")


def test_user_data_is_gzip_of_the_cloud_config_and_fits_ec2() -> None:
    for target in (AWS, KITCHEN):
        rendering = rendered(target, domain="choir.example.com", acme_email="ops@example.com",
                             secrets=[f"/choiros/example/KEY_{i}" for i in range(20)])
        assert gzip.decompress(rendering.user_data).decode() == rendering.cloud_config
        assert rendering.cloud_config.startswith("#cloud-config\n")
        size = len(rendering.user_data)
        assert size < EC2_USER_DATA_LIMIT, f"{target.name} user-data is {size} bytes gzipped"


def test_every_managed_file_is_written_by_the_user_data_with_its_mode_and_owner() -> None:
    rendering = rendered()
    document = yaml.safe_load(rendering.cloud_config)
    written = {entry["path"]: entry for entry in document["write_files"]}
    assert sorted(written) == sorted(f.path for f in rendering.files)
    for managed in rendering.files:
        entry = written[managed.path]
        assert entry["content"] == managed.content, managed.path
        assert entry["permissions"] == f"{managed.mode:04o}", managed.path
        assert entry["owner"] == f"{managed.owner}:{managed.group}", managed.path


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and all(isinstance(v, dict) and "path" in v for v in value):
        return {f"{prefix}[{v['path']}]": v for v in value}
    return {prefix: value}


# Which parts of the user-data each named target setting may change.
ALLOWED_DIFFERENCES = {
    "apt.http_proxy": "apt_proxy",
    "write_files[/etc/choiros/host.json]": "aws_endpoint",
    "write_files[/etc/caddy/Caddyfile]": "tls_mode",
}


def test_kitchen_and_aws_renderings_differ_only_in_the_named_target_settings() -> None:
    aws = _flatten(yaml.safe_load(rendered(AWS).cloud_config))
    kitchen = _flatten(yaml.safe_load(rendered(KITCHEN).cloud_config))
    differing = sorted(k for k in set(aws) | set(kitchen) if aws.get(k) != kitchen.get(k))
    unexplained = [k for k in differing if k not in ALLOWED_DIFFERENCES]
    assert not unexplained, f"kitchen differs from aws outside the target settings: {unexplained}"
    assert set(ALLOWED_DIFFERENCES.values()) == set(TARGET_SETTINGS)
    assert differing, "the kitchen must differ at least in its apt proxy"


def test_kitchen_host_config_points_the_tools_at_the_kitchen_cloud() -> None:
    import json

    aws = json.loads(rendered(AWS).file("/etc/choiros/host.json").content)
    kitchen = json.loads(rendered(KITCHEN).file("/etc/choiros/host.json").content)
    assert "aws" not in aws, "on EC2 the tools use the instance role and AWS's endpoints"
    assert kitchen.pop("aws")["endpoint_url"] == "http://10.213.0.1:5000"
    assert kitchen == aws


def test_user_data_carries_parameter_names_never_values() -> None:
    rendering = rendered(secrets=["/choiros/example/OPENAI_API_KEY"])
    host = yaml.safe_load(rendering.cloud_config)
    assert "/choiros/example/OPENAI_API_KEY" in rendering.file("/etc/choiros/host.json").content
    assert "OPENAI_API_KEY=" not in rendering.cloud_config
    assert host["ssh_pwauth"] is False and host["disable_root"] is True


def test_choiros_user_is_a_system_user_without_login_or_sudo() -> None:
    users = yaml.safe_load(rendered().cloud_config)["users"]
    assert users[0] == "default"
    choiros = users[1]
    assert choiros["name"] == "choiros" and choiros["system"] is True
    assert choiros["shell"] == "/usr/sbin/nologin"
    assert "sudo" not in choiros and "groups" not in choiros


def test_packages_are_the_runbook_set_without_a_toolchain() -> None:
    packages = set(yaml.safe_load(rendered().cloud_config)["packages"])
    assert {"caddy", "ufw", "fail2ban", "unattended-upgrades", "apt-listchanges", "sqlite3",
            "python3-boto3", "curl", "logrotate", "ca-certificates"} <= packages
    assert not packages & {"build-essential", "gcc", "pkg-config", "libssl-dev", "git", "cargo"}


def test_ubuntu_gets_caddy_from_caddys_own_repository() -> None:
    debian = yaml.safe_load(rendered(os="debian-12").cloud_config)
    ubuntu = yaml.safe_load(rendered(os="ubuntu-22.04").cloud_config)
    assert "apt" not in debian, "Debian 12 has caddy in its own archive"
    source = ubuntu["apt"]["sources"]["caddy-stable"]
    assert "caddy/stable" in source["source"] and source["keyid"]


def test_first_boot_deploys_app_version_only_when_set() -> None:
    with_version = rendered(app_version="2.3.4").file("/usr/local/sbin/choiros-converge")
    without = rendered(app_version=None).file("/usr/local/sbin/choiros-converge")
    assert "/usr/local/bin/choiros-deploy 2.3.4" in with_version.content
    assert "choiros-deploy" not in without.content
