#!/usr/bin/env bash
# CI (drift.yml, last step): fail the job, naming what found drift or could not check.
# PREVIEW: the pulumi preview step's outcome; CODE: choiros-infra drift's exit code.
set -euo pipefail
echo "::error::drift found or not checked: pulumi preview ${PREVIEW}; choiros-infra drift exit ${CODE:-none} (1 drift, 2 could not run)"
exit 1
