"""infra/config.py: every key's bad values are refused, naming the key and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sample_stack import BASE, ED25519_KEY, stack_config

from infra.config import SETTINGS, ConfigError, load_stack_file, parse_config

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "Pulumi.example.yaml"
RSA_BODY = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"  # embeds "ssh-rsa"
ED25519_BODY = ED25519_KEY.split()[1]
# Real keys from ssh-keygen: EC2's ImportKeyPair takes ed25519 and RSA of 2048 bits or more.
RSA_1024 = (
    "ssh-rsa "
    "AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7XnkzLPQ9DQh9nEaNksk2VgG7YlWR/hzvc0eoMODW8RxL1Tbc"
    "pK22JcgbkYmRLrR5Hh0YVdyoTpuOSNcSZf58H1yhIFWyoTUUg5g7FaFApPKq/dZLbVo0nOXotZrMURqQ"
    "iOVp1BoKTtYSEIy2HS1P364ADYs3hCM6WEzI/FRcYQ=="
)
RSA_2048 = (
    "ssh-rsa "
    "AAAAB3NzaC1yc2EAAAADAQABAAABAQDJ/kM1oOUYJZhRUK5nZESOPNSxXuyPcy1Ya0F0xwg2dOrw8jxO"
    "bGffPJDdSeK+b+9gLdlZp4ruyzBgzHz9KFjUkU1FYHckfIgo+rvYSgKGCPSXuLm5TXJho0rVXcE2DlJp"
    "3PtsqAR/WE4bROWlJelpT3+FkAtRkK1SnOxle5g96qMEOdUaXzkcPio84gBeFT7A/AoxHqsX5ODp6WlD"
    "AE3FzQyXXdkYw+EyCEnlQwMRkmpKINvt4s8ztIvoIoUT8zRm7iqeC5SAhRDEUqsj01S/QPmTFg7Yine7"
    "mO5Idsdbp1ObjICxCd9SvACaQg8/1faW3Tyq22sme2KdNhViqffr"
)
ECDSA = (
    "ecdsa-sha2-nistp256 "
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOUtlqNw8dy/FbFZ1WVaalsd7yW2"
    "A3q35hQIGcYHGCKm+5qtLPBK8RaSOvkH592HTcrHFZa25Yragw8baPQCUK0="
)

# (key, bad value, extra keys the case needs): each must be refused as a ConfigError on `key`.
BAD: list[tuple[str, Any, dict[str, Any]]] = [
    ("region", "", {}),
    ("region", "eu-west", {}),
    ("region", "EU-WEST-1", {}),
    ("region", "eu-west-9", {}),
    ("region", "xx-east-1", {}),
    ("region", 5, {}),
    ("instance_type", "c5", {}),
    ("instance_type", "large", {}),
    ("instance_type", "C5.LARGE", {}),
    ("instance_type", "t4g.small", {}),
    ("instance_type", "c7gn.large", {}),
    ("os", "debian-11", {}),
    ("os", "ubuntu-22.04", {}),
    ("ami", "ami-123", {}),
    ("secrets_kms_key", "alias/aws/ssm", {}),
    ("secrets_kms_key", "arn:aws:kms:eu-west-1:123:key/abc", {}),
    ("ami", "debian-12", {}),
    ("subnet_id", "vpc-0123456789abcdef0", {}),
    ("subnet_id", "subnet-xyz", {}),
    ("os", "windows", {}),
    ("root_volume_gb", 19, {}),
    ("root_volume_gb", 16385, {}),
    ("root_volume_gb", "twenty", {}),
    ("root_volume_gb", True, {}),
    ("admin_cidrs", [], {}),
    ("admin_cidrs", "203.0.113.7/32", {}),
    ("admin_cidrs", ["203.0.113.7/24"], {}),
    ("admin_cidrs", ["not-a-network"], {}),
    ("admin_cidrs", ["0.0.0.0/0"], {}),
    ("admin_cidrs", ["::/0"], {}),
    ("admin_cidrs", '["203.0.113.7/32"', {}),
    ("allow_world_ssh", "yes", {}),
    ("allow_world_ssh", 1, {}),
    ("ssh_public_key", "", {}),
    ("ssh_public_key", "ssh-ed25519", {}),
    ("ssh_public_key", "ssh-ed25519 not*base64", {}),
    ("ssh_public_key", f"ssh-ed25519 {RSA_BODY}", {}),
    ("ssh_public_key", f"ssh-dss {ED25519_BODY}", {}),
    ("ssh_public_key", "-----BEGIN OPENSSH PRIVATE KEY-----", {}),
    ("ssh_public_key", RSA_1024, {}),
    ("ssh_public_key", ECDSA, {}),
    ("ssh_public_key", "sk-ssh-ed25519@openssh.com AAAA", {}),
    ("domain", "localhost", {"acme_email": "ops@example.com"}),
    ("domain", "https://choir.example.com", {"acme_email": "ops@example.com"}),
    ("domain", "-bad.example.com", {"acme_email": "ops@example.com"}),
    ("acme_email", "not-an-address", {"domain": "choir.example.com"}),
    ("acme_email", None, {"domain": "choir.example.com"}),
    ("tls_mode", "strict", {}),
    ("tls_mode", "acme", {}),
    ("alert_email", "ops@", {}),
    ("alert_email", "ops", {}),
    ("backup_retention_days", 0, {}),
    ("backup_retention_days", 3651, {}),
    ("backup_retention_days", "a month", {}),
    ("secrets", "OPENAI_API_KEY=sk-123", {}),
    ("secrets", ["/choiros/example/bad-name"], {}),
    ("secrets", ["aws/reserved/KEY"], {}),
    ("secrets", ["/choiros/example/KEY", "/choiros/example/KEY"], {}),
    ("secrets", ["/choiros/example/KEY value"], {}),
    ("tags", "owner=ops", {}),
    ("tags", ["owner"], {}),
    ("tags", {"project": "other"}, {}),
    ("tags", {"aws:reserved": "x"}, {}),
    ("tags", {"owner": "x" * 257}, {}),
    ("tags", {"owner": "ops;rm"}, {}),
    ("tags", {"owner": "a,b"}, {}),
    ("tags", {"owner": "<ops>"}, {}),
    ("tags", {f"t{i}": "x" for i in range(7)}, {}),
    ("backup_sync_interval_seconds", 0, {}),
    ("backup_sync_interval_seconds", 301, {}),
    ("backup_sync_interval_seconds", "1s", {}),
    ("termination_protection", "maybe", {}),
    ("keep_releases", 1, {}),
    ("keep_releases", 101, {}),
    ("keep_releases", "all", {}),
    ("alarm_disk_percent", 49, {}),
    ("alarm_disk_percent", 100, {}),
    ("alarm_memory_percent", 100, {}),
    ("alarm_memory_percent", "high", {}),
    ("alarm_unhealthy_minutes", 0, {}),
    ("alarm_unhealthy_minutes", 31, {}),
]


def values(key: str, bad: Any, extra: dict[str, Any]) -> dict[str, Any]:
    merged = {**BASE, **extra, key: bad}
    return {k: v for k, v in merged.items() if v is not None}


@pytest.mark.parametrize(("key", "bad", "extra"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_a_bad_value_is_refused_naming_the_key_and_a_fix(
    key: str, bad: Any, extra: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(values(key, bad, extra), "example")
    error = refused.value
    assert error.key == key, f"{key}={bad!r} was blamed on {error.key}"
    first, second = error.render().split("\n")
    assert first.startswith(f"Error: choiros:{key} = "), first
    assert second.startswith("Try: ") and len(second) > len("Try: "), second


def test_every_key_has_bad_values_in_the_table() -> None:
    assert {key for key, _, _ in BAD} == set(SETTINGS)


@pytest.mark.parametrize("key", ["region", "admin_cidrs", "ssh_public_key"])
def test_required_keys_are_required(key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({k: v for k, v in BASE.items() if k != key}, "example")
    assert refused.value.key == key
    assert "Try: pulumi config set " in refused.value.render()
    assert f"choiros:{key}" in refused.value.fix


def test_unknown_keys_and_bad_stack_names_are_refused() -> None:
    with pytest.raises(ConfigError) as unknown:
        parse_config({**BASE, "colour": "blue"}, "example")
    assert unknown.value.key == "colour"
    assert "one of:" in unknown.value.fix
    with pytest.raises(ConfigError) as stack:
        parse_config(BASE, "Production")
    assert stack.value.key == "stack"


@pytest.mark.parametrize("world", [["0.0.0.0/0"], ["::/0"], ["203.0.113.7/32", "::/0"]])
def test_world_ssh_is_refused_unless_allowed(world: list[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        stack_config(admin_cidrs=world)
    assert refused.value.key == "admin_cidrs"
    assert "allow_world_ssh" in refused.value.fix
    assert stack_config(admin_cidrs=world, allow_world_ssh=True).admin_cidrs == tuple(world)


def test_acme_email_is_required_with_a_domain_and_tls_follows_the_domain() -> None:
    with pytest.raises(ConfigError) as refused:
        stack_config(domain="choir.example.com")
    assert refused.value.key == "acme_email"
    cfg = stack_config(domain="Choir.Example.com.", acme_email="ops@example.com")
    assert (cfg.domain, cfg.tls_mode) == ("choir.example.com", "acme")
    assert stack_config().tls_mode == "off"
    assert stack_config(tls_mode="internal").tls_mode == "internal"


def test_values_as_pulumi_passes_them_parse_like_yaml_values() -> None:
    as_text = {
        "region": "eu-west-1",
        "admin_cidrs": json.dumps(["203.0.113.7/32", "2001:db8::/48"]),
        "ssh_public_key": ED25519_KEY,
        "root_volume_gb": "40",
        "allow_world_ssh": "false",
        "termination_protection": "true",
        "secrets": json.dumps(["/choiros/example/API_KEY"]),
        "tags": json.dumps({"owner": "ops"}),
        "domain": "",
    }
    cfg = parse_config(as_text, "example")
    assert cfg.admin_cidrs == ("203.0.113.7/32", "2001:db8::/48")
    assert (cfg.root_volume_gb, cfg.allow_world_ssh, cfg.termination_protection) == (
        40, False, True
    )
    assert cfg.secrets == ("/choiros/example/API_KEY",)
    assert cfg.tags == (("owner", "ops"),)
    assert cfg.domain is None


def test_the_defaults_are_the_runbooks_host() -> None:
    cfg = stack_config()
    assert (cfg.instance_type, cfg.os, cfg.root_volume_gb) == ("c5.large", "debian-12", 20)
    assert (cfg.backup_retention_days, cfg.keep_releases) == (30, 5)
    assert cfg.backup_sync_interval_seconds == 1, "RPO of 5 s or better by default"
    assert not cfg.allow_world_ssh and not cfg.termination_protection
    assert cfg.name == "choiros-example"
    assert cfg.backup_prefix == "hosts/example/"


def test_the_example_stack_file_parses() -> None:
    cfg = load_stack_file(EXAMPLE)
    assert cfg.name == "choiros-example"
    assert cfg.alert_email == "ops@example.com"
    assert dict(cfg.tags) == {"owner": "ops", "cost-center": "choir"}
    assert cfg.all_tags["managed-by"] == "pulumi"


def test_ec2_importable_ssh_keys_are_accepted() -> None:
    assert stack_config(ssh_public_key=RSA_2048).ssh_public_key == RSA_2048
    assert stack_config(ssh_public_key=ED25519_KEY).ssh_public_key == ED25519_KEY


@pytest.mark.parametrize(("key", "problem"), [(RSA_1024, "1024-bit RSA"),
                                              (ECDSA, "ecdsa-sha2-nistp256 key")])
def test_keys_ec2_refuses_are_named_for_what_they_are(key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        stack_config(ssh_public_key=key)
    assert problem in refused.value.problem
    assert "ed25519" in refused.value.fix


@pytest.mark.parametrize("region", ["eu-west-1", "us-gov-west-1", "cn-north-1", "ap-southeast-5"])
def test_regions_come_from_botocores_partition_data(region: str) -> None:
    assert stack_config(region=region).region == region


def test_tag_values_aws_accepts_pass() -> None:
    tags = {"owner": "ops team", "cost-center": "choir/2025:a+b=c@d_e.f", "empty": ""}
    assert dict(stack_config(tags=tags).tags) == tags


@pytest.mark.parametrize("key", ["admin_cidrs", "secrets"])
def test_list_keys_hint_the_cli_path_syntax(key: str) -> None:
    from infra.config import set_hint

    assert set_hint(key) == f"pulumi config set --path 'choiros:{key}[0]' ..."
    with pytest.raises(ConfigError) as refused:
        parse_config({k: v for k, v in BASE.items() if k != "admin_cidrs"}, "example")
    assert "--path 'choiros:admin_cidrs[0]'" in refused.value.fix


def write_stack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Pulumi.example.yaml"
    path.write_text(text)
    return path


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "config:\n  choiros:region: eu-west-1\n  choiros:os: [debian\n"
                                 "  choiros:tags: {a: b}\n")
    with pytest.raises(ConfigError) as refused:
        load_stack_file(path)
    assert refused.value.key == "stack-file"
    line = int(str(refused.value.value).rsplit(":", 1)[1])
    assert str(refused.value.value).startswith(f"{path}:") and line in (3, 4)
    assert f"line {line} of {path}" in refused.value.fix


@pytest.mark.parametrize(("text", "problem"), [
    ("", "is empty"),
    ("# only comments\n", "is empty"),
    ("choiros:region: eu-west-1\nconfig:\n  choiros:os: debian-12\n",
     "has keys outside config: (choiros:region)"),
    ("choiros:region: eu-west-1\n", "has keys outside config: (choiros:region)"),
    ("- a\n", "is not a mapping"),
])
def test_empty_files_and_keys_outside_config_are_named(tmp_path: Path, text: str,
                                                       problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_stack_file(write_stack(tmp_path, text))
    assert problem in refused.value.problem


def test_pulumis_own_top_level_keys_are_allowed(tmp_path: Path) -> None:
    text = EXAMPLE.read_text() + "encryptionsalt: v1:abc\nsecretsprovider: passphrase\n"
    assert load_stack_file(write_stack(tmp_path, text)).region == "eu-west-1"


def test_a_secure_value_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    text = EXAMPLE.read_text() + "  choiros:alert_email:\n    secure: v1:AAAbbb==\n"
    text = text.replace("  choiros:alert_email: ops@example.com\n", "")
    with pytest.raises(ConfigError) as refused:
        load_stack_file(write_stack(tmp_path, text))
    error = refused.value
    assert error.key == "alert_email" and "encrypted (secure:)" in error.problem
    assert "plain text" in error.fix and "SSM" in error.fix
    assert "v1:AAAbbb" not in error.render()


@pytest.mark.parametrize("aws_region", ["us-east-1", "eu-central-1"])
def test_an_aws_region_that_disagrees_is_refused(tmp_path: Path, aws_region: str) -> None:
    text = EXAMPLE.read_text() + f"  aws:region: {aws_region}\n"
    with pytest.raises(ConfigError) as refused:
        load_stack_file(write_stack(tmp_path, text))
    assert refused.value.key == "region" and aws_region in refused.value.problem


def test_an_aws_region_that_agrees_is_accepted(tmp_path: Path) -> None:
    text = EXAMPLE.read_text() + "  aws:region: eu-west-1\n"
    assert load_stack_file(write_stack(tmp_path, text)).region == "eu-west-1"


INTEGERS = [(key, s.bounds) for key, s in SETTINGS.items() if s.kind == "integer"]


@pytest.mark.parametrize(("key", "bounds"), INTEGERS, ids=[k for k, _ in INTEGERS])
def test_integer_keys_take_exactly_their_tables_bounds(key: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    assert getattr(stack_config(**{key: low}), key) == low
    assert getattr(stack_config(**{key: str(high)}), key) == high
    for outside in (low - 1, high + 1):
        with pytest.raises(ConfigError) as refused:
            stack_config(**{key: outside})
        assert refused.value.problem == f"must be between {low} and {high}"
        assert refused.value.fix == SETTINGS[key].fix
