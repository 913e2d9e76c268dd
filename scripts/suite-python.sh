#!/bin/sh
# The Python package's tests (tests/python, unittest): the HTTP client
# against real agents, and the embedded node (examples/python included).
# Twice over: from the source tree (PYTHONPATH=python, library found in
# build/), then installed into a fresh venv with `pip install ./python` and
# run with that venv's python against build/libqcluster.so.0. The venv is
# Debian's python3 with its site packages (aiohttp; setuptools and wheel for
# an offline build, hence --no-build-isolation). Ends with "N passed,
# N failed" counted from unittest's results. Needs `make all`.
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PY=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
total_passed=0
total_failed=0

# run LABEL PYTHON [ENV...]: the tests under that interpreter; adds its counts.
run() {
  label=$1 py=$2
  shift 2
  out="$tmp/$label.out"
  echo "== $label"
  env "$@" PYTHONDONTWRITEBYTECODE=1 "$py" -m unittest -v tests/python/test_client.py \
    tests/python/test_embedded.py >"$out" 2>&1
  rc=$?
  # The nodes' own log lines are noise here, unless something failed.
  if [ "$rc" -eq 0 ]; then grep -E '(\.\.\. |^Ran |^OK)' "$out"; else cat "$out"; fi
  ran=$(sed -n 's/^Ran \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$out" | tail -n 1)
  count() { sed -n "s/^\\(OK\\|FAILED\\) (.*$1=\\([0-9][0-9]*\\).*/\\2/p" "$out" | tail -n 1; }
  failures=$(count failures)
  errors=$(count errors)
  skipped=$(count skipped)
  failed=$((${failures:-0} + ${errors:-0}))
  passed=$((${ran:-0} - failed - ${skipped:-0}))
  # no "Ran" line: unittest never got to run (an import error, a crash)
  if [ -z "$ran" ] || { [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; }; then failed=$((failed + 1)); fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
}

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "$PY not found"
  echo "0 passed, 1 failed"
  exit 1
fi
run tree "$PY" PYTHONPATH=python

echo "== venv: pip install --no-build-isolation ./python"
if "$PY" -m venv --system-site-packages "$tmp/venv" >"$tmp/venv.log" 2>&1 &&
  "$tmp/venv/bin/pip" install -q --no-build-isolation --no-index --no-cache-dir ./python \
    >>"$tmp/venv.log" 2>&1 &&
  # the package came from the venv, not from the tree
  (cd "$tmp" && "$tmp/venv/bin/python" -c 'import qcluster, sys; sys.exit(not qcluster.__file__.startswith(sys.argv[1]))' "$tmp/venv/"); then
  run venv "$tmp/venv/bin/python" QC_PY_INSTALLED=1 QCLUSTER_LIB="$ROOT/build/libqcluster.so.0"
else
  cat "$tmp/venv.log"
  echo "the venv install failed"
  total_failed=$((total_failed + 1))
fi
# pip builds in python/build and python/*.egg-info: not the tree's
rm -rf python/build python/*.egg-info
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
