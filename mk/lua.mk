# The Lua host's test driver (config checks and hook runs for the busted
# specs).
LUAHOST_DRIVER_SRCS := src/lua/config.c src/lua/luahost.c src/lua/luahost_exec.c src/lua/luahost_kv.c \
                       src/lua/luahost_module.c src/lua/luahost_load.c src/lua/luajson.c src/base/json.c \
                       src/base/spawn.c src/base/common.c src/base/log.c src/base/metrics.c

all: build/luahost_driver

build/luahost_driver: tests/c/luahost_driver.c $(LUAHOST_DRIVER_SRCS) build/embedded.c | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) tests/c/luahost_driver.c \
	  $(LUAHOST_DRIVER_SRCS) build/embedded.c -o $@ $(QC_LDLIBS) $(LDLIBS)

# spawn.c on the default loop with the loop blocked past a child's deadline
# (tests/unit/spawn_spec.lua).
all: build/spawn_late

build/spawn_late: tests/c/spawn_late.c src/base/spawn.c src/base/common.c src/base/log.c src/base/json.c | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) tests/c/spawn_late.c src/base/spawn.c \
	  src/base/common.c src/base/log.c src/base/json.c -o $@ -lev -lyajl
