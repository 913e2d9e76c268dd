#!/bin/sh
# Test-suite wrapper: the simulator's fixed seeds, 1..2000 and every seed in
# tests/sim/regression-seeds (the same each run; make explore tries fresh
# ones). SEED and SEEDS are set here so that ones in the environment do
# not change what make test runs.
cd "$(dirname "$0")/.." || exit 2
make -s --no-print-directory sim SEED= SEEDS=2000
