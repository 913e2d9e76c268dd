#!/bin/sh
# Test-suite wrapper for the libFuzzer targets (mk/fuzz.mk, tests/fuzz/).
#
#   sh scripts/suite-fuzz.sh [gate|replay|explore]
#
# Builds the targets with clang, replays every kept regression input and
# seed of each target (a test each), then:
#   gate (the default; make test): fuzzes each target with a fixed seed
#     (FUZZ_SEED, default 1) for a fixed number of runs (runs() below, about
#     30 s each on an idle core; FUZZ_RUNS sets one number for all), from
#     the repository's inputs only (tests/fuzz/corpus and regressions; new
#     ones go to build/fuzz/gate/TARGET, emptied first), without address
#     randomisation and without comparison-guided mutation (both made runs
#     of one seed differ), so a run of the same code tries the same inputs:
#     exactly for wire, members, kv, wal and raft, and for auth but the
#     count of its redials (a fixed random source, deadlines that decide
#     nothing but where its model says so); config_json and config_lua
#     (liblua seeds its string hashes from the clock) and api (a 1 us
#     request timeout) have some runs that depend on the clock;
#   replay (make fuzz-regress): the replays only;
#   explore (make fuzz, make explore): fuzzes each target for FUZZ_SECONDS
#     (default 30) with a fresh random seed, the corpus kept between local
#     runs in build/fuzz/corpus/TARGET.
# Targets run FUZZ_JOBS at a time (default: the CPUs, at most 4), each
# writing its own log, reported in order when its batch ends. A crash
# leaves its input under build/fuzz/artifacts/TARGET/ and prints how to
# replay it and where to keep it (tests/fuzz/regressions/TARGET/, with the
# fix). FUZZ_TARGETS narrows the list. Ends with the line CI reads:
# "N passed, N failed".
cd "$(dirname "$0")/.." || exit 2
MODE=${1:-gate}
case "$MODE" in
  gate | replay | explore) ;;
  *)
    echo "usage: $0 [gate|replay|explore]"
    exit 2
    ;;
esac
SECONDS_EACH=${FUZZ_SECONDS:-30}
SEED=${FUZZ_SEED:-1}
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
[ "$cpus" -gt 4 ] 2>/dev/null && cpus=4
JOBS=${FUZZ_JOBS:-${cpus:-2}}
[ "$JOBS" -ge 1 ] 2>/dev/null || JOBS=1
TARGETS=${FUZZ_TARGETS:-"wire members kv wal config_json config_lua api auth raft"}
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
    config_json | members) echo tests/fuzz/dict/json.dict ;;
    config_lua) echo tests/fuzz/dict/lua.dict ;;
  esac
}

# The gate's runs of each target: 25 to 55 s on one core of a busy
# machine each (runs per second measured with -seed=1 from the
# repository's corpus), about 2 minutes for the nine, two at a time. A count, not a
# time: a time bound would try a different number of inputs on a busy
# machine.
runs() {
  if [ -n "$FUZZ_RUNS" ]; then
    echo "$FUZZ_RUNS"
    return
  fi
  case "$1" in
    wire) echo 300000 ;;
    members) echo 500000 ;;
    kv) echo 350000 ;;
    wal) echo 100000 ;;
    config_json) echo 60000 ;;
    config_lua) echo 30000 ;;
    api) echo 100000 ;;
    auth) echo 30000 ;;
    *) echo 100000 ;;
  esac
}

if ! command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
  echo "fuzz: ${FUZZ_CC:-clang} not found (apt-get install clang libclang-rt-14-dev)"
  echo "0 passed, 1 failed"
  exit 1
fi
bins=""
for t in $TARGETS; do bins="$bins $OUT/fuzz_$t"; done
# shellcheck disable=SC2086 # one argument per target
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

if [ "$MODE" = replay ] || { [ "$MODE" = explore ] && ! [ "$SECONDS_EACH" -gt 0 ] 2>/dev/null; }; then
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
fi

# 2. Fuzzing, JOBS targets at a time. New inputs never go into the
#    repository: the gate's to a scratch directory emptied first, the
#    explorer's to build/fuzz/corpus (kept between local runs).
run_one() {
  t=$1
  mkdir -p "$OUT/artifacts/$t"
  d=$(dict "$t")
  if [ "$MODE" = gate ]; then
    rm -rf "$OUT/gate/$t"
    mkdir -p "$OUT/gate/$t"
    set -- -seed="$SEED" -runs="$(runs "$t")" -use_cmp=0 "$OUT/gate/$t"
  else
    mkdir -p "$OUT/corpus/$t"
    set -- -seed=0 -max_total_time="$SECONDS_EACH" "$OUT/corpus/$t"
  fi
  set -- "$@" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="$OUT/artifacts/$t/"
  [ -n "$d" ] && [ -f "$d" ] && set -- "$@" -dict="$d"
  [ -d "tests/fuzz/regressions/$t" ] && set -- "$@" "tests/fuzz/regressions/$t"
  $NORAND "$OUT/fuzz_$t" "$@" "tests/fuzz/corpus/$t" >"$OUT/fuzz-$t.log" 2>&1
  echo $? >"$OUT/fuzz-$t.rc"
}

report() {
  t=$1
  rc=$(cat "$OUT/fuzz-$t.rc" 2>/dev/null || echo 1)
  runs=$(grep -E '^stat::number_of_executed_units' "$OUT/fuzz-$t.log" | awk '{print $2}')
  seed=$(grep -o 'Seed: [0-9]*' "$OUT/fuzz-$t.log" | head -n 1 | sed 's/Seed: //')
  how="seed ${seed:-?}, ${runs:-?} runs"
  [ "$MODE" = explore ] && how="${SECONDS_EACH}s, $how"
  if [ "$rc" -eq 0 ]; then
    pass "$t: fuzzed ($how)"
    return
  fi
  fail "$t: fuzzing stopped (exit $rc; $how)"
  grep -E "ERROR|SUMMARY|property|runtime error|Test unit written" "$OUT/fuzz-$t.log" | tail -n 8
  art=$(grep -o "Test unit written to [^ ]*" "$OUT/fuzz-$t.log" | tail -n 1 | sed 's/.* to //')
  echo "     log: $OUT/fuzz-$t.log"
  if [ -n "$art" ]; then
    echo "     replay: make $OUT/fuzz_$t && $OUT/fuzz_$t $art"
    echo "     keep it (with the fix): cp $art tests/fuzz/regressions/$t/NAME"
  fi
}

# The gate runs without address randomisation where the system allows it
# (the stack-depth feature saw different depths otherwise).
NORAND=""
if [ "$MODE" = gate ] && setarch "$(uname -m)" -R true 2>/dev/null; then
  NORAND="setarch $(uname -m) -R"
fi

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
