/* TLS for the HTTP API over OpenSSL: the agent's server side (a context
 * from the api_tls_* PEM files, non-blocking sessions the API's connection
 * layer reads and writes through) and the blocking client's sessions (the
 * CLI and the C SDK). Sessions never block and never touch the event loop:
 * each call says which way the socket must become ready before a retry.
 * No cryptography of its own: TLS 1.2 or later, OpenSSL's defaults. */
#ifndef QC_TLS_H
#define QC_TLS_H

#include <stddef.h>

typedef struct qc_tls qc_tls;           /* a context: certificates, CA, mode */
typedef struct qc_tls_conn qc_tls_conn; /* one session over a socket */

/* The outcome of a session call. */
enum {
    QC_TLS_DONE = 0,   /* did what was asked */
    QC_TLS_WANT_READ,  /* retry once the socket is readable */
    QC_TLS_WANT_WRITE, /* retry once the socket is writable */
    QC_TLS_CLOSED,     /* the peer closed the connection */
    QC_TLS_FAILED      /* handshake or protocol failure: see qc_tls_conn_failure */
};

/* A server context from the PEM files cert (the chain, leaf first) and key
 * (matching cert); client_ca (NULL: none) makes a client certificate it
 * signed a condition of the handshake. On failure writes "api_tls_KEY: FILE:
 * why" into err and returns QC_EINVAL (QC_ENOMEM out of memory). */
int qc_tls_server_new(const char *cert, const char *key, const char *client_ca, qc_tls **out,
                      char *err, size_t errlen);
/* A client context: cacert (NULL: the system's trust store) verifies the
 * server; cert and key (both or neither) are this client's certificate.
 * On failure writes why into err and returns QC_EINVAL or QC_ENOMEM. */
int qc_tls_client_new(const char *cacert, const char *cert, const char *key, qc_tls **out,
                      char *err, size_t errlen);
/* Drops the caller's reference: sessions made from t keep what they use. */
void qc_tls_free(qc_tls *t);

/* A session over fd (connected, non-blocking; the caller keeps owning it).
 * host: the name or address a client expects the server's certificate to
 * carry (checked, and sent as SNI when a name); NULL on the server side.
 * QC_OK, or QC_ENOMEM. */
int qc_tls_conn_new(qc_tls *t, int fd, const char *host, qc_tls_conn **out);
void qc_tls_conn_free(qc_tls_conn *s);
/* Runs the handshake on (the first read or write also does). */
int qc_tls_handshake(qc_tls_conn *s);
/* Reads up to cap bytes (cap > 0) into buf; *n is how many on QC_TLS_DONE. */
int qc_tls_read(qc_tls_conn *s, void *buf, size_t cap, size_t *n);
/* Writes some of buf's len bytes (len > 0); *n is how many on QC_TLS_DONE.
 * After a WANT, retry with the same bytes first (buf may have moved). */
int qc_tls_write(qc_tls_conn *s, const void *buf, size_t len, size_t *n);
/* Bytes already decrypted and waiting: a read gets them without the socket
 * becoming readable again. */
int qc_tls_pending(const qc_tls_conn *s);
/* Sends close_notify if the socket takes it now; never waits. */
void qc_tls_close_notify(qc_tls_conn *s);
/* After QC_TLS_FAILED: a short reason for metrics ("no_client_cert",
 * "bad_client_cert", "bad_server_cert", "handshake") and a sentence for
 * logs in detail (cap bytes). */
const char *qc_tls_conn_failure(const qc_tls_conn *s, char *detail, size_t cap);

/* Whether the bytes waiting on fd start a TLS handshake: 1 yes, 0 no (a
 * plain HTTP request, say), QC_EBUSY nothing arrived yet, QC_EIO the peer
 * closed or the socket failed. Reads nothing. */
int qc_tls_sniff(int fd);

/* Logs a refused handshake at warn level, at most a few lines a minute per
 * context (the rest are counted and summed up in the next line). */
void qc_tls_log_failure(qc_tls *t, const char *reason, const char *detail);

#endif
