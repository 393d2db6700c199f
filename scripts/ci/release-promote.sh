#!/usr/bin/env bash
# CI (release.yml): promote release $VERSION from staging to production: the bytes staging
# runs and verified (STAGING_SHA256, from the staging job), never a rebuild. Needs
# STAGING_HOST, CHOIROS_HOST and the SSH key and host keys that write-ssh-key.sh wrote.
set -euo pipefail
account_id="$(aws sts get-caller-identity --query Account --output text)"
ssh_dir="$RUNNER_TEMP/choiros-ssh"
echo "promoting $VERSION, sha256 $STAGING_SHA256"
.venv/bin/choiros-infra promote "$VERSION" --from staging --to production \
  --from-host "ssh://admin@$STAGING_HOST" --to-host "ssh://admin@$CHOIROS_HOST" \
  --ssh-key "$ssh_dir/id" --known-hosts "$ssh_dir/known_hosts" --account-id "$account_id"
