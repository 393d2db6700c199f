#!/usr/bin/env bash
# CI (drift.yml, release.yml): the SSH key and host key from the job's secrets, 0600 under
# $RUNNER_TEMP (a later step removes them, always). Needs CHOIROS_SSH_KEY and
# CHOIROS_KNOWN_HOSTS.
set -euo pipefail
umask 077
mkdir -p "$RUNNER_TEMP/choiros-ssh"
printf '%s\n' "$CHOIROS_SSH_KEY" > "$RUNNER_TEMP/choiros-ssh/id"
printf '%s\n' "$CHOIROS_KNOWN_HOSTS" > "$RUNNER_TEMP/choiros-ssh/known_hosts"
chmod 600 "$RUNNER_TEMP/choiros-ssh/id" "$RUNNER_TEMP/choiros-ssh/known_hosts"
