# Rules of the member list codec (src/core/members.c): the test-only Lua module
# build/qcmembers.so for tests/unit/members_spec.lua, which also loads
# configs through src/lua/config.c for tests/unit/config_spec.lua. No default
# target here; only `all:` prerequisites.
MEMBERS_TEST_SRCS := src/core/members.c src/base/json.c src/core/wire.c src/core/raft.c src/base/common.c \
                     src/lua/config.c src/lua/luajson.c src/base/log.c

all: build/qcmembers.so

build/qcmembers.so: tests/c/qcmembers.c $(MEMBERS_TEST_SRCS) build/embedded.c | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared tests/c/qcmembers.c \
	  $(MEMBERS_TEST_SRCS) build/embedded.c -o $@ $(shell pkg-config --libs yajl) -lm
