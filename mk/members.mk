# Rules of the member list codec (src/members.c): the test-only Lua module
# build/qcmembers.so for tests/unit/members_spec.lua, which also loads
# configs through src/config.c for tests/unit/config_spec.lua. No default
# target here; only `all:` prerequisites.
MEMBERS_TEST_SRCS := src/members.c src/json.c src/wire.c src/raft.c src/common.c \
                     src/config.c src/luajson.c src/log.c
MEMBERS_TEST_HDRS := src/members.h src/json.h src/wire.h src/raft.h src/common.h \
                     src/config.h src/luajson.h src/log.h src/embedded.h src/view.h src/kv.h

all: build/qcmembers.so

build/qcmembers.so: tests/c/qcmembers.c $(MEMBERS_TEST_SRCS) $(MEMBERS_TEST_HDRS) \
                    build/embedded.c | build
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared tests/c/qcmembers.c \
	  $(MEMBERS_TEST_SRCS) build/embedded.c -o $@ $(shell pkg-config --libs yajl) -lm
