# Rules of the key-value state machine (src/kv.c): the test-only Lua module
# build/qckv.so for tests/unit/kv_spec.lua. No default target here.
KV_SRCS := src/kv.c src/wire.c src/common.c
KV_HDRS := src/kv.h src/wire.h src/raft.h src/common.h

all: build/qckv.so

build/qckv.so: tests/c/qckv.c $(KV_SRCS) $(KV_HDRS) | build
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared tests/c/qckv.c $(KV_SRCS) -o $@
