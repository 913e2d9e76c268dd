# Rules of the key-value state machine (src/core/kv.c): the test-only Lua module
# build/qckv.so for tests/unit/kv_spec.lua. No default target here.
KV_SRCS := src/core/kv.c src/core/wire.c src/base/common.c

all: build/qckv.so

build/qckv.so: tests/c/qckv.c $(KV_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared tests/c/qckv.c $(KV_SRCS) -o $@
