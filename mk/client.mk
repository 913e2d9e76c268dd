# Client SDKs (README "Client SDKs"). The CLI shares src/sdk/client.c's HTTP
# client, so build/qcli (mk/api.mk) links it too: added here, since the
# prerequisites of api.mk's rule are read before this file.
QCLI_SRCS += src/sdk/client.c src/net/tls.c
build/qcli: src/sdk/client.c src/net/tls.c

# The C SDK's test program (tests/integration/client_c_spec.lua), linked with
# the static library as node_test is; lib.mk, which sets QC_LIB_A, is read
# after this file, so its default is repeated here for the prerequisite.
QC_LIB_A ?= build/libqcluster.a
all: build/client_test

build/client_test: tests/c/client_test.c $(QC_LIB_A)
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(QC_LIB_A) -o $@ \
	  $(QC_LDLIBS) $(LDLIBS)
