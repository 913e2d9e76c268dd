#!/bin/sh
# Test-suite wrapper (scripts/test.sh runs it): the checkers on synthetic
# histories (a checker that cannot fail proves nothing), then make chaos
# (DURATION, default 3m) with a fixed CHAOS_SEED (default 1): the same
# faults and client choices each run (a real-time test: not the same
# interleaving; make explore tries fresh seeds). Ends with the combined
# "N passed, N failed".
cd "$(dirname "$0")/.." || exit 2
out=$(lua5.4 /usr/bin/busted --lua=lua5.4 -o TAP tests/chaos/checker_spec.lua 2>&1)
rc=$?
echo "$out" | grep -v '^ok '
p=$(echo "$out" | grep -c '^ok ')
f=$(echo "$out" | grep -c '^not ok ')
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
echo "chaos checkers on synthetic histories: $p passed, $f failed"
# Bugs the chaos runs found, reproduced on purpose (scripts/chaos-repro.sh).
for r in request_ids; do
  if out=$(sh scripts/chaos-repro.sh "$r" 2>&1); then
    echo "chaos regression $r: ok"
    p=$((p + 1))
  else
    echo "$out"
    echo "chaos regression $r: FAILED"
    f=$((f + 1))
  fi
done
out=$(CHAOS_SEED=${CHAOS_SEED:-1} make -s --no-print-directory chaos ${DURATION:+DURATION="$DURATION"} 2>&1)
rc=$?
echo "$out"
line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
cp=${line%% passed*}
cf=${line#*passed, }
cf=${cf%% failed*}
[ -n "$line" ] || { cp=0; cf=1; }
[ "$rc" -ne 0 ] && [ "$cf" -eq 0 ] && cf=1
echo "$((p + cp)) passed, $((f + cf)) failed"
[ $((f + cf)) -eq 0 ]
