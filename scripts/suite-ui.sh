#!/bin/sh
# Test-suite wrapper: the status page (GET /ui) in headless Chromium against
# a live three-node cluster (tests/ui), counted by scripts/test.sh. Needs
# chromium and python3-websocket (scripts/deps.sh).
cd "$(dirname "$0")/.." || exit 2
if ! make -s --no-print-directory bin/qcluster; then
  echo "ui: build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
SUITES=ui EXTRA_SUITES='' exec sh scripts/test.sh
