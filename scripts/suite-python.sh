#!/bin/sh
# The Python client SDK's tests (tests/python, unittest, stdlib only) against
# real agents; ends with "N passed, N failed" counted from unittest's result.
# Needs bin/qcluster (make all). PYTHON picks the interpreter.
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "$PY not found"
  echo "0 passed, 1 failed"
  exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
PYTHONPATH=python "$PY" -m unittest -v tests/python/test_client.py >"$out" 2>&1
rc=$?
cat "$out"
ran=$(sed -n 's/^Ran \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$out" | tail -n 1)
count() { sed -n "s/^\\(OK\\|FAILED\\) (.*$1=\\([0-9][0-9]*\\).*/\\2/p" "$out" | tail -n 1; }
failures=$(count failures)
errors=$(count errors)
skipped=$(count skipped)
failed=$((${failures:-0} + ${errors:-0}))
passed=$((${ran:-0} - failed - ${skipped:-0}))
# no "Ran" line: unittest never got to run (an import error, a crash)
if [ -z "$ran" ] || { [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; }; then failed=$((failed + 1)); fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
