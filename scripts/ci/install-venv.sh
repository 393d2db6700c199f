#!/usr/bin/env bash
# CI (drift.yml, release.yml): install the project into .venv, the Pulumi program's virtualenv.
set -euo pipefail
python -m venv .venv
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps -e .
