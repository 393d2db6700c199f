"""Rendering: deterministic, within EC2's limit, and the kitchen differs only where named."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from module_loading import host_tool
from sample_stack import stack_config

from choiros_infra.targets import kitchen as kitchen_target
from infra.user_data import aws_user_data, render_for
from provisioning.artifacts import LITESTREAM, ArtifactError
from provisioning.render import (
    ARTIFACTS_LIST,
    CONVERGE_SCRIPT,
    EC2_USER_DATA_LIMIT,
    FETCH_ARTIFACTS,
    HOST_TOOLS,
    RETRY,
    Rendering,
    published_artifacts,
)
from provisioning.spec import BACKEND_UNIT, LITESTREAM_UNIT, METRICS, RESTORE_UNIT
from provisioning.target import AWS, TARGET_SETTINGS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
KITCHEN = kitchen_target()


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
        # Room to grow (a quarter of the limit): tools travel as artifacts, so only
        # configuration counts here.
        assert size < EC2_USER_DATA_LIMIT * 3 // 4, f"{target.name} user-data is {size} bytes"


def _patch_deflate(monkeypatch: pytest.MonkeyPatch, implementation: str) -> list[str]:
    """Swap the process's zlib deflate for another implementation's, as another operator's
    Python build would have it; the list records every call made to it."""
    if implementation == "zlib-ng":
        from zlib_ng import zlib_ng

        compress, compressobj = zlib_ng.compress, zlib_ng.compressobj
    else:
        from isal import isal_zlib

        def isal_level(level: int) -> int:
            """ISA-L has levels 0..3; zlib's 9 (best) is its 3."""
            return isal_zlib.ISAL_DEFAULT_COMPRESSION if level < 0 else min(level, 3)

        def compress(data: bytes, level: int = -1, wbits: int = 15) -> bytes:
            return isal_zlib.compress(data, isal_level(level), wbits)

        def compressobj(level: int = -1, *args: Any, **kwargs: Any) -> Any:
            return isal_zlib.compressobj(isal_level(level), *args, **kwargs)

    calls: list[str] = []

    def recorded(name: str, function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(zlib, "compress", recorded("compress", compress))
    monkeypatch.setattr(zlib, "compressobj", recorded("compressobj", compressobj))
    return calls


@pytest.mark.parametrize("implementation", ["zlib-ng", "isal"])
def test_user_data_bytes_do_not_depend_on_the_deflate_implementation(
        monkeypatch: pytest.MonkeyPatch, implementation: str) -> None:
    standard = rendered().user_data
    with monkeypatch.context() as patched:
        deflate_calls = _patch_deflate(patched, implementation)
        other = rendered().user_data
    assert deflate_calls == [], "rendering used the process's deflate"
    assert other == standard


def test_user_data_header_names_no_operating_system() -> None:
    data = rendered().user_data
    # RFC 1952: no flags, mtime 0, OS 255 ("unknown") on every machine.
    assert data[:10] == bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255])


@pytest.mark.parametrize("size", [0, 1, 2, 3, 258, 259, 40000, 70000])
def test_deterministic_gzip_round_trips_through_every_inflate(size: int) -> None:
    from isal import igzip
    from zlib_ng import gzip_ng

    from provisioning.deterministic_gzip import compress

    text = rendered().cloud_config.encode()
    data = (text * (size // max(len(text), 1) + 1))[:size // 2] + bytes(
        (i * 7919) % 251 for i in range(size - size // 2))
    encoded = compress(data)
    assert gzip.decompress(encoded) == data
    assert gzip_ng.decompress(encoded) == data
    assert igzip.decompress(encoded) == data


def test_every_managed_file_is_written_by_the_user_data_or_fetched_by_sha256() -> None:
    rendering = rendered()
    document = yaml.safe_load(rendering.cloud_config)
    written = {entry["path"]: entry for entry in document["write_files"]}
    assert sorted(written) == sorted(f.path for f in rendering.inline_files)
    for managed in rendering.inline_files:
        entry = written[managed.path]
        assert entry["content"] == managed.content, managed.path
        assert entry["permissions"] == f"{managed.mode:04o}", managed.path
        assert entry["owner"] == f"{managed.owner}:{managed.group}", managed.path
    fetched = {e["path"]: e for e in json.loads(written[ARTIFACTS_LIST]["content"])}
    manifest = {e["path"]: e for e in rendering.manifest()}
    assert set(written) | set(fetched) == set(manifest), "a managed file is never delivered"
    assert not set(written) & set(fetched)
    for path, entry in fetched.items():
        assert entry["sha256"] == manifest[path]["sha256"], path
        assert (entry["mode"], entry["owner"]) == (manifest[path]["mode"],
                                                   manifest[path]["owner"]), path
        assert manifest[path]["delivery"] == "artifact", path
    assert fetched[LITESTREAM.path]["key"] == "tools/litestream/0.5.17/litestream"
    assert fetched[LITESTREAM.path]["sha256"] == LITESTREAM.sha256


def test_the_user_data_runs_the_artifact_bootstrap_first_and_carries_no_tool_source() -> None:
    rendering = rendered()
    converge = rendering.file(CONVERGE_SCRIPT).content
    commands = [ln for ln in converge.splitlines()
                if ln and not ln.startswith(("#", "echo", "trap", "on_exit", "}", " "))]
    assert commands[:2] == ["set -eu", f'{RETRY} --final "2 4" "fetching the artifacts" -- '
                            f"{FETCH_ARTIFACTS}"], commands[:3]
    assert rendering.file(FETCH_ARTIFACTS).delivery == "inline"
    assert rendering.file(RETRY).delivery == "inline"
    for path, _ in HOST_TOOLS:
        if path not in (FETCH_ARTIFACTS, RETRY):
            assert rendering.file(path).delivery == "artifact", path
            assert rendering.file(path).content not in rendering.cloud_config, path


@pytest.mark.parametrize("target", [AWS, KITCHEN], ids=["aws", "kitchen"])
def test_what_pulumi_and_the_kitchen_publish_is_what_every_rendering_fetches(target: Any) -> None:
    published = {a.key: a for a in published_artifacts()}
    for overrides in ({}, {"domain": "choir.example.com", "acme_email": "ops@example.com"},
                      {"backup_sync_interval_seconds": 5}):
        rendering = rendered(target, **overrides)
        assert {a.key: a for a in rendering.artifacts} == published
    for artifact in published.values():
        if artifact.text is not None:
            assert artifact.key == f"host-tools/{artifact.sha256}/{artifact.path.rsplit('/')[-1]}"


def test_the_pinned_litestream_is_the_installed_package_and_the_requirement() -> None:
    path = LITESTREAM.local_file()  # checks version and sha256
    assert path.stat().st_mode & 0o111
    requirements = (ROOT / "requirements.txt").read_text().split()
    assert f"{LITESTREAM.distribution}=={LITESTREAM.version}" in requirements
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LITESTREAM.sha256


def test_a_pinned_binary_that_is_not_the_pinned_bytes_is_refused() -> None:
    wrong = dataclasses.replace(LITESTREAM, sha256="0" * 64)
    with pytest.raises(ArtifactError, match="pinned 0000"):
        wrong.local_file()
    missing = dataclasses.replace(LITESTREAM, distribution="no-such-distribution-here")
    with pytest.raises(ArtifactError, match="is not installed"):
        missing.local_file()


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
    "write_files[/etc/choiros/litestream.yml]": "aws_endpoint",
    "write_files[/etc/caddy/Caddyfile]": "tls_mode",
    "write_files[/etc/fail2ban/jail.local]": "admin_cidrs",
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


@pytest.mark.parametrize(("stack_mode", "kitchen_mode"), [
    ("off", "off"), ("internal", "internal"), ("acme", "internal")])
def test_the_kitchen_converges_the_stacks_tls_mode_mapping_only_acme(stack_mode: str,
                                                                     kitchen_mode: str) -> None:
    overrides: dict[str, Any] = {"tls_mode": stack_mode}
    if stack_mode == "acme":
        overrides |= {"domain": "choir.example.com", "acme_email": "ops@example.com"}
    aws, kitchen = rendered(AWS, **overrides), rendered(KITCHEN, **overrides)
    caddy = {t: r.file("/etc/caddy/Caddyfile").content for t, r in
             (("aws", aws), ("kitchen", kitchen))}
    health = {t: json.loads(r.file("/etc/choiros/host.json").content)["site_health_url"]
              for t, r in (("aws", aws), ("kitchen", kitchen))}
    assert ("tls internal" in caddy["kitchen"]) == (kitchen_mode == "internal")
    assert ("auto_https off" in caddy["kitchen"]) == (kitchen_mode == "off")
    assert health["kitchen"] == ("http" if kitchen_mode == "off" else "https") + \
        "://127.0.0.1/health"
    if stack_mode != "acme":
        assert caddy["kitchen"] == caddy["aws"] and health["kitchen"] == health["aws"]
    else:
        assert "email ops@example.com" in caddy["aws"] and "tls internal" not in caddy["aws"]


def test_fail2ban_never_bans_the_admin_networks() -> None:
    """On EC2 the stack's admin_cidrs (the security group's SSH sources); in the kitchen the
    machine running it, which is where its operator logs in from."""
    def ignored(target: Any) -> list[str]:
        jail = rendered(target, admin_cidrs=["203.0.113.7/32", "2001:db8::/48"]).file(
            "/etc/fail2ban/jail.local").content
        (line,) = [ln for ln in jail.splitlines() if ln.startswith("ignoreip")]
        return line.split("=", 1)[1].split()

    assert ignored(AWS) == ["127.0.0.1/8", "::1", "203.0.113.7/32", "2001:db8::/48"]
    assert ignored(KITCHEN) == ["127.0.0.1/8", "::1", "10.213.0.0/16"]


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


def test_caddy_comes_from_debians_own_archive() -> None:
    assert "apt" not in yaml.safe_load(rendered(os="debian-12").cloud_config)


def test_first_boot_deploys_the_stacks_wanted_release_not_a_version_in_user_data() -> None:
    converge = rendered().file("/usr/local/sbin/choiros-converge").content
    assert "/usr/local/bin/choiros-deploy --wanted" in converge
    assert not re.search(r"choiros-deploy [0-9]", converge)
    assert "version" not in json.loads(rendered().file("/etc/choiros/host.json").content)


def litestream_config(target: Any = AWS, **overrides: Any) -> Any:
    return yaml.safe_load(rendered(target, **overrides).file("/etc/choiros/litestream.yml").content)


def test_litestream_replicates_the_event_store_under_the_hosts_prefix() -> None:
    config = litestream_config()
    (db,) = config["dbs"]
    assert db["path"] == "/opt/choiros/data/events.db"
    assert db["replica"] == {"type": "s3", "bucket": "choiros-example-backups",
                             "path": "hosts/example", "region": "eu-west-1",
                             "sync-interval": "1s"}, "on EC2: the instance role, AWS's endpoint"
    assert config["snapshot"] == {"interval": "24h", "retention": "720h"}
    faster = litestream_config(backup_sync_interval_seconds=5, backup_retention_days=7)
    assert faster["dbs"][0]["replica"]["sync-interval"] == "5s"
    assert faster["snapshot"]["retention"] == "168h", "point in time as far back as the bucket"


def test_kitchen_litestream_talks_to_the_kitchen_cloud_as_the_instance_role() -> None:
    """Only the endpoint differs: no keys are rendered on either target, so Litestream's SDK
    takes the instance role's credentials from the metadata service, as on EC2."""
    replica = litestream_config(KITCHEN)["dbs"][0]["replica"]
    assert replica["endpoint"] == "http://10.213.0.1:5000"
    assert replica["force-path-style"] is True
    assert not {"access-key-id", "secret-access-key"} & set(replica), replica
    assert json.loads(rendered(KITCHEN).file("/etc/choiros/host.json").content)["aws"] == {
        "endpoint_url": "http://10.213.0.1:5000"}
    managed = rendered(KITCHEN).file("/etc/choiros/litestream.yml")
    assert (managed.mode, managed.owner, managed.group) == (0o640, "root", "choiros")


def test_no_database_work_before_the_restore_at_boot() -> None:
    rendering = rendered()

    def unit(name: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in rendering.file(f"/etc/systemd/system/{name}").content.splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                out.setdefault(key, []).extend(value.split())
        return out

    backend, litestream = unit(BACKEND_UNIT), unit(LITESTREAM_UNIT)
    restore = unit(RESTORE_UNIT)
    for dependent in (backend, litestream):
        assert RESTORE_UNIT in dependent["Requires"] and RESTORE_UNIT in dependent["After"]
    assert LITESTREAM_UNIT in backend["Wants"] and BACKEND_UNIT in litestream["Before"]
    assert BACKEND_UNIT not in litestream.get("After", []), "Litestream must stop after it"
    assert {BACKEND_UNIT, LITESTREAM_UNIT} <= set(restore["Before"])
    assert restore["Type"] == ["oneshot"] and restore["User"] == ["choiros"]
    assert litestream["Restart"] == ["always"] and litestream["User"] == ["choiros"]
    assert litestream["ReadWritePaths"] == ["/opt/choiros/data"]


def test_host_config_names_the_database_its_tables_and_the_metric() -> None:
    host = json.loads(rendered().file("/etc/choiros/host.json").content)
    assert host["database"] == "/opt/choiros/data/events.db"
    assert host["expected_tables"] == ["events"], "the stand-in app's table (sandbox.py)"
    assert (host["metrics_namespace"], host["backup_age_metric"]) == ("ChoirOS",
                                                                       "BackupAgeSeconds")
    assert host["hostname"] == "choiros-example", "the alarm's Host dimension"
    assert host["backups_bucket"] == "choiros-example-backups"
    assert host["backup_prefix"] == "hosts/example/"


def test_huffman_codes_are_complete_and_no_longer_than_the_limit() -> None:
    from provisioning.deterministic_gzip import code_lengths, compress

    fibonacci = [1, 1]
    while len(fibonacci) < 30:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    for freqs, limit in ((fibonacci, 15), (fibonacci[:19], 7), ([0, 5, 0], 15), ([0] * 4, 7)):
        lengths = code_lengths(freqs, limit)
        assert max(lengths) <= limit, lengths
        assert sum(2.0 ** -n for n in lengths if n) == 1.0, f"incomplete code {lengths}"
        assert all(n for f, n in zip(freqs, lengths, strict=True) if f), "a used symbol lost"
    # Skewed data that needs the length limit still round-trips.
    data = b"".join(bytes([i]) * fibonacci[i] for i in range(26))
    assert gzip.decompress(compress(data)) == data


def test_host_json_keys_are_exactly_the_host_tools_config_fields() -> None:
    """load_config ignores unknown keys, so a key render writes that Config lacks (or the
    reverse) would silently fall back to a default on the host."""
    config = host_tool("choiros_tool").Config
    fields = {f.name for f in dataclasses.fields(config)}
    for target, extra in ((KITCHEN, set()), (AWS, {"aws"})):
        keys = set(json.loads(rendered(target).file("/etc/choiros/host.json").content))
        assert keys | extra == fields, (
            f"{target.name}: rendered but not in Config: {sorted(keys - fields)}; "
            f"in Config but not rendered: {sorted(fields - keys - extra)}")


def test_host_json_carries_every_metric_name_of_the_host_contract() -> None:
    host = json.loads(rendered().file("/etc/choiros/host.json").content)
    assert {key: host[key] for key in ("metrics_namespace", "metrics_dimension",
                                       "healthy_metric", "disk_metric", "memory_metric",
                                       "backup_age_metric")} == {
        "metrics_namespace": METRICS.namespace, "metrics_dimension": METRICS.dimension,
        "healthy_metric": METRICS.healthy, "disk_metric": METRICS.disk_used,
        "memory_metric": METRICS.memory_used, "backup_age_metric": METRICS.backup_age}


def test_rendering_for_aws_does_not_import_the_kitchen() -> None:
    script = ("import sys; from choiros_infra.targets import TargetChoice, rendering_for; "
              "sys.path.insert(0, 'tests/unit'); from sample_stack import stack_config; "
              "rendering_for(stack_config(), TargetChoice.aws, '111122223333'); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kitchen'))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"render --target aws imported {done.stdout.strip()}"
