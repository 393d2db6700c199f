#!/usr/bin/env bash
# CI (drift.yml): host and runbook drift of stack $STACK (choiros-infra drift). Its exit code
# goes to the step output `code` (0 none, 1 drift, 2 could not run) for the last step to judge,
# so that the report and the JUnit are uploaded first. Needs STACK and CHOIROS_HOST.
set -euo pipefail
account_id="$(aws sts get-caller-identity --query Account --output text)"
set +e
.venv/bin/choiros-infra drift --stack-file "Pulumi.$STACK.yaml" --stack "$STACK" \
  --target aws --host "ssh://admin@$CHOIROS_HOST" \
  --ssh-key "$RUNNER_TEMP/choiros-ssh/id" \
  --known-hosts "$RUNNER_TEMP/choiros-ssh/known_hosts" \
  --account-id "$account_id" \
  --report drift-report.md --junit drift-junit.xml
echo "code=$?" >> "$GITHUB_OUTPUT"
