# The Lua 5.4 C module qcluster (src/sdk/qcluster_module.c): build/lua/qcluster.so,
# `require "qcluster"` from lua5.4 with build/lua/?.so on package.cpath. It
# holds libqcluster (static, -fPIC objects) but not Lua: the interpreter that
# loads it provides the Lua API (lua5.4 has Lua built in; a second copy breaks).
LUAMOD_LIBS  = $(filter-out -llua5.4,$(QC_LDLIBS))

all: build/lua/qcluster.so

build/lua/qcluster.so: src/sdk/qcluster_module.c build/libqcluster.a | build/lua
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -fPIC -shared $< \
	  build/libqcluster.a -o $@ $(LUAMOD_LIBS) $(LDLIBS)

build/lua:
	mkdir -p $@
