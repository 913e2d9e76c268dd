#!/bin/sh
# make explore: looks for new bugs with fresh random seeds, for about
# EXPLORE_TIME (default 5m; 90s, 10m, 1h): the fuzz targets (time-bounded,
# random seeds, corpus kept in build/fuzz/corpus), the simulator (batches
# of seeds from a random start) and, as root with EXPLORE_CHAOS=1 (the
# default), one chaos run with a fresh CHAOS_SEED (its share less 30 s
# for its setup and checks). Time shares: fuzz 40%, sim 20%, chaos 40%; without
# chaos fuzz 65%, sim 35%. make test stays deterministic (fixed seeds);
# this is where new seeds are tried. For everything it finds it prints the
# command that replays it and where to keep it as a regression; it ends
# with a summary and exits 1 when it found anything (2: it could not run a
# part; make explore then fails).
cd "$(dirname "$0")/.." || exit 2
TIME=${EXPLORE_TIME:-5m}
CHAOS=${EXPLORE_CHAOS:-1}
OUT=build/explore
mkdir -p "$OUT"
found="$OUT/found"
: >"$found"
broken=0

seconds() {
  n=${1%[smh]}
  case "$1" in
    *h) m=3600 ;;
    *m) m=60 ;;
    *) m=1 ;;
  esac
  [ "$n" -gt 0 ] 2>/dev/null || return 1
  echo $((n * m))
}

# A fresh random number below 2^31 (POSIX sh has no $RANDOM).
fresh() { echo $(($(od -An -N4 -tu4 /dev/urandom | tr -d ' \n') % 2147483647 + 1)); }

total=$(seconds "$TIME") || {
  echo "explore: bad EXPLORE_TIME '$TIME' (seconds, or 90s, 5m, 1h)"
  exit 2
}
if [ "$CHAOS" = 1 ] && [ "$(id -u)" -ne 0 ]; then
  echo "explore: chaos skipped: it needs root (network namespaces); EXPLORE_CHAOS=0 skips it quietly"
  CHAOS=0
fi
if [ "$CHAOS" = 1 ]; then
  fuzz_s=$((total * 40 / 100))
  sim_s=$((total * 20 / 100))
  chaos_s=$((total - fuzz_s - sim_s - 30))
  [ "$chaos_s" -ge 30 ] || chaos_s=30
else
  fuzz_s=$((total * 65 / 100))
  sim_s=$((total - fuzz_s))
fi
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
[ "$cpus" -gt 4 ] 2>/dev/null && cpus=4
jobs=${FUZZ_JOBS:-${cpus:-2}}
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
targets=${FUZZ_TARGETS:-"wire members kv wal config_json config_lua api auth"}
ntargets=$(echo "$targets" | wc -w)
each=$((fuzz_s / ((ntargets + jobs - 1) / jobs)))
[ "$each" -ge 10 ] || each=10
echo "explore: about $total s: fuzz $ntargets targets ${each}s each ($jobs at a time), sim ${sim_s}s," \
  "chaos $([ "$CHAOS" = 1 ] && echo "${chaos_s}s of faults" || echo skipped)"

# 1. Fuzzing: scripts/suite-fuzz.sh explore prints the replay of a crash.
echo "== explore: fuzz"
FUZZ_SECONDS=$each FUZZ_JOBS=$jobs FUZZ_TARGETS=$targets sh scripts/suite-fuzz.sh explore >"$OUT/fuzz.log" 2>&1
rc=$?
cat "$OUT/fuzz.log"
grep -E '^FAIL|^ +(replay|keep it)' "$OUT/fuzz.log" | sed 's/^ */    /; s/^    FAIL/fuzz: FAIL/' >>"$found"
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' "$OUT/fuzz.log"; then
  echo "fuzz: did not run (see $OUT/fuzz.log)" >>"$found"
  broken=1
fi

# 2. The simulator: batches of seeds from a random start, until its time is
#    up. Each failing seed is replayed on its own with a trace.
echo "== explore: sim"
if make -s --no-print-directory build/sim >"$OUT/sim-build.log" 2>&1; then
  first=$(fresh)
  start=$(date +%s)
  next=$first
  batch=200
  : >"$OUT/sim.log"
  while [ $(($(date +%s) - start)) -lt "$sim_s" ]; do
    build/sim --first "$next" --seeds "$batch" >>"$OUT/sim.log" 2>&1
    next=$((next + batch))
  done
  n=$((next - first))
  bad=$(grep -E '^seed [0-9]+: invariant' "$OUT/sim.log")
  echo "sim: $n seeds from $first: $(echo "$bad" | grep -c .) failed"
  echo "$bad" | while read -r _ s rest; do
    [ -n "$s" ] || continue
    s=${s%:}
    echo "$s $rest"
    {
      echo "sim: seed $s: $rest"
      echo "    replay: make sim SEED=$s TRACE=1"
      echo "    keep it: add '$s' (and a comment line on what broke) to tests/sim/regression-seeds"
    } >>"$found"
  done
else
  cat "$OUT/sim-build.log"
  echo "sim: did not build (see $OUT/sim-build.log)" >>"$found"
  broken=1
fi

# 3. Chaos (root): one run with a fresh seed, nothing else running.
if [ "$CHAOS" = 1 ]; then
  echo "== explore: chaos"
  seed=$(fresh)
  CHAOS_SEED=$seed make -s --no-print-directory chaos DURATION="${chaos_s}s" >"$OUT/chaos.log" 2>&1
  rc=$?
  cat "$OUT/chaos.log"
  if [ "$rc" -ne 0 ]; then
    if grep -q 'CANNOT RUN\|could not build the network' "$OUT/chaos.log"; then
      echo "chaos: did not run (see $OUT/chaos.log)" >>"$found"
      broken=1
    else
      {
        echo "chaos: seed $seed: $(grep -E ' FAIL ' "$OUT/chaos.log" | tr -s ' ' | tr '\n' ';')"
        echo "    replay (the same faults and client choices; real time, so not the same interleaving):"
        echo "      CHAOS_SEED=$seed make chaos DURATION=${chaos_s}s"
        grep 'chaos: kept' "$OUT/chaos.log" | sed 's/^/    /'
        echo "    keep it: reproduce the bug on purpose in tests/chaos/repro_NAME.lua (scripts/chaos-repro.sh)"
      } >>"$found"
    fi
  fi
fi

echo "== explore: summary"
if [ -s "$found" ]; then
  cat "$found"
  echo "explore: found $(grep -c '^[a-z]*: ' "$found") (logs in $OUT/)"
  [ "$broken" -eq 1 ] && exit 2
  exit 1
fi
echo "explore: nothing found (logs in $OUT/)"
