/* TLS for the HTTP API over OpenSSL (see tls.h): contexts from PEM files
 * with errors that name the file, and non-blocking sessions that report
 * which way the socket must become ready. It must never block, prompt (an
 * encrypted key is refused, not asked for) or know about the event loop. */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/common.h"
#include "base/log.h"

/* Refused handshakes logged per window; the rest are counted. */
#define LOG_MAX 5
#define LOG_WINDOW_MS 60000

struct qc_tls {
    SSL_CTX *ctx;
    int server;
    uint64_t log_since; /* start of the log window (qc_now_ms) */
    int logged;
    unsigned long suppressed;
};

struct qc_tls_conn {
    SSL *ssl;
    int server;
    const char *reason; /* after QC_TLS_FAILED */
    char detail[200];
};

/* The reason text of OpenSSL's queued error, and the queue emptied. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error(); /* the first: the cause, not "PEM lib" */
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

/* An encrypted key would make OpenSSL prompt on the terminal: refuse it. */
static int no_passphrase(char *buf, int size, int rwflag, void *ud)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)ud;
    return -1;
}

/* A file that cannot be opened: said as such, before OpenSSL's vaguer
 * "system lib". */
static int readable(const char *key, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s: cannot read: %s", key, path, strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

static SSL_CTX *ctx_new(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Renegotiation would let a write wait for a read; nobody needs it. An
     * EOF without close_notify is an ordinary close for HTTP (the message
     * framing tells truncation). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* The output buffer may grow or move between a WANT and its retry;
     * idle keep-alive connections give their buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    return ctx;
}

/* This end's certificate chain and key, each file named in the error. */
static int load_identity(SSL_CTX *ctx, const char *cert_key, const char *cert, const char *key_key,
                         const char *key, char *err, size_t errlen)
{
    if (!readable(cert_key, cert, err, errlen) || !readable(key_key, key, err, errlen))
        return QC_EINVAL;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "%s: %s: not a PEM certificate (%s)", cert_key, cert, ssl_reason());
        return QC_EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        int lib = ERR_GET_LIB(e), why = ERR_GET_REASON(e);
        if (lib == ERR_LIB_X509 &&
            (why == X509_R_KEY_VALUES_MISMATCH || why == X509_R_KEY_TYPE_MISMATCH)) {
            ERR_clear_error();
            snprintf(err, errlen, "%s: %s: does not match the certificate in %s", key_key, key,
                     cert);
        } else {
            snprintf(err, errlen, "%s: %s: not an unencrypted PEM private key (%s)", key_key, key,
                     ssl_reason());
        }
        return QC_EINVAL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: %s: does not match the certificate in %s", key_key, key, cert);
        return QC_EINVAL;
    }
    return QC_OK;
}

/* Trust in the CAs of path (PEM); 0 certificates in it is an error. */
static int load_ca(SSL_CTX *ctx, const char *what, const char *path, char *err, size_t errlen)
{
    if (!readable(what, path, err, errlen)) return QC_EINVAL;
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
        snprintf(err, errlen, "%s: %s: not a PEM CA certificate (%s)", what, path, ssl_reason());
        return QC_EINVAL;
    }
    return QC_OK;
}

static int wrap(SSL_CTX *ctx, int server, qc_tls **out)
{
    qc_tls *t = calloc(1, sizeof *t);
    if (!t) {
        SSL_CTX_free(ctx);
        return QC_ENOMEM;
    }
    t->ctx = ctx;
    t->server = server;
    *out = t;
    return QC_OK;
}

int qc_tls_server_new(const char *cert, const char *key, const char *client_ca, qc_tls **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    SSL_CTX *ctx = ctx_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "TLS: out of memory");
        return QC_ENOMEM;
    }
    int rc = load_identity(ctx, "api_tls_cert", cert, "api_tls_key", key, err, errlen);
    if (rc == QC_OK && client_ca) rc = load_ca(ctx, "api_tls_client_ca", client_ca, err, errlen);
    if (rc == QC_OK && client_ca) {
        /* The CAs named in the CertificateRequest, so a client with several
         * certificates picks the right one. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
        if (!names) {
            snprintf(err, errlen, "api_tls_client_ca: %s: not a PEM CA certificate (%s)", client_ca,
                     ssl_reason());
            rc = QC_EINVAL;
        } else {
            SSL_CTX_set_client_CA_list(ctx, names);
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    }
    if (rc != QC_OK) {
        SSL_CTX_free(ctx);
        return rc;
    }
    return wrap(ctx, 1, out);
}

int qc_tls_client_new(const char *cacert, const char *cert, const char *key, qc_tls **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    if ((cert && *cert) != (key && *key)) {
        snprintf(err, errlen, "a client certificate needs its key, and a key its certificate");
        return QC_EINVAL;
    }
    SSL_CTX *ctx = ctx_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "TLS: out of memory");
        return QC_ENOMEM;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int rc = QC_OK;
    if (cacert && *cacert) {
        rc = load_ca(ctx, "cacert", cacert, err, errlen);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "cannot load the system's CA certificates (%s)", ssl_reason());
        rc = QC_EINVAL;
    }
    if (rc == QC_OK && cert && *cert)
        rc = load_identity(ctx, "cert", cert, "key", key, err, errlen);
    if (rc != QC_OK) {
        SSL_CTX_free(ctx);
        return rc;
    }
    return wrap(ctx, 0, out);
}

void qc_tls_free(qc_tls *t)
{
    if (!t) return;
    if (t->suppressed)
        qc_log(QC_LOG_WARN, "api", "%lu more refused TLS handshakes were not logged",
               t->suppressed);
    SSL_CTX_free(t->ctx); /* sessions hold references of their own */
    free(t);
}

int qc_tls_conn_new(qc_tls *t, int fd, const char *host, qc_tls_conn **out)
{
    *out = NULL;
    qc_tls_conn *s = calloc(1, sizeof *s);
    if (!s) return QC_ENOMEM;
    s->server = t->server;
    s->ssl = SSL_new(t->ctx);
    int ok = s->ssl && SSL_set_fd(s->ssl, fd) == 1;
    if (ok && t->server) {
        SSL_set_accept_state(s->ssl);
    } else if (ok) {
        SSL_set_connect_state(s->ssl);
        unsigned char ip[16];
        int literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
        SSL_set_hostflags(s->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        /* SSL_set1_host takes an address literal as one (IP SAN). */
        ok = SSL_set1_host(s->ssl, host) == 1 &&
             (literal || SSL_set_tlsext_host_name(s->ssl, host) == 1);
    }
    if (!ok) {
        ERR_clear_error();
        qc_tls_conn_free(s);
        return QC_ENOMEM;
    }
    *out = s;
    return QC_OK;
}

void qc_tls_conn_free(qc_tls_conn *s)
{
    if (!s) return;
    SSL_free(s->ssl); /* the socket is the caller's (SSL_set_fd does not own it) */
    free(s);
}

/* Why the session failed, kept for qc_tls_conn_failure. */
static void failed(qc_tls_conn *s)
{
    unsigned long e = ERR_peek_last_error();
    int why = ERR_GET_REASON(e);
    const char *text = e ? ERR_reason_error_string(e) : NULL;
    if (!text) text = "unknown error";
    const char *stage = SSL_is_init_finished(s->ssl) ? "TLS error" : "TLS handshake failed";
    s->reason = SSL_is_init_finished(s->ssl) ? "protocol" : "handshake";
    if (why == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        s->reason = "no_client_cert";
        snprintf(s->detail, sizeof s->detail, "%s: the client sent no certificate", stage);
    } else if (why == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
        s->reason = "no_client_cert";
        snprintf(s->detail, sizeof s->detail, "%s: the server requires a client certificate (%s)",
                 stage, text);
    } else if (why == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(s->ssl);
        s->reason = s->server ? "bad_client_cert" : "bad_server_cert";
        snprintf(s->detail, sizeof s->detail, "%s: %s certificate not trusted: %s", stage,
                 s->server ? "the client's" : "the server's", X509_verify_cert_error_string(v));
    } else {
        snprintf(s->detail, sizeof s->detail, "%s: %s", stage, text);
    }
    ERR_clear_error();
}

/* What SSL_get_error says of an SSL call that returned r <= 0. */
static int outcome(qc_tls_conn *s, int r)
{
    int e = SSL_get_error(s->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ: return QC_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return QC_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return QC_TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_last_error() == 0) {
            if (errno == 0 || errno == ECONNRESET || errno == EPIPE) return QC_TLS_CLOSED;
            s->reason = "handshake";
            snprintf(s->detail, sizeof s->detail, "TLS: %s", strerror(errno));
            return QC_TLS_FAILED;
        }
        failed(s);
        return QC_TLS_FAILED;
    default: failed(s); return QC_TLS_FAILED;
    }
}

int qc_tls_handshake(qc_tls_conn *s)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(s->ssl);
    return r == 1 ? QC_TLS_DONE : outcome(s, r);
}

int qc_tls_read(qc_tls_conn *s, void *buf, size_t cap, size_t *n)
{
    ERR_clear_error();
    errno = 0;
    *n = 0;
    int r = SSL_read_ex(s->ssl, buf, cap, n);
    return r == 1 ? QC_TLS_DONE : outcome(s, r);
}

int qc_tls_write(qc_tls_conn *s, const void *buf, size_t len, size_t *n)
{
    ERR_clear_error();
    errno = 0;
    *n = 0;
    int r = SSL_write_ex(s->ssl, buf, len, n);
    return r == 1 ? QC_TLS_DONE : outcome(s, r);
}

int qc_tls_pending(const qc_tls_conn *s) { return s && SSL_pending(s->ssl) > 0; }

void qc_tls_close_notify(qc_tls_conn *s)
{
    if (!s || !SSL_is_init_finished(s->ssl)) return;
    ERR_clear_error();
    SSL_shutdown(s->ssl);
    ERR_clear_error();
}

const char *qc_tls_conn_failure(const qc_tls_conn *s, char *detail, size_t cap)
{
    snprintf(detail, cap, "%s", s->detail[0] ? s->detail : "TLS failure");
    return s->reason ? s->reason : "handshake";
}

int qc_tls_sniff(int fd)
{
    unsigned char b;
    ssize_t n;
    do n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 1) return b == 0x16; /* a TLS record of type handshake */
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return QC_EBUSY;
    return QC_EIO;
}

void qc_tls_log_failure(qc_tls *t, const char *reason, const char *detail)
{
    uint64_t now = qc_now_ms();
    if (!t->log_since || now - t->log_since >= LOG_WINDOW_MS) {
        if (t->suppressed)
            qc_log(QC_LOG_WARN, "api", "%lu more refused TLS handshakes were not logged",
                   t->suppressed);
        t->log_since = now ? now : 1;
        t->logged = 0;
        t->suppressed = 0;
    }
    if (t->logged >= LOG_MAX) {
        t->suppressed++;
        return;
    }
    t->logged++;
    qc_log(QC_LOG_WARN, "api", "refused a TLS connection (%s): %s%s", reason, detail,
           t->logged == LOG_MAX ? " (more in this minute are only counted)" : "");
}
