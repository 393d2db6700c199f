"""The host tools as installed: scripts, --help, configuration errors and size budget."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from module_loading import host_tool

from provisioning.render import HOST_TOOLS

pytestmark = pytest.mark.unit

TOOLS = Path(__file__).resolve().parents[2] / "provisioning" / "host_tools"
SCRIPTS = ["choiros-deploy", "choiros-rollback", "choiros-secrets"]


tool = host_tool("choiros_tool")


def run(script: str, *args: str, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOLS / script), *args], capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_the_exit_codes(script: str) -> None:
    done = run(script, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: {script} ")
    assert "--config FILE" in done.stdout
    assert done.stdout.rstrip().endswith(tool.EXIT_CODES)
    for code in range(5):
        assert f"\n  {code}  " in done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_small_executable_wrappers(script: str) -> None:
    path = TOOLS / script
    text = path.read_text()
    assert text.startswith("#!/usr/bin/python3\n")
    assert os.access(path, os.X_OK)
    assert 'sys.path.insert(1, "/usr/local/lib/choiros")' in text
    assert len(text) < 400


def test_scripts_import_the_library_from_usr_local_lib(tmp_path: Path) -> None:
    """Installed, the scripts sit in /usr/local/bin and find the library in /usr/local/lib."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    for library in TOOLS.glob("choiros_*.py"):
        shutil.copy(library, tmp_path / "lib")
    script = (TOOLS / "choiros-rollback").read_text().replace(
        "/usr/local/lib/choiros", str(tmp_path / "lib"))
    (tmp_path / "bin" / "choiros-rollback").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "bin" / "choiros-rollback"), "-h"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_host_tool_file_is_installed_on_the_host() -> None:
    """The libraries import each other as siblings: one left out of render's HOST_TOOLS would
    be missing only on the host."""
    shipped = {source for _, source in HOST_TOOLS}
    assert shipped == {p.name for p in TOOLS.iterdir() if p.is_file()}


def test_only_the_small_bootstrap_goes_into_the_user_data() -> None:
    """The tools travel through the artifacts bucket; the user-data (16 KB gzip-compressed on
    EC2) carries only the bootstrap that fetches them."""
    bootstrap = (TOOLS / "choiros-fetch-artifacts").read_bytes()
    assert len(gzip.compress(bootstrap, 9)) < 2_000


@pytest.mark.parametrize(("config", "why"), [
    (None, "cannot read config"),
    ("{not json", "cannot read config"),
    ("[]", "cannot read config"),
    ('{"app_root": "/x"}', "needs region"),
    ('{"region": "eu-west-1", "app_root": "relative"}', "an absolute app_root"),
    ('{"region": "eu-west-1", "keep_releases": 1}', "keep_releases >= 2"),
    ('{"region": "eu-west-1", "health_timeout_seconds": "soon"}', "cannot read config"),
    ('{"region": "eu-west-1", "health_url": "file:///etc/passwd"}', "http(s) health_url"),
    ('{"region": "eu-west-1", "aws": "yes"}', "cannot read config"),
])
@pytest.mark.parametrize("script", SCRIPTS)
def test_configuration_errors_exit_2(tmp_path: Path, script: str, config: str | None,
                                     why: str) -> None:
    path = tmp_path / "host.json"
    if config is not None:
        path.write_text(config)
    done = run(script, *(["1.0.0"] if script == "choiros-deploy" else []),
               env={"CHOIROS_HOST_CONFIG": str(path)})
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Error: ")
    assert why in lines[0]
    assert lines[1].startswith(f"Try: fix {path}")


def test_config_defaults_and_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"region": "eu-west-1", "backups_bucket": "b",
                                "backup_prefix": "hosts/x/", "secrets": ["/a/B"],
                                "expected_tables": ["events"], "unknown_key": 1}))
    cfg = tool.load_config(str(path))
    assert cfg == tool.Config(region="eu-west-1", secrets=("/a/B",), backups_bucket="b",
                            backup_prefix="hosts/x/", expected_tables=("events",))
    assert cfg.database == Path("/opt/choiros/data/events.db")
    assert (cfg.app_root, cfg.env_file, cfg.keep_releases) == (
        Path("/opt/choiros"), Path("/etc/choiros/backend.env"), 5)


def test_usage_errors_from_argparse_exit_2() -> None:
    done = run("choiros-deploy")
    assert done.returncode == 2
    assert "one of the arguments VERSION|PATH --wanted --status is required" in done.stderr


DEBIAN_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="needs the system python3")
def test_a_missing_boto3_is_a_clear_error(tmp_path: Path) -> None:
    if subprocess.run([str(DEBIAN_PYTHON), "-c", "import boto3"], check=False,
                      capture_output=True).returncode == 0:
        pytest.skip("the system python3 has boto3")
    config = tmp_path / "host.json"
    config.write_text(json.dumps({"region": "eu-west-1", "secrets": ["/choiros/test/KEY"],
                                  "env_file": str(tmp_path / "backend.env")}))
    done = subprocess.run([str(DEBIAN_PYTHON), str(TOOLS / "choiros-secrets"), "--config",
                           str(config)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: boto3 is missing (No module named 'boto3')\n")
    assert "Try: apt-get install python3-boto3" in done.stderr


def test_a_missing_app_root_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "host.json"
    config.write_text(json.dumps({"region": "eu-west-1", "app_root": str(tmp_path / "none")}))
    for script, args in (("choiros-deploy", ["1.0.0"]), ("choiros-rollback", [])):
        done = run(script, *args, "--config", str(config))
        assert done.returncode == 2
        assert done.stderr.startswith(f"Error: {tmp_path / 'none'} is missing or not writable")
