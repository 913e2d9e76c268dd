# API, metrics, JSON helpers and CLI: test-only programs for their specs.
# build/api_fake serves qc_api over a fake view; build/qcli runs qc_cli_main.
API_FAKE_SRCS := tests/c/api_fake.c src/api.c src/tls.c src/metrics.c src/json.c src/common.c src/log.c build/embedded.c
QCLI_SRCS     := tests/c/cli_main.c src/cli.c src/json.c src/common.c src/log.c
API_HDRS      := src/api.h src/metrics.h src/json.h src/view.h src/kv.h src/wire.h src/raft.h \
                 src/cli.h src/common.h src/log.h src/tls.h

all: build/api_fake build/qcli

build/api_fake: $(API_FAKE_SRCS) $(API_HDRS) | build
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(API_FAKE_SRCS) -o $@ $(QC_LDLIBS) $(LDLIBS)

build/qcli: $(QCLI_SRCS) $(API_HDRS) | build
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(QCLI_SRCS) -o $@ $(QC_LDLIBS) $(LDLIBS)
