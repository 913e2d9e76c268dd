# The Lua host's test driver (config checks and hook runs for the busted
# specs). Links src/metrics.c when it exists, else the driver's own stub.
LUAHOST_DRIVER_SRCS := src/config.c src/luahost.c src/luajson.c src/json.c src/spawn.c src/common.c \
                       src/log.c $(wildcard src/metrics.c)

all: build/luahost_driver

build/luahost_driver: tests/c/luahost_driver.c $(LUAHOST_DRIVER_SRCS) build/obj/embedded.o \
                      $(wildcard src/*.h) | build
	$(CC) $(QC_CFLAGS) $(if $(wildcard src/metrics.c),,-DQC_DRIVER_METRICS_STUB) \
	  $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) tests/c/luahost_driver.c $(LUAHOST_DRIVER_SRCS) \
	  build/obj/embedded.o -o $@ $(QC_LDLIBS) $(LDLIBS)
