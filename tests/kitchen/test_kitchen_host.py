"""One converged kitchen host: converge happened, SSH with the meta-data key works, the
cloud is reachable, status speaks JSON, a reboot keeps files and comes back running."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from pathlib import Path

import pytest
from guest_kit import RUNCMD_MARKER, TEST_PACKAGE, WRITTEN_FILE, WRITTEN_TEXT, guest
from typer.testing import CliRunner

from choiros_infra.kitchen_cmd import kitchen_app
from kitchen import cloud, lifecycle
from kitchen.errors import UsageError
from kitchen.ssh_access import ssh_argv
from kitchen.state import PUBLIC_KEYS, HostState

pytestmark = pytest.mark.kitchen


def test_cloud_init_converged_the_user_data(main_host: HostState) -> None:
    assert main_host.state == "ready"
    status = guest(main_host, "cloud-init", "status", "--long")
    assert "status: done" in status.stdout
    assert guest(main_host, "cat", WRITTEN_FILE).stdout == WRITTEN_TEXT
    assert guest(main_host, "cat", RUNCMD_MARKER).stdout.strip() == "converged"
    installed = guest(main_host, "dpkg-query", "-W", "-f=${Status}", TEST_PACKAGE)
    assert installed.stdout == "install ok installed"
    assert guest(main_host, "systemctl", "is-system-running").stdout.strip() == "running"


def test_guest_looks_like_a_debian_cloud_host(main_host: HostState) -> None:
    assert guest(main_host, "hostname").stdout.strip() == main_host.hostname
    assert main_host.hostname in guest(main_host, "cat", "/etc/hosts").stdout
    assert len(guest(main_host, "cat", "/etc/machine-id").stdout.strip()) == 32
    assert guest(main_host, "systemctl", "is-active", "systemd-networkd").stdout.strip() != \
        "active"
    assert "PRETTY_NAME=\"Debian GNU/Linux 12" in guest(main_host, "cat",
                                                        "/etc/os-release").stdout


def test_meta_data_key_lets_admin_in_with_passwordless_sudo(main_host: HostState) -> None:
    with open(main_host.ssh_key + ".pub") as handle:
        public_key = handle.read().split()[1]
    keys = guest(main_host, "cat", "/home/admin/.ssh/authorized_keys").stdout
    assert public_key in keys

    # A new connection with Debian 12's OpenSSH client, strict about the host key recorded at
    # converge, offering only the meta-data key.
    login = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(main_host.ssh_port), "-i", main_host.ssh_key,
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={main_host.known_hosts}", "-o", "ConnectTimeout=10",
         f"{main_host.ssh_user}@{main_host.address}", "id -un && sudo -n id -un"],
        capture_output=True, text=True, timeout=30, check=False)
    assert login.returncode == 0, login.stderr
    assert login.stdout.split() == ["admin", "root"]


def test_ssh_command_line_runs_a_command(main_host: HostState) -> None:
    result = subprocess.run(ssh_argv(main_host, ["cat", WRITTEN_FILE]),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == WRITTEN_TEXT


def test_guest_reaches_the_cloud_but_not_the_internet(main_host: HostState) -> None:
    cloud.seed_cloud(["kt-bucket"], {"/kt/secret": "s3cr3t"})
    ssm = cloud.aws_client("ssm")
    value = ssm.get_parameter(Name="/kt/secret", WithDecryption=True)["Parameter"]["Value"]
    assert value == "s3cr3t"
    probe = (
        "import http.client, socket, sys\n"
        "c = http.client.HTTPConnection(sys.argv[1], sys.argv[2], timeout=5)\n"
        "c.request('GET', '/moto-api/')\n"
        "print(c.getresponse().status)\n"
        "try:\n"
        "    socket.create_connection(('151.101.2.132', 80), 3)\n"
        "    print('internet')\n"
        "except OSError:\n"
        "    print('isolated')\n"
    )
    info = cloud.cloud_info()
    out = guest(main_host, "python3", "-c", probe, info.address, str(info.aws_port)).stdout
    assert out.split() == ["200", "isolated"]


def test_cloud_serves_s3_ssm_sts_and_cloudwatch(kitchen_cloud: cloud.CloudInfo) -> None:
    cloud.seed_cloud(["kt-seeded"], {"/kt/app/API_KEY": "v1"},
                     objects={("kt-seeded", "releases/x.tar.gz"): b"tarball"})
    cloud.seed_cloud(["kt-seeded"], {"/kt/app/API_KEY": "v2"})  # idempotent, overwrites
    cloud.seed_cloud(["kt-seeded-eu"], region="eu-west-1")
    s3 = cloud.aws_client("s3")
    body = s3.get_object(Bucket="kt-seeded", Key="releases/x.tar.gz")["Body"].read()
    assert body == b"tarball"
    parameter = cloud.aws_client("ssm").get_parameter(Name="/kt/app/API_KEY",
                                                      WithDecryption=True)["Parameter"]
    assert (parameter["Type"], parameter["Value"]) == ("SecureString", "v2")
    assert cloud.aws_client("sts").get_caller_identity()["Account"].isdigit()
    cw = cloud.aws_client("cloudwatch")
    namespace = f"KT-{secrets.token_hex(3)}"  # the cloud outlives test runs: start empty
    cw.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "up", "Value": 1.0}])
    assert {m["MetricName"] for m in cw.list_metrics(Namespace=namespace)["Metrics"]} == {"up"}
    env = kitchen_cloud.aws_env()
    assert env["AWS_ENDPOINT_URL"] == "http://10.213.0.1:5000"
    assert env["AWS_ACCESS_KEY_ID"] == cloud.admin_keys().access_key_id


def test_cloud_listens_only_on_the_kitchen_address(kitchen_cloud: cloud.CloudInfo) -> None:
    sockets = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True,
                             check=True).stdout
    for port in (cloud.APT_PROXY_PORT, cloud.AWS_PORT, cloud.METADATA_PORT):
        local = [line.split()[3] for line in sockets.splitlines()
                 if line.split()[3].endswith(f":{port}")]
        assert local == [f"{cloud.CLOUD_ADDRESS}:{port}"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cloud.AWS_PORT), 1)


def test_status_json_has_the_documented_keys(main_host: HostState) -> None:
    result = CliRunner().invoke(kitchen_app, ["status", "--name", main_host.name, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == set(PUBLIC_KEYS)
    assert data["address"] == main_host.address
    assert data["state"] == "ready"
    assert Path(data["known_hosts"]).is_file()
    listed = CliRunner().invoke(kitchen_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    everything = json.loads(listed.stdout)
    assert data in everything["hosts"]
    assert everything["cloud"]["state"] == "running"


def test_same_name_is_refused_and_leaves_the_host_alone(main_host: HostState) -> None:
    with pytest.raises(UsageError) as caught:
        lifecycle.up(main_host.name, b"#cloud-config\n")
    assert caught.value.exit_code == 2
    assert "destroy" in (caught.value.fix or "")
    assert lifecycle.status(main_host.name).state == "ready"


def test_reboot_keeps_files_and_comes_back_running(main_host: HostState) -> None:
    guest(main_host, "sh", "-c", "echo kept > /var/tmp/survives-reboot")
    before = lifecycle.status(main_host.name)
    after = lifecycle.reboot(main_host.name)
    assert after.state == "ready"
    assert after.pids["init"] != before.pids["init"]
    assert guest(after, "cat", "/var/tmp/survives-reboot").stdout.strip() == "kept"
    assert guest(after, "systemctl", "is-system-running").stdout.strip() == "running"
    # Same instance: per-instance modules did not run again, host keys were kept.
    result = subprocess.run(ssh_argv(after, ["true"]), capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
