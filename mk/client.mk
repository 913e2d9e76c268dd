# Client SDKs (README "Client SDKs"). The CLI shares src/client.c's HTTP
# client, so build/qcli (mk/api.mk) links it too: added here, since the
# prerequisites of api.mk's rule are read before this file.
QCLI_SRCS += src/client.c
build/qcli: src/client.c src/client.h
