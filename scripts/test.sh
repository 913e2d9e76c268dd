#!/bin/sh
# Runs every test suite and ends with the line CI reads: "N passed, N failed".
# Exits non-zero when anything failed. SUITES="unit integration" narrows it.
cd "$(dirname "$0")/.." || exit 2
passed=0
failed=0
# Spec files run TEST_JOBS at a time (default: the CPUs, at most 4), the
# biggest first: integration specs mostly wait on real timeouts.
jobs=${TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -le 4 ] || jobs=4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for suite in ${SUITES:-unit integration}; do
  [ -d "tests/$suite" ] || continue
  echo "== $suite"
  start=$(date +%s)
  rm -f "$work"/*
  # shellcheck disable=SC2016
  wc -l tests/"$suite"/*_spec.lua | grep -v ' total$' | sort -rn | awk '{print $2}' |
    xargs -P "$jobs" -I{} sh -c 'out="$1/$(basename "$2").tap"
      lua5.4 /usr/bin/busted --lua=lua5.4 -o TAP "$2" >"$out" 2>&1 || echo "$2" >>"$1/busted-failed"' \
      sh "$work" {}
  cat "$work"/*.tap >"$work/all" 2>/dev/null
  grep -v '^ok ' "$work/all" | grep -v '^1\.\.[0-9]*$'
  p=$(grep '^ok ' "$work/all" | grep -vc '# SKIP')
  s=$(grep '^ok ' "$work/all" | grep -c '# SKIP')
  f=$(grep -c '^not ok ' "$work/all")
  [ "$s" -eq 0 ] || echo "$suite: $s skipped (not counted as passed)"
  if [ -s "$work/busted-failed" ] && [ "$f" -eq 0 ]; then
    f=1
    echo "$suite: busted failed for $(tr '\n' ' ' <"$work/busted-failed")"
  fi
  echo "$suite: $p passed, $f failed ($(($(date +%s) - start)) s)"
  passed=$((passed + p))
  failed=$((failed + f))
done
for extra in ${EXTRA_SUITES-sim mutants fuzz chaos python ui install tsan}; do
  [ -x "scripts/suite-$extra.sh" ] || continue
  echo "== $extra"
  start=$(date +%s)
  out=$(sh "scripts/suite-$extra.sh" 2>&1)
  rc=$?
  echo "$out"
  echo "$extra: $(($(date +%s) - start)) s"
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
