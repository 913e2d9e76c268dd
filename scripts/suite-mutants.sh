#!/bin/sh
# Every planted bug (build/sim-NAME) must be caught by an invariant within
# MUTANT_SEEDS seeds; a mutant that survives means the simulator is blind.
# Without arguments: make sim-mutants (every mutant of mk/sim.mk), which
# builds them MUTANT_JOBS at a time (default: the CPUs, at most 4), then
# runs them here as many at a time: most are caught within a few seeds,
# COMMIT_OLD_TERM only after thousands (about 20 s), so the others go on
# beside it. A mutant not built yet is built in its job. The results are
# reported in the order given.
cd "$(dirname "$0")/.." || exit 2
jobs=${MUTANT_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
[ "$jobs" -le 4 ] || jobs=4
[ $# -gt 0 ] || MUTANT_JOBS=$jobs exec make -s --no-print-directory -j"$jobs" sim-mutants
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2016 # $1, $2 belong to the job's shell
printf '%s\n' "$@" | xargs -P "$jobs" -I{} sh -c '
  m=$2
  if ! [ -x "build/sim-$m" ] && ! make -s --no-print-directory "build/sim-$m" >"$1/$m.build" 2>&1; then
    echo "mutant $m: NOT BUILT ($(tail -n 1 "$1/$m.build"))" >"$1/$m"
    exit 0
  fi
  out=$("build/sim-$m" --seeds "${MUTANT_SEEDS:-20000}" --expect-fail | tail -n 1)
  case "$out" in
    "caught by "*) echo "mutant $m: $out" ;;
    *) echo "mutant $m: NOT CAUGHT ($out)" ;;
  esac >"$1/$m"' sh "$tmp" {}
passed=0
failed=0
for m in "$@"; do
  line=$(cat "$tmp/$m" 2>/dev/null || echo "mutant $m: NO RESULT")
  echo "$line"
  case "$line" in
    "mutant $m: caught by "*) passed=$((passed + 1)) ;;
    *) failed=$((failed + 1)) ;;
  esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
