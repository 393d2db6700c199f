#!/usr/bin/env bash
# CI (release.yml): pack the application build (artifact choiros-build: sandbox, dist/) as
# release $VERSION, checked by the host's own validator; its sha256 becomes the job's output.
set -euo pipefail
chmod 0755 build/sandbox
.venv/bin/choiros-infra release pack --sandbox build/sandbox --dist build/dist \
  --version "$VERSION" --out out
echo "sha256=$(cut -d' ' -f1 "out/choiros-$VERSION.tar.gz.sha256")" >> "$GITHUB_OUTPUT"
