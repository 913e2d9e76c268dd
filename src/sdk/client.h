/* The one blocking HTTP/1.1 client of the agent's API, shared by the CLI
 * (src/cli/cli.c) and the C SDK (qc_client_* of include/qcluster.h): one request
 * a connection, one deadline a call, http_parser for the answer. Internal to
 * libqcluster; it knows nothing of the API's paths. */
#ifndef QC_CLIENT_H
#define QC_CLIENT_H

#include <stddef.h>

#define QC_HTTP_TIMEOUT_MS 5000 /* a whole call: connecting, sending, the answer */
#define QC_HTTP_MAX_BODY (16 * 1024 * 1024)

/* What an https:// address is verified with (NULL fields: the system's
 * CA certificates; no client certificate). */
typedef struct qc_http_tls {
    const char *cacert;     /* PEM CA file the server's certificate must chain to */
    const char *cert, *key; /* this client's certificate and key (PEM), both or neither */
} qc_http_tls;

typedef struct qc_http_req {
    const char *method;
    const char *path;  /* with its query, already percent-encoded */
    const char *ctype; /* NULL: application/json */
    const void *body;  /* NULL with blen 0: none */
    size_t blen;
    const char *token;      /* sent as a bearer token; NULL or "": none */
    int wait_ms;            /* the whole call's limit: connecting, sending and the
                               complete answer; <= 0: QC_HTTP_TIMEOUT_MS */
    const qc_http_tls *tls; /* for https:// addresses; NULL: all defaults */
} qc_http_req;

typedef struct qc_http_resp {
    int status;
    char *body; /* malloc'd, NUL-terminated past len; NULL when empty. The
                   caller frees it after a successful call. */
    size_t len;
    char revision[24]; /* X-QCluster-Revision, "" when absent */
    char error[256];   /* why a call failed, when that is no static text */
} qc_http_resp;

/* Splits HOST:PORT or [V6]:PORT, maybe after http:// or https://, into host
 * (cap bytes) and the port's text (digits only, pointing into api). 0, or
 * -1 when api is not of that form. */
int qc_http_split_hostport(const char *api, char *host, size_t cap, const char **port);
/* 1 when api starts with https:// (TLS, the server verified), else 0. */
int qc_http_is_https(const char *api);

/* api, else $QCLUSTER_API, else 127.0.0.1:8001 (empty counts as unset);
 * the result is api, the environment's string or a literal. */
const char *qc_http_default_api(const char *api);

/* Sends q to api ("HOST:PORT", "https://HOST:PORT") and reads the whole
 * answer into *r. 0, or -1 with *why (static text, strerror or r->error)
 * and nothing to free. */
int qc_http_call(const char *api, const qc_http_req *q, qc_http_resp *r, const char **why);

/* Writes s percent-encoded (all but unreserved characters and "/") at o,
 * which has room for 3 * strlen(s) + 1 bytes; returns the end (its NUL). */
char *qc_http_url_encode(char *o, const char *s);

#endif
