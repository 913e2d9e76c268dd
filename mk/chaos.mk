# The chaos suite (tests/chaos/): five real agents, each in a network
# namespace of its own, under a nemesis (partitions, kill -9, SIGSTOP, loss,
# delay), with history checkers. Needs root. `make chaos` runs DURATION of
# faults (default 3m; `make chaos DURATION=30m`); build/chaos-proxy is the
# delaying TCP proxy it puts between the nodes (the kernel has no netem).
DURATION ?= 3m

build/chaos-proxy: tests/chaos/proxy.c | build
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) $< -o $@

chaos: deps
	@$(MAKE) --no-print-directory bin/qcluster build/chaos-proxy
	@sh scripts/chaos.sh $(DURATION)

.PHONY: chaos
