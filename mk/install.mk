# `make install` / `make uninstall`: the binary, libqcluster (static, shared,
# header, pkg-config file), the Lua module and client, the Python package, the
# man page, an example systemd unit and config. PREFIX (default /usr/local)
# is where they run from; DESTDIR stages them elsewhere (packaging, tests).
# Paths with spaces or colons are not supported.
PREFIX          ?= /usr/local
BINDIR          ?= $(PREFIX)/bin
LIBDIR          ?= $(PREFIX)/lib
INCLUDEDIR      ?= $(PREFIX)/include
PKGCONFIGDIR    ?= $(LIBDIR)/pkgconfig
LUA_LIBDIR      ?= $(PREFIX)/lib/lua/5.4
LUA_SHAREDIR    ?= $(PREFIX)/share/lua/5.4
# Debian's Python reads /usr/lib/python3/dist-packages, and for any other
# prefix lib/python3.N/dist-packages (N: the installed python3's).
PYTHON_VERSION  ?= $(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYTHON_DIR      ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/python$(or $(PYTHON_VERSION),3)/dist-packages)
MANDIR          ?= $(PREFIX)/share/man
SYSTEMD_UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR          ?= $(PREFIX)/share/doc/qcluster

# The files that carry PREFIX, written afresh by every `make install` (a
# build/qcluster.pc made for another prefix must not be installed as is).
INSTALL_GEN := build/install/qcluster.pc build/install/qcluster.service

# One line per file, destination:source:mode: install and uninstall both
# read this list, so they cannot disagree.
INSTALL_FILES := \
  $(BINDIR)/qcluster:bin/qcluster:755 \
  $(LIBDIR)/libqcluster.a:build/libqcluster.a:644 \
  $(LIBDIR)/libqcluster.so.0:build/libqcluster.so.0:755 \
  $(INCLUDEDIR)/qcluster.h:include/qcluster.h:644 \
  $(INCLUDEDIR)/qcluster_errors.h:include/qcluster_errors.h:644 \
  $(PKGCONFIGDIR)/qcluster.pc:build/install/qcluster.pc:644 \
  $(LUA_LIBDIR)/qcluster.so:build/lua/qcluster.so:755 \
  $(LUA_SHAREDIR)/qcluster/client.lua:lua/qcluster/client.lua:644 \
  $(PYTHON_DIR)/qcluster/__init__.py:python/qcluster/__init__.py:644 \
  $(PYTHON_DIR)/qcluster/_client.py:python/qcluster/_client.py:644 \
  $(PYTHON_DIR)/qcluster/_lib.py:python/qcluster/_lib.py:644 \
  $(PYTHON_DIR)/qcluster/_node.py:python/qcluster/_node.py:644 \
  $(PYTHON_DIR)/qcluster/py.typed:python/qcluster/py.typed:644 \
  $(MANDIR)/man1/qcluster.1:docs/qcluster.1:644 \
  $(SYSTEMD_UNITDIR)/qcluster.service:build/install/qcluster.service:644 \
  $(DOCDIR)/examples/qcluster.lua:dist/qcluster.lua:644

# Every source is a prerequisite: a piece that is not built stops the
# install with "No rule to make target", never a silent skip.
INSTALL_SRCS := $(filter-out $(INSTALL_GEN),$(foreach f,$(INSTALL_FILES),$(word 2,$(subst :, ,$(f)))))

# A path below PREFIX is written ${prefix}/... so the .pc stays relocatable.
pc_path = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

install: all $(INSTALL_SRCS) build/qcluster.pc dist/qcluster.service | build
	mkdir -p build/install
	sed -e 's|^prefix=.*|prefix=$(PREFIX)|' -e 's|^exec_prefix=.*|exec_prefix=$${prefix}|' \
	  -e 's|^libdir=.*|libdir=$(call pc_path,$(LIBDIR))|' \
	  -e 's|^includedir=.*|includedir=$(call pc_path,$(INCLUDEDIR))|' \
	  build/qcluster.pc > build/install/qcluster.pc
	sed 's|@PREFIX@|$(PREFIX)|g' dist/qcluster.service > build/install/qcluster.service
	@for f in $(INSTALL_FILES); do \
	  dst=$${f%%:*}; rest=$${f#*:}; src=$${rest%%:*}; mode=$${rest#*:}; \
	  echo "install -D -m $$mode $$src $(DESTDIR)$$dst"; \
	  install -D -m "$$mode" "$$src" "$(DESTDIR)$$dst" || exit 1; \
	done
	ln -sf libqcluster.so.0 "$(DESTDIR)$(LIBDIR)/libqcluster.so"

# Removes exactly what install wrote, then the directories that are
# QCluster's own once empty (never shared ones such as PREFIX/bin).
uninstall:
	@for f in $(INSTALL_FILES); do \
	  echo "rm -f $(DESTDIR)$${f%%:*}"; rm -f "$(DESTDIR)$${f%%:*}" || exit 1; \
	done
	rm -f "$(DESTDIR)$(LIBDIR)/libqcluster.so"
	rmdir "$(DESTDIR)$(LUA_SHAREDIR)/qcluster" "$(DESTDIR)$(PYTHON_DIR)/qcluster" "$(DESTDIR)$(DOCDIR)/examples" \
	  "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true

.PHONY: install uninstall
