# API, metrics, JSON helpers and CLI: test-only programs for their specs.
# build/api_fake serves qc_api over a fake view; build/qcli runs qc_cli_main.
API_FAKE_SRCS := tests/c/api_fake.c $(wildcard src/api/*.c) src/net/tls.c src/base/metrics.c src/base/json.c src/base/common.c src/base/log.c build/embedded.c
QCLI_SRCS     := tests/c/cli_main.c src/cli/cli.c src/base/json.c src/base/common.c src/base/log.c

all: build/api_fake build/qcli

build/api_fake: $(API_FAKE_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(API_FAKE_SRCS) -o $@ $(QC_LDLIBS) $(LDLIBS)

build/qcli: $(QCLI_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(QCLI_SRCS) -o $@ $(QC_LDLIBS) $(LDLIBS)
