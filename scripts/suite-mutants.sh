#!/bin/sh
# Every planted bug (build/sim-NAME) must be caught by an invariant within
# MUTANT_SEEDS seeds; a mutant that survives means the simulator is blind.
cd "$(dirname "$0")/.." || exit 2
[ $# -gt 0 ] || exec make -s --no-print-directory sim-mutants
passed=0
failed=0
for m in "$@"; do
  [ -x "build/sim-$m" ] || make -s --no-print-directory "build/sim-$m" || { failed=$((failed + 1)); continue; }
  out=$("build/sim-$m" --seeds "${MUTANT_SEEDS:-20000}" --expect-fail | tail -n 1)
  case "$out" in
    "caught by "*) echo "mutant $m: $out"; passed=$((passed + 1)) ;;
    *) echo "mutant $m: NOT CAUGHT ($out)"; failed=$((failed + 1)) ;;
  esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
