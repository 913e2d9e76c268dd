# Rules of the write-ahead log: the test-only Lua module over src/store/wal.c,
# store.c and walq.c (tests/unit/wal_spec.lua, store_spec.lua, walq_spec.lua,
# scripts/bench/wal). No default target here.
WAL_TEST_SRCS := src/store/wal.c src/store/store.c src/store/walq.c src/core/wire.c src/base/common.c

all: build/qcwal.so

build/qcwal.so: tests/c/qcwal.c $(WAL_TEST_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -Wl,--wrap=sync_file_range -fPIC -shared tests/c/qcwal.c $(WAL_TEST_SRCS) -o $@ -lev -pthread
