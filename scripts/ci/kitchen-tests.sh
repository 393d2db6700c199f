#!/usr/bin/env bash
# CI (ci.yml, job kitchen, self-hosted Debian 12 as root): the kitchen suite and its JUnit report.
set -euo pipefail
make system-deps setup
.venv/bin/pytest -q -m kitchen -p no:cacheprovider tests/kitchen --junitxml=kitchen-junit.xml
