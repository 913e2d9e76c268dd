# libFuzzer targets (tests/fuzz/, clang with libclang-rt; TOOLCHAIN.md 7).
# Through scripts/suite-fuzz.sh, each builds them and replays every seed and
# kept crash input, then: `make fuzz-gate` (what make test runs) fuzzes each
# target with a fixed seed for a fixed number of runs; `make fuzz` for
# FUZZ_SECONDS (default 30) with fresh random seeds; `make fuzz-regress`
# only replays (seconds). `make fuzz-build` only builds.
# One target by hand (new inputs go to the first directory, not the repo):
#   build/fuzz/fuzz_wire -max_total_time=60 build/fuzz/corpus/wire tests/fuzz/corpus/wire
# No `all:` prerequisite here: the normal build does not need clang.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS  := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all
FUZZ_TARGETS := wire members kv wal config_json config_lua api auth raft
FUZZ_BINS    := $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
FUZZ_BASE    := tests/fuzz/fuzz_util.c src/base/common.c src/base/log.c src/base/json.c

# Per target: its main file (plus defines) and the sources under test.
FUZZ_MAIN_wire        := tests/fuzz/fuzz_wire.c
FUZZ_SRCS_wire        := src/core/wire.c src/core/kv.c src/core/members.c src/base/json.c src/core/raft.c
FUZZ_MAIN_members     := tests/fuzz/fuzz_members.c
FUZZ_SRCS_members     := src/core/members.c src/base/json.c src/core/raft.c src/core/wire.c
FUZZ_MAIN_kv          := tests/fuzz/fuzz_kv.c
FUZZ_SRCS_kv          := src/core/kv.c src/core/wire.c
FUZZ_MAIN_wal         := tests/fuzz/fuzz_wal.c
FUZZ_SRCS_wal         := src/store/wal.c src/core/wire.c
FUZZ_MAIN_config_json := tests/fuzz/fuzz_config.c
FUZZ_DEFS_config_json := -DFUZZ_CONFIG_EXT='".json"'
FUZZ_SRCS_config_json := src/lua/config.c src/lua/luajson.c src/base/json.c build/embedded.c
FUZZ_MAIN_config_lua  := tests/fuzz/fuzz_config.c
FUZZ_DEFS_config_lua  := -DFUZZ_CONFIG_EXT='".lua"'
FUZZ_SRCS_config_lua  := src/lua/config.c src/lua/luajson.c src/base/json.c build/embedded.c
FUZZ_MAIN_api         := tests/fuzz/fuzz_api.c
FUZZ_SRCS_api         := $(wildcard src/api/*.c) src/net/tls.c src/base/metrics.c src/base/json.c build/embedded.c
FUZZ_MAIN_raft        := tests/fuzz/fuzz_raft.c
FUZZ_SRCS_raft        := src/core/raft.c
FUZZ_MAIN_auth        := tests/fuzz/fuzz_auth.c
FUZZ_SRCS_auth        := src/net/net.c src/net/net_dial.c src/net/net_join.c src/net/net_accept.c \
                         src/net/net_setup.c src/net/auth.c src/core/wire.c src/base/metrics.c \
                         src/core/raft.c

define FUZZ_RULE
build/fuzz/fuzz_$(1): $(FUZZ_MAIN_$(1)) $(FUZZ_SRCS_$(1)) $(FUZZ_BASE) | build/fuzz
	$$(DEPEND)
	$$(FUZZ_CC) $$(QC_CFLAGS) $$(FUZZ_CFLAGS) $(FUZZ_DEFS_$(1)) $(FUZZ_MAIN_$(1)) \
	  $(sort $(FUZZ_SRCS_$(1)) $(FUZZ_BASE)) -o $$@ $$(QC_LDLIBS)
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_RULE,$(t))))

build/fuzz:
	mkdir -p $@

fuzz-build: $(FUZZ_BINS)

fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh scripts/suite-fuzz.sh explore

fuzz-gate:
	@sh scripts/suite-fuzz.sh gate

fuzz-regress:
	@sh scripts/suite-fuzz.sh replay

.PHONY: fuzz fuzz-build fuzz-gate fuzz-regress

# Regenerates the binary seeds (wire, members, kv, wal, auth) with the encoders.
FUZZ_SEED_SRCS := tests/fuzz/mkseeds.c src/core/wire.c src/core/kv.c src/core/members.c src/base/json.c src/core/raft.c \
                  src/store/wal.c src/base/common.c
build/fuzz/mkseeds: $(FUZZ_SEED_SRCS) | build/fuzz
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(FUZZ_SEED_SRCS) -o $@ $(QC_LDLIBS)

fuzz-seeds: build/fuzz/mkseeds
	build/fuzz/mkseeds tests/fuzz/corpus

.PHONY: fuzz-seeds
