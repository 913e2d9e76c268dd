# Rules of the agent's membership (src/agent/membership.c) driven through a
# fake host: the test-only Lua module build/qcmembership.so for
# tests/unit/membership_spec.lua. No default target here; only `all:`
# prerequisites.
MEMBERSHIP_TEST_SRCS := src/agent/membership.c src/core/members.c src/base/json.c src/core/wire.c \
                        $(CORE_SRCS) src/base/log.c

all: build/qcmembership.so

build/qcmembership.so: tests/c/qcmembership.c $(MEMBERSHIP_TEST_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared tests/c/qcmembership.c \
	  $(MEMBERSHIP_TEST_SRCS) -o $@ -lev $(shell pkg-config --libs yajl) -lm
