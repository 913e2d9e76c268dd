# QCluster build. `make` builds bin/qcluster; `make test` runs every suite
# (dependencies and build included) with fixed seeds; `make explore` looks
# for new bugs with fresh ones; `make deps` installs Debian packages.
PKGS      := lua5.4 yajl openssl
CFLAGS    ?= -O2 -g
QC_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror \
             -Iinclude -Isrc -Ibuild $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
QC_LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lhttp_parser -lsodium -lm
SAN       := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
BUSTED    := lua5.4 /usr/bin/busted

# src/ holds one folder per layer (README "Layout and development"); main.c
# is the program over them.
SRCS      := $(wildcard src/*/*.c) src/main.c
LUA_SRCS  := $(wildcard lua/*.lua)
# The pure core and what it needs: linked into the agent and the test modules.
CORE_SRCS := src/core/raft.c src/base/common.c
# Header dependencies come from the compiler: -MMD -MP where one source makes
# one object, and DEPEND (a rule's first line) where one command compiles
# several sources, which -MMD cannot record (each source overwrites the file).
DEPFLAGS  := -MMD -MP
DEPEND     = @$(CC) $(QC_CFLAGS) $(CPPFLAGS) -MM -MP -MT $@ $(filter %.c,$^) >$@.d

all: bin/qcluster build/qcraft.so

-include mk/*.mk
-include $(shell find build -name '*.d' 2>/dev/null)

# The binary is main() over the library (mk/lib.mk): one implementation.
bin/qcluster: src/main.c $(QC_LIB_A) | bin
	$(CC) $(QC_CFLAGS) $(DEPFLAGS) -MF build/main.d -MT $@ $(CFLAGS) $(LDFLAGS) src/main.c \
	  $(QC_LIB_A) -o $@ $(QC_LDLIBS) $(LDLIBS)

# lua/*.lua and the status page are compiled into the binary so it runs from anywhere.
EMBED_SRCS := $(LUA_SRCS) ui/index.html
build/embedded.c: $(EMBED_SRCS) scripts/embed.lua | build
	lua5.4 scripts/embed.lua $(EMBED_SRCS) > $@


# Test-only Lua module wrapping the pure core (tests/c/qcraft.c).
build/qcraft.so: tests/c/qcraft.c $(CORE_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared tests/c/qcraft.c $(CORE_SRCS) -o $@

bin build:
	mkdir -p $@

deps:
	@sh scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory all
	@sh scripts/test.sh

# Fuzzing, the simulator and a chaos run (root; EXPLORE_CHAOS=0 skips it)
# with fresh random seeds for about EXPLORE_TIME; prints how to replay what
# it finds and exits non-zero then (scripts/explore.sh).
EXPLORE_TIME ?= 5m
explore: deps
	@$(MAKE) --no-print-directory all
	@EXPLORE_TIME=$(EXPLORE_TIME) sh scripts/explore.sh

# Executables (agent, test programs, simulator) under ASan/UBSan; the Lua
# modules stay plain, since lua5.4 itself is not instrumented. The library
# they link is an instrumented copy of its own (QC_PIC, QC_LIB_A), so the
# shared library and the Lua modules built after stay plain; -o keeps make
# from relinking the instrumented executables against the plain library.
ASAN_BINS := bin/qcluster build/api_fake build/qcli build/net_node build/luahost_driver build/sim \
             build/node_test
test-asan: deps
	$(MAKE) clean
	$(MAKE) $(ASAN_BINS) CFLAGS='$(SAN)' LDFLAGS='-fsanitize=address,undefined' \
	  QC_PIC=build/asan QC_LIB_A=build/asan/libqcluster.a
	$(MAKE) all $(addprefix -o ,$(ASAN_BINS))
	sh scripts/test.sh

# Line coverage of the consensus core by its unit specs and the simulator;
# fails under 95%.
coverage: deps
	rm -f build/*.gcda build/*.gcno
	$(MAKE) build/qcraft.so build/sim -B CFLAGS='-O0 -g --coverage' LDFLAGS='--coverage'
	$(BUSTED) -o TAP tests/unit/raft_spec.lua | tail -n 1
	build/sim --seeds $(SEEDS) | tail -n 1
	gcovr -r . --filter src/core/raft.c --txt --fail-under-line 95 build
	$(MAKE) build/qcraft.so build/sim -B

# The C that `make fmt` formats and `make lint` checks is formatted.
FMT_FILES = $(wildcard src/*/*.[ch] src/main.c include/*.h tests/c/*.c tests/sim/*.c tests/fuzz/*.c)

lint: $(QC_LIB_A)
	lua5.4 scripts/check-layers.lua $(QC_PIC)
	@echo "clang-format --dry-run --Werror (make fmt's files)"
	@clang-format --dry-run --Werror $(FMT_FILES)
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --suppress=missingIncludeSystem -Isrc src tests/c tests/sim tests/chaos
	luacheck --std lua54+busted --codes lua tests examples scripts --exclude-files 'tests/fuzz/corpus/**'

fmt:
	clang-format -i $(FMT_FILES)

cluster: deps all
	bash scripts/cluster.sh examples/bare_minimum

clean:
	rm -rf build bin

.PHONY: all deps test explore test-asan coverage lint fmt cluster clean
