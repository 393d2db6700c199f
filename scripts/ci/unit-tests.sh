#!/usr/bin/env bash
# CI (ci.yml, job unit): Debian packages and .venv, then the unit suite with its JUnit report.
set -euo pipefail
make system-deps setup
.venv/bin/pytest -q -m unit -p no:cacheprovider --junitxml=unit-junit.xml
