#!/bin/sh
# Runs every test suite and ends with the line CI reads: "N passed, N failed".
# Exits non-zero when anything failed. SUITES="unit integration" narrows it.
cd "$(dirname "$0")/.." || exit 2
passed=0
failed=0
tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
for suite in ${SUITES:-unit integration}; do
  [ -d "tests/$suite" ] || continue
  echo "== $suite"
  lua5.4 /usr/bin/busted --lua=lua5.4 -o TAP "tests/$suite" >"$tap" 2>&1
  rc=$?
  grep -v '^ok ' "$tap"
  p=$(grep '^ok ' "$tap" | grep -vc '# SKIP')
  s=$(grep '^ok ' "$tap" | grep -c '# SKIP')
  f=$(grep -c '^not ok ' "$tap")
  [ "$s" -eq 0 ] || echo "$suite: $s skipped (not counted as passed)"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "$suite: busted exited $rc"; fi
  echo "$suite: $p passed, $f failed"
  passed=$((passed + p))
  failed=$((failed + f))
done
for extra in ${EXTRA_SUITES-sim mutants fuzz chaos python ui install}; do
  [ -x "scripts/suite-$extra.sh" ] || continue
  echo "== $extra"
  out=$(sh "scripts/suite-$extra.sh" 2>&1)
  rc=$?
  echo "$out"
  line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  p=${line%% passed*}
  f=${line#*passed, }
  f=${f%% failed*}
  [ -n "$line" ] || { p=0; f=1; }
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p))
  failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
