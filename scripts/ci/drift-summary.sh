#!/usr/bin/env bash
# CI (drift.yml): the drift report, when there is one, in the job summary.
set -euo pipefail
if [ -f drift-report.md ]; then cat drift-report.md >> "$GITHUB_STEP_SUMMARY"; fi
