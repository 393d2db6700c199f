"""The rendered files, checked by the tools that will read them on the host.

cloud-init, Caddy, systemd, sshd and shellcheck each judge their own file, so a typo fails here
in milliseconds instead of on a booting host. `.ci/run` installs these tools from Debian.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sample_stack import stack_config

from choiros_infra.targets import kitchen
from infra.user_data import render_for
from provisioning.artifacts import LITESTREAM
from provisioning.render import CONVERGE_SCRIPT, Rendering
from provisioning.spec import (
    BACKEND_FIREWALL_RULES,
    BACKEND_GROUP,
    BACKEND_PATHS,
    BACKEND_UNIT,
    FRESHNESS_TIMER,
    FRESHNESS_UNIT,
    HEALTHCHECK_TIMER,
    HEALTHCHECK_UNIT,
    LITESTREAM_CONFIG,
    LITESTREAM_UNIT,
    RESTORE_UNIT,
    SECRETS_UNIT,
)
from provisioning.target import AWS

pytestmark = pytest.mark.unit
KITCHEN = kitchen()

ALL_UNITS = (BACKEND_UNIT, SECRETS_UNIT, RESTORE_UNIT, LITESTREAM_UNIT, FRESHNESS_UNIT,
             FRESHNESS_TIMER, HEALTHCHECK_UNIT, HEALTHCHECK_TIMER)
MAX_EXPOSURE = 2.0  # `systemd-analyze security`, the runbook's target for the backend
TLS_VARIANTS: dict[str, dict[str, Any]] = {
    "bare-ip-off": {},
    "domain-acme": {"domain": "choir.example.com", "acme_email": "ops@example.com"},
    "internal": {"tls_mode": "internal"},
}


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps`")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def rendering(target: Any = AWS, **overrides: Any) -> Rendering:
    return render_for(stack_config(**overrides), target, "choiros-example-artifacts",
                      "choiros-example-backups")


@pytest.mark.parametrize("target", [AWS, KITCHEN], ids=["aws", "kitchen"])
def test_cloud_init_accepts_the_user_data(tmp_path: Path, target: Any) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text(rendering(target).cloud_config)
    result = run(tool("cloud-init"), "schema", "--config-file", str(user_data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def _adapt(tmp_path: Path, caddyfile: str) -> dict[str, Any]:
    path = tmp_path / "Caddyfile"
    path.write_text(caddyfile)
    validate = run(tool("caddy"), "validate", "--config", str(path), "--adapter", "caddyfile")
    assert validate.returncode == 0, validate.stderr[-2000:]
    adapted = run(tool("caddy"), "adapt", "--config", str(path), "--adapter", "caddyfile")
    assert adapted.returncode == 0, adapted.stderr[-2000:]
    assert "[WARNING]" not in adapted.stderr or "formatted" in adapted.stderr, adapted.stderr
    config: dict[str, Any] = json.loads(adapted.stdout)
    return config


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("variant", sorted(TLS_VARIANTS))
def test_caddy_routes_backend_paths_and_serves_the_spa(tmp_path: Path, variant: str) -> None:
    config = _adapt(tmp_path, rendering(**TLS_VARIANTS[variant]).file(
        "/etc/caddy/Caddyfile").content)
    assert config["admin"]["disabled"] is True
    nodes = list(_walk(config))
    backend_routes = [n for n in nodes if n.get("match") and any(
        m.get("path") == list(BACKEND_PATHS) for m in n["match"])]
    assert backend_routes, "no route matches the backend paths"
    dials = [u["dial"] for n in _walk(backend_routes) for u in n.get("upstreams", [])]
    assert dials == ["127.0.0.1:8080"]
    rewrites = [n for n in nodes if n.get("handler") == "rewrite"]
    roots = [n["root"] for n in nodes if n.get("handler") == "vars" and "root" in n]
    assert roots == ["/opt/choiros/current/dist"]
    assert [n for n in nodes if n.get("handler") == "file_server"], "no file_server"
    try_files = [n["file"]["try_files"] for n in nodes if "try_files" in n.get("file", {})]
    assert try_files == [["{http.request.uri.path}", "/index.html"]], "no SPA fallback"
    assert [r["uri"] for r in rewrites] == ["{http.matchers.file.relative}"]
    encodings = [n for n in nodes if n.get("handler") == "encode"]
    assert set(encodings[0]["encodings"]) == {"gzip", "zstd"}


@pytest.mark.parametrize("variant", sorted(TLS_VARIANTS))
def test_caddy_sets_security_headers_and_hsts_only_with_tls(tmp_path: Path, variant: str) -> None:
    config = _adapt(tmp_path, rendering(**TLS_VARIANTS[variant]).file(
        "/etc/caddy/Caddyfile").content)
    headers = [n["response"] for n in _walk(config) if n.get("handler") == "headers"]
    assert len(headers) == 1
    response = headers[0]
    assert response["set"]["X-Content-Type-Options"] == ["nosniff"]
    assert response["set"]["X-Frame-Options"] == ["DENY"]
    assert "Referrer-Policy" in response["set"]
    assert response["delete"] == ["Server"]
    hsts = response["set"].get("Strict-Transport-Security")
    if variant == "bare-ip-off":
        assert hsts is None, "HSTS on plain HTTP would lock browsers out"
    else:
        assert hsts and hsts[0].startswith("max-age=31536000")


def test_caddy_tls_modes(tmp_path: Path) -> None:
    off = _adapt(tmp_path, rendering().file("/etc/caddy/Caddyfile").content)
    server = off["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == [":80"]
    assert server["automatic_https"]["disable"] is True
    internal = _adapt(tmp_path, rendering(KITCHEN, tls_mode="internal").file(
        "/etc/caddy/Caddyfile").content)
    issuers = [i["module"] for n in _walk(internal) for i in n.get("issuers", [])]
    assert issuers == ["internal"]
    assert internal["apps"]["http"]["servers"]["srv0"]["listen"] == [":443"]
    acme = _adapt(tmp_path, rendering(**TLS_VARIANTS["domain-acme"]).file(
        "/etc/caddy/Caddyfile").content)
    hosts = [m["host"] for n in _walk(acme) for m in n.get("match", []) if "host" in m]
    assert hosts == [["choir.example.com"]]


def test_caddy_access_log_rolls_like_the_runbook(tmp_path: Path) -> None:
    config = _adapt(tmp_path, rendering().file("/etc/caddy/Caddyfile").content)
    writers = [n["writer"] for n in _walk(config) if "writer" in n]
    assert writers == [{"filename": "/opt/choiros/logs/caddy.log", "output": "file",
                        "roll_keep": 5, "roll_keep_days": 7, "roll_size_mb": 10}]


def test_systemd_accepts_every_unit_and_drop_in(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = [f for f in rendering().files if f.path.startswith("/etc/systemd/")]
    assert {Path(f.path).name for f in units} >= {BACKEND_UNIT, SECRETS_UNIT, "hardening.conf"}
    for managed in units:
        target = root / managed.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(managed.content)
    for executable in ("opt/choiros/current/sandbox", "usr/local/sbin/choiros-secrets",
                       "usr/local/sbin/choiros-retry",
                       "usr/local/bin/litestream", "usr/local/sbin/choiros-restore-at-boot",
                       "usr/local/sbin/choiros-backup-freshness",
                       "usr/local/sbin/choiros-healthcheck", "usr/sbin/nft"):
        path = root / executable
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    result = run(tool("systemd-analyze"), "verify", f"--root={root}", *ALL_UNITS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"systemd complained:\n{result.stderr}"


# The secrets unit runs as root to write a root-owned file; the runbook's target is for these.
@pytest.mark.parametrize("unit", [BACKEND_UNIT, RESTORE_UNIT, LITESTREAM_UNIT, FRESHNESS_UNIT,
                                  HEALTHCHECK_UNIT])
def test_every_choiros_service_is_sandboxed_to_exposure_2_or_less(tmp_path: Path,
                                                                   unit: str) -> None:
    for managed in rendering(KITCHEN).files:
        if managed.path.startswith("/etc/systemd/"):
            target = tmp_path / managed.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(managed.content)
    result = run(tool("systemd-analyze"), "security", "--offline=yes", f"--root={tmp_path}",
                 "--no-pager", unit)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout[-3000:]


@pytest.mark.parametrize("target", [AWS, KITCHEN], ids=["aws", "kitchen"])
def test_litestream_accepts_its_config(tmp_path: Path, target: Any) -> None:
    config = tmp_path / "litestream.yml"
    config.write_text(rendering(target).file(LITESTREAM_CONFIG).content)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    result = subprocess.run([str(LITESTREAM.local_file()), "databases", "-config", str(config),
                             "-no-expand-env"], capture_output=True, text=True, timeout=60,
                            check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert "/opt/choiros/data/events.db" in result.stdout and "s3" in result.stdout, result.stdout


def test_sshd_accepts_the_drop_in_and_it_wins(tmp_path: Path) -> None:
    drop_in = tmp_path / "sshd_config.d" / "10-choiros.conf"
    drop_in.parent.mkdir()
    drop_in.write_text(rendering().file("/etc/ssh/sshd_config.d/10-choiros.conf").content)
    host_key = tmp_path / "host_key"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
    main = tmp_path / "sshd_config"
    # Debian's sshd_config includes the drop-ins first, then says the opposite of ours.
    main.write_text(f"Include {drop_in.parent}/*.conf\nHostKey {host_key}\n"
                    "PermitRootLogin yes\nPasswordAuthentication yes\nMaxAuthTries 6\n")
    sshd = tool("sshd")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd refuses to parse without it
    assert run(sshd, "-t", "-f", str(main)).returncode == 0
    effective = run(sshd, "-T", "-f", str(main), "-C", "user=x,host=x,addr=127.0.0.1")
    assert effective.returncode == 0, effective.stderr
    lines = set(effective.stdout.splitlines())
    assert {"permitrootlogin no", "passwordauthentication no",
            "kbdinteractiveauthentication no", "maxauthtries 3"} <= lines


def test_ssh_audit_flags_none_of_the_algorithms_sshd_offers() -> None:
    """ssh-audit (the pinned 3.9.0 of requirements.txt, as bench/hardening_audit.py runs it)
    judges each algorithm the drop-in lets sshd offer (and the host key types it keeps): no
    fail and no warn. The one key exchange is the post-quantum hybrid, which OpenSSH clients
    from 8.5 on (Debian 12's is 9.2) negotiate."""
    content = rendering().file("/etc/ssh/sshd_config.d/10-choiros.conf").content
    directives = dict(line.split(" ", 1) for line in content.splitlines()
                      if line and not line.startswith("#"))
    kex = directives["KexAlgorithms"].split(",")
    offered = [*kex, *directives["Ciphers"].split(","),
               *directives["MACs"].split(","), "ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]
    assert "/etc/ssh/ssh_host_ecdsa_key" not in content  # only ed25519 and RSA host keys
    ssh_audit = Path(sys.executable).with_name("ssh-audit")
    assert ssh_audit.is_file(), "ssh-audit is not in .venv: run `make setup`"
    result = run(str(ssh_audit), "--no-colors", f"--lookup={','.join(offered)}")
    flagged = re.findall(r"^\((?:kex|enc|mac|key)\) (\S+)\s+-- \[(?:fail|warn)\]", result.stdout,
                         re.M)
    assert kex == ["sntrup761x25519-sha512@openssh.com"]
    assert flagged == [], result.stdout
    assert result.stdout.count("-- [info]") == len(offered), result.stdout


def test_shellcheck_passes_the_converge_script(tmp_path: Path) -> None:
    script = tmp_path / "converge.sh"
    script.write_text(rendering().file(CONVERGE_SCRIPT).content)
    result = run(tool("shellcheck"), str(script))
    assert result.returncode == 0, result.stdout


def test_nft_accepts_the_backend_firewall(tmp_path: Path) -> None:
    """`nft --check` in a network namespace of its own (nothing is loaded anywhere). nft resolves
    the group's name when it reads the rules, and this machine has no such group: root stands
    in for it."""
    content = rendering().file(BACKEND_FIREWALL_RULES).content
    assert content.count(f'meta skgid "{BACKEND_GROUP}"') == 1
    rules = tmp_path / "backend-firewall.nft"
    rules.write_text(content.replace(f'"{BACKEND_GROUP}"', '"root"'))
    result = run("unshare", "--net", tool("nft"), "--check", "--file", str(rules))
    assert result.returncode == 0, result.stderr


def test_logrotate_accepts_the_config(tmp_path: Path) -> None:
    config = tmp_path / "choiros"
    config.write_text(rendering().file("/etc/logrotate.d/choiros").content)
    result = run(tool("logrotate"), "--debug", "--state", str(tmp_path / "state"), str(config))
    assert result.returncode == 0, result.stderr
    assert not [ln for ln in result.stderr.splitlines() if ln.startswith("error")], result.stderr
    assert "rotating pattern: /opt/choiros/logs/backend.log" in result.stderr
