#!/bin/sh
# Test-suite wrapper: the default batch of simulation seeds.
cd "$(dirname "$0")/.." || exit 2
make -s --no-print-directory sim
