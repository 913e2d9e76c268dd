#!/bin/sh
# Test-suite wrapper for the libFuzzer targets (mk/fuzz.mk, tests/fuzz/):
# builds them with clang, replays every kept regression input and seed of
# each target (a test each), then fuzzes each target for FUZZ_SECONDS
# (default 30; 0 skips fuzzing), FUZZ_JOBS at a time (default: the CPUs, at
# most 4; 2 in CI), so the wall time is about ceil(targets / FUZZ_JOBS) times
# FUZZ_SECONDS (a test each: it passes when it ran its time without a
# crash; each writes its own log, reported in order when its batch ends). A crash leaves its
# input under build/fuzz/artifacts/TARGET/ and prints how to replay it; keep
# it in tests/fuzz/regressions/TARGET/ with the fix. FUZZ_TARGETS narrows the
# list. Ends with the line CI reads: "N passed, N failed".
cd "$(dirname "$0")/.." || exit 2
SECONDS_EACH=${FUZZ_SECONDS:-30}
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
[ "$cpus" -gt 4 ] 2>/dev/null && cpus=4
JOBS=${FUZZ_JOBS:-${cpus:-2}}
[ "$JOBS" -ge 1 ] 2>/dev/null || JOBS=1
TARGETS=${FUZZ_TARGETS:-"wire members kv wal config_json config_lua api auth"}
OUT=build/fuzz
mkdir -p "$OUT"
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }

# Inputs larger than libFuzzer's default 4096 bytes where the format needs
# room (a whole HTTP exchange, a data directory); dictionaries of the text
# formats.
max_len() {
  case "$1" in
    api) echo 16384 ;;
    wal) echo 65536 ;;
    *) echo 8192 ;;
  esac
}

dict() {
  case "$1" in
    api) echo tests/fuzz/dict/http.dict ;;
    config_json|members) echo tests/fuzz/dict/json.dict ;;
    config_lua) echo tests/fuzz/dict/lua.dict ;;
  esac
}

if ! command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
  echo "fuzz: ${FUZZ_CC:-clang} not found (apt-get install clang libclang-rt-14-dev)"
  echo "0 passed, 1 failed"
  exit 1
fi
bins=""
for t in $TARGETS; do bins="$bins $OUT/fuzz_$t"; done
if ! make -s --no-print-directory -j"$JOBS" $bins >"$OUT.build.log" 2>&1; then
  cat "$OUT.build.log"
  echo "fuzz: the targets did not build"
  echo "0 passed, 1 failed"
  exit 1
fi

# 1. Replays: every kept crash input and every seed, once (fast).
for t in $TARGETS; do
  files=$(find "tests/fuzz/regressions/$t" "tests/fuzz/corpus/$t" -type f 2>/dev/null | sort)
  if [ -z "$files" ]; then
    pass "$t: replay (no inputs)"
    continue
  fi
  n=$(echo "$files" | wc -l)
  # shellcheck disable=SC2086 # one argument per file; names have no blanks
  if "$OUT/fuzz_$t" -runs=1 $files >"$OUT/replay-$t.log" 2>&1; then
    pass "$t: replay of $n inputs"
  else
    fail "$t: replay of $n inputs"
    grep -E "ERROR|SUMMARY|property|Running:|runtime error" "$OUT/replay-$t.log" | tail -n 8
    echo "     log: $OUT/replay-$t.log"
  fi
done

[ "$SECONDS_EACH" -gt 0 ] 2>/dev/null || {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

# 2. Fuzzing, JOBS targets at a time. New inputs go to build/fuzz/corpus
#    (kept between local runs), never into the seeds in the repository.
run_one() {
  t=$1
  mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
  d=$(dict "$t")
  set -- -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="$OUT/artifacts/$t/"
  [ -n "$d" ] && [ -f "$d" ] && set -- "$@" -dict="$d"
  "$OUT/fuzz_$t" "$@" "$OUT/corpus/$t" "tests/fuzz/corpus/$t" >"$OUT/fuzz-$t.log" 2>&1
  echo $? >"$OUT/fuzz-$t.rc"
}

report() {
  t=$1
  rc=$(cat "$OUT/fuzz-$t.rc" 2>/dev/null || echo 1)
  runs=$(grep -E '^stat::number_of_executed_units' "$OUT/fuzz-$t.log" | awk '{print $2}')
  if [ "$rc" -eq 0 ]; then
    pass "$t: fuzzed ${SECONDS_EACH}s, ${runs:-?} runs"
    return
  fi
  fail "$t: fuzzing stopped (exit $rc) after ${runs:-?} runs"
  grep -E "ERROR|SUMMARY|property|runtime error|Test unit written" "$OUT/fuzz-$t.log" | tail -n 8
  art=$(grep -o "Test unit written to [^ ]*" "$OUT/fuzz-$t.log" | tail -n 1 | sed 's/.* to //')
  echo "     log: $OUT/fuzz-$t.log"
  [ -n "$art" ] && echo "     replay: $OUT/fuzz_$t $art" &&
    echo "     keep it: cp $art tests/fuzz/regressions/$t/"
}

batch=""
count=0
for t in $TARGETS; do
  run_one "$t" &
  batch="$batch $t"
  count=$((count + 1))
  if [ "$count" -ge "$JOBS" ]; then
    wait
    for b in $batch; do report "$b"; done
    batch=""
    count=0
  fi
done
wait
for b in $batch; do report "$b"; done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
