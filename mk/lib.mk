# libqcluster: every module but main.c, as build/libqcluster.a and
# build/libqcluster.so.0 (+ the libqcluster.so link), with build/qcluster.pc
# for installs and build/qcluster-uninstalled.pc for builds against this tree
# (pkg-config prefers it when PKG_CONFIG_PATH=build). bin/qcluster links the
# static library; examples and the C tests of the library are built here too.
PREFIX      ?= /usr/local
# Where the objects and the static library go (test-asan sets both apart).
QC_PIC      ?= build/pic
QC_LIB_A    ?= build/libqcluster.a
LIB_SRCS    := $(filter-out src/main.c src/sdk/qcluster_module.c,$(SRCS))
LIB_OBJS    := $(LIB_SRCS:src/%.c=$(QC_PIC)/%.o) $(QC_PIC)/embedded.o
LIB_PC_LIBS := -lev -lhttp_parser -lsodium -lm -pthread
QC_LDLIBS   += -pthread

all: $(QC_LIB_A) build/libqcluster.so build/qcluster.pc build/qcluster-uninstalled.pc \
     examples build/node_test

$(QC_PIC)/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(QC_CFLAGS) $(DEPFLAGS) $(CPPFLAGS) $(CFLAGS) -fPIC -c $< -o $@

$(QC_PIC)/embedded.o: build/embedded.c
	@mkdir -p $(@D)
	$(CC) $(QC_CFLAGS) $(DEPFLAGS) $(CFLAGS) -fPIC -c $< -o $@

$(QC_LIB_A): $(LIB_OBJS)
	rm -f $@
	$(AR) rcs $@ $(LIB_OBJS)

# Only the names of include/qcluster.h are exported (mk/libqcluster.map).
build/libqcluster.so.0: $(LIB_OBJS) mk/libqcluster.map
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libqcluster.so.0 \
	  -Wl,--version-script=mk/libqcluster.map $(LIB_OBJS) -o $@ $(QC_LDLIBS) $(LDLIBS)

build/libqcluster.so: build/libqcluster.so.0
	ln -sf libqcluster.so.0 $@

build/qcluster.pc: mk/qcluster.pc.in Makefile mk/lib.mk | build
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@INCLUDEDIR@|$${prefix}/include|' \
	    -e 's|@LIBDIR@|$${exec_prefix}/lib|' -e 's|@RPATH@||' -e 's|@VERSION@|$(QC_VERSION_NUM)|' \
	    -e 's|@PKGS@|$(PKGS) libsodium|' -e 's|@LIBS_PRIVATE@|$(LIB_PC_LIBS)|' $< > $@

# The same, pointing at this tree, with an rpath so that what it builds runs
# from here without LD_LIBRARY_PATH.
build/qcluster-uninstalled.pc: mk/qcluster.pc.in Makefile mk/lib.mk | build
	sed -e 's|@PREFIX@|$(CURDIR)|' -e 's|@INCLUDEDIR@|$(CURDIR)/include|' \
	    -e 's|@LIBDIR@|$(CURDIR)/build|' -e 's|@RPATH@|-Wl,-rpath,$${libdir}|' \
	    -e 's|@VERSION@|$(QC_VERSION_NUM)|' \
	    -e 's|@PKGS@|$(PKGS) libsodium|' -e 's|@LIBS_PRIVATE@|$(LIB_PC_LIBS)|' $< > $@

QC_VERSION_NUM := $(shell sed -n 's/^\#define QCLUSTER_VERSION "\(.*\)"/\1/p' include/qcluster_errors.h)

# examples/embedded_c, built as a user would: pkg-config over this tree.
examples: build/embedded_c

build/embedded_c: examples/embedded_c/embedded_c.c build/libqcluster.so \
                  build/qcluster-uninstalled.pc include/qcluster.h
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror $(CFLAGS) \
	  $$(PKG_CONFIG_PATH=build pkg-config --cflags qcluster) $< -o $@ \
	  $$(PKG_CONFIG_PATH=build pkg-config --libs qcluster) -lev -pthread $(LDFLAGS)

# C tests of the in-process node API (tests/integration/node_api_spec.lua).
# tests/c/fd_birth.c looks at each descriptor the library creates as the
# call that creates it returns: these are the calls it wraps.
FD_BIRTH_WRAP := $(foreach f,socket accept accept4 pipe pipe2 open openat fopen opendir,-Wl,--wrap=$(f))
build/node_test: tests/c/node_test.c tests/c/fd_birth.c $(QC_LIB_A)
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(FD_BIRTH_WRAP) tests/c/node_test.c \
	  tests/c/fd_birth.c $(QC_LIB_A) -o $@ $(QC_LDLIBS) $(LDLIBS)

.PHONY: examples
