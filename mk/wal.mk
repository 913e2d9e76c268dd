# Rules of the write-ahead log: the test-only Lua module over src/wal.c
# (tests/unit/wal_spec.lua, scripts/bench/wal). No default target here.
WAL_TEST_SRCS := src/wal.c src/wire.c src/common.c

all: build/qcwal.so

build/qcwal.so: tests/c/qcwal.c $(WAL_TEST_SRCS) src/wal.h src/wire.h src/raft.h src/common.h | build
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared tests/c/qcwal.c $(WAL_TEST_SRCS) -o $@
