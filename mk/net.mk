# Rules of the net and wire modules: the test-only Lua codec module and the
# net_node test program. No default target here; only `all:` prerequisites.
NET_TEST_SRCS := src/net/net.c src/net/net_dial.c src/net/net_join.c src/net/net_accept.c \
                 src/net/net_setup.c src/core/wire.c src/net/auth.c src/base/common.c \
                 src/base/log.c src/base/json.c src/base/metrics.c src/core/raft.c

all: build/qcwire.so build/net_node

# Test-only Lua module over the wire codec and frame sealing
# (tests/unit/wire_spec.lua, tests/unit/net_spec.lua).
QCWIRE_SRCS := tests/c/qcwire.c src/core/wire.c src/net/auth.c src/base/common.c

build/qcwire.so: $(QCWIRE_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared $(QCWIRE_SRCS) -o $@ -lsodium

# Test-only program running one qc_net (tests/unit/net_spec.lua).
build/net_node: tests/c/net_node.c $(NET_TEST_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) tests/c/net_node.c $(NET_TEST_SRCS) -o $@ -lev -lsodium -lyajl \
	  -lm $(LDLIBS)
