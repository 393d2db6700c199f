#!/usr/bin/env bash
# CI (release.yml): publish release $VERSION to staging, deploy it there (the wanted release,
# health, the application checks), then the full verify of the staging host. Needs
# STAGING_HOST and the SSH key and host keys that write-ssh-key.sh wrote.
set -euo pipefail
account_id="$(aws sts get-caller-identity --query Account --output text)"
ssh_dir="$RUNNER_TEMP/choiros-ssh"
access=(--host "ssh://admin@$STAGING_HOST" --ssh-key "$ssh_dir/id"
        --known-hosts "$ssh_dir/known_hosts" --account-id "$account_id")
.venv/bin/choiros-infra release publish "out/choiros-$VERSION.tar.gz" --stack staging \
  --account-id "$account_id"
.venv/bin/choiros-infra deploy "$VERSION" --stack staging "${access[@]}"
.venv/bin/choiros-infra verify --stack staging --target aws "${access[@]}"
