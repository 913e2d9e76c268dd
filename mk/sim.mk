# The deterministic simulator of the consensus core (tests/sim/sim.c) and its
# planted bugs. `make sim` runs SEEDS seeds (default 2000) or replays SEED
# with TRACE=1; `make sim-mutants` proves each planted bug is caught.
SIM_SRCS := tests/sim/sim.c src/core/raft.c src/base/common.c
MUTANTS  := DOUBLE_VOTE SEND_BEFORE_PERSIST NO_CHECK_QUORUM NO_STICKINESS LOWER_TERM \
            FAST_NO_LINK_CHECK FAST_ON_DOWN COMMIT_OLD_TERM APPLY_UNCOMMITTED \
            VOTE_NO_LOG_CHECK NO_CONSISTENCY_CHECK TWO_CHANGES COUNT_NON_VOTERS \
            COUNT_REMOVED UNHEALTHY_VOTE NO_UNHEALTHY_HANDOVER STATE_LOSS_FRESH \
            COUNT_SELF_UNSTABLE ACK_UNSTABLE
SEEDS    ?= 2000
# qc_assert failures in the core are reported as the seed's (tests/sim/sim.c).
SIM_LDFLAGS := -Wl,--wrap=qc_assert_fail

all: build/sim

build/sim: $(SIM_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) $(SIM_LDFLAGS) $(SIM_SRCS) -o $@

build/sim-%: $(SIM_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) -O2 -DQC_MUTANT_$* $(SIM_LDFLAGS) $(SIM_SRCS) -o $@

# The mutants' dependency files, which the Makefile includes, are no
# mutants to build: without this, build/sim-% tried to make each of them.
build/sim-%.d: ;

sim: build/sim
	@if [ -n "$(SEED)" ]; then build/sim --seed $(SEED) $(if $(TRACE),--trace); \
	else build/sim --seeds $(SEEDS) --regressions tests/sim/regression-seeds; fi

sim-mutants: $(MUTANTS:%=build/sim-%)
	@sh scripts/suite-mutants.sh $(MUTANTS)

.PHONY: sim sim-mutants
