#!/bin/sh
# The threaded cases of build/node_test again under ThreadSanitizer
# (mk/tsan.mk): a case passes when it does and TSan reported nothing
# (tests/c/tsan.supp says what is not reported, and why).
# Ends with "N passed, N failed" for scripts/test.sh.
cd "$(dirname "$0")/.." || exit 2
root=$(pwd)
make --no-print-directory -s build/tsan/node_test >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
passed=0
failed=0
for c in ${TSAN_CASES:-thread stuck trio spread fork}; do
  dir=$(mktemp -d /tmp/qc-tsan-XXXXXX)
  # below the ephemeral range, as tests/helpers/agents.lua picks them
  port=$((20001 + $(od -An -N2 -tu2 /dev/urandom) % 230 * 50))
  # exitcode 66: a report, told apart from the case's own failure (1)
  (cd "$dir" && TSAN_OPTIONS="halt_on_error=0 exitcode=66 suppressions=$root/tests/c/tsan.supp" \
    timeout -s KILL 120 "$root/build/tsan/node_test" "$c" "$dir" "$port" >out 2>log)
  rc=$?
  if [ "$rc" -eq 0 ] && grep -q "^ok $c" "$dir/out"; then
    passed=$((passed + 1))
    echo "ok tsan $c"
  else
    failed=$((failed + 1))
    echo "not ok tsan $c (exit $rc)"
    grep '^FAIL' "$dir/out"
    # each report: its summary line and the first frames of both sides
    grep -A14 '^WARNING: ThreadSanitizer' "$dir/log" | head -n 60
  fi
  rm -rf "$dir"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
