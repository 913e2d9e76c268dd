/* The client of an agent's HTTP API: the blocking HTTP/1.1 client the CLI
 * and the C SDK share (qc_http_*, src/sdk/client.h), and the SDK itself
 * (qc_client_*, include/qcluster.h) for programs that run beside an agent.
 * One request a connection, every wait bounded; no global state, no exit(),
 * nothing printed: callers decide what to say. */
#include "sdk/client.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "base/common.h"
#include "base/json.h"
#include "net/tls.h"

#include <qcluster.h>

/* ---------- addresses ---------- */

/* api past its scheme, if it has one. */
static const char *past_scheme(const char *api)
{
    if (strncasecmp(api, "https://", 8) == 0) return api + 8;
    if (strncasecmp(api, "http://", 7) == 0) return api + 7;
    return api;
}

int qc_http_is_https(const char *api) { return strncasecmp(api, "https://", 8) == 0; }

int qc_http_split_hostport(const char *api, char *host, size_t cap, const char **port)
{
    api = past_scheme(api);
    const char *colon = strrchr(api, ':');
    if (!colon || colon == api || !colon[1]) return -1;
    const char *h = api;
    size_t hl = (size_t)(colon - api);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= cap) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    *port = colon + 1;
    return 0;
}

const char *qc_http_default_api(const char *api)
{
    if (!api || !*api) api = getenv("QCLUSTER_API");
    return api && *api ? api : "127.0.0.1:8001";
}

/* ---------- sockets ---------- */

/* A call's deadline, in ms of the monotonic clock. */
static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until deadline (now_ms) for events on fd; 0 ready, -1 with errno
 * (ETIMEDOUT once the deadline has passed). Each poll gets only the time
 * left, so a peer that sends a byte now and then cannot stretch the call. */
static int wait_fd(int fd, short events, long long deadline)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        long long left = deadline - now_ms();
        if (left < 0) left = 0;
        int n = poll(&p, 1, (int)left);
        if (n > 0) return 0;
        if (n == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR) return -1;
    }
}

static int connect_one(const struct addrinfo *ai, long long deadline)
{
    /* Close-on-exec from birth: the program may fork in another thread. */
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) goto fail;
    if (wait_fd(fd, POLLOUT, deadline) != 0) goto fail;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) goto fail;
    if (err == 0) return fd;
    errno = err;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/* Connects to host:port; -1 with *why set (static text or strerror). */
static int dial(const char *host, const char *port, long long deadline, const char **why)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        *why = gai_strerror(g);
        return -1;
    }
    int fd = -1;
    errno = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) fd = connect_one(ai, deadline);
    if (fd < 0) *why = strerror(errno);
    freeaddrinfo(res);
    return fd;
}

/* A connection: the socket, and TLS over it for an https:// address. */
typedef struct chan {
    int fd;
    qc_tls_conn *tls;
    char *err; /* the caller's qc_http_resp.error: why TLS failed */
    size_t errcap;
} chan;

/* A TLS failure as errno EPROTO, its sentence in ch->err. */
static int tls_error(chan *ch)
{
    char detail[200];
    qc_tls_conn_failure(ch->tls, detail, sizeof detail);
    snprintf(ch->err, ch->errcap, "%s", detail);
    errno = EPROTO;
    return -1;
}

/* Waits until deadline for what a TLS call wants (QC_TLS_WANT_*); else
 * what its outcome r means: -1 with errno. */
static int tls_wait(chan *ch, int r, long long deadline)
{
    if (r == QC_TLS_WANT_READ || r == QC_TLS_WANT_WRITE)
        return wait_fd(ch->fd, r == QC_TLS_WANT_READ ? POLLIN : POLLOUT, deadline);
    if (r == QC_TLS_FAILED) return tls_error(ch);
    errno = ECONNRESET; /* QC_TLS_CLOSED */
    return -1;
}

static int chan_handshake(chan *ch, long long deadline)
{
    for (;;) {
        int r = qc_tls_handshake(ch->tls);
        if (r == QC_TLS_DONE) return 0;
        if (r == QC_TLS_CLOSED) {
            snprintf(ch->err, ch->errcap, "the agent closed the connection in the TLS handshake");
            errno = EPROTO;
            return -1;
        }
        if (tls_wait(ch, r, deadline) != 0) return -1;
    }
}

/* Writes some of buf: the count, or -1 with errno (EAGAIN: wait). */
static ssize_t chan_write(chan *ch, const void *buf, size_t n, long long deadline)
{
    if (!ch->tls) return send(ch->fd, buf, n, MSG_NOSIGNAL);
    size_t w;
    int r = qc_tls_write(ch->tls, buf, n, &w);
    if (r == QC_TLS_DONE) return (ssize_t)w;
    return tls_wait(ch, r, deadline) == 0 ? 0 : -1;
}

/* MSG_NOSIGNAL: a program using the SDK must not die of SIGPIPE. */
static int send_all(chan *ch, const void *buf, size_t n, long long deadline)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = chan_write(ch, p, n, deadline);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(ch->fd, POLLOUT, deadline) != 0) return -1;
        } else if (w < 0 && errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

/* Reads up to cap bytes, waiting until deadline: the count (0 at the end),
 * or -1 with errno (ETIMEDOUT; EPROTO with ch->err set). */
static ssize_t chan_read(chan *ch, char *buf, size_t cap, long long deadline)
{
    for (;;) {
        if (ch->tls) {
            size_t got;
            int r = qc_tls_read(ch->tls, buf, cap, &got);
            if (r == QC_TLS_DONE) return (ssize_t)got;
            if (r == QC_TLS_CLOSED) return 0;
            if (tls_wait(ch, r, deadline) != 0) return -1;
            continue;
        }
        ssize_t n = recv(ch->fd, buf, cap, 0);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (wait_fd(ch->fd, POLLIN, deadline) != 0) return -1;
    }
}

/* ---------- reading the answer ---------- */

/* The parser's scratch around the caller's qc_http_resp. */
typedef struct parse {
    qc_http_resp *r;
    size_t cap;
    int complete, too_big;
    char field[32]; /* the header being read, truncated */
    size_t field_len;
    int field_done, in_revision;
    size_t revision_len;
} parse;

static int on_body(http_parser *p, const char *at, size_t n)
{
    parse *ps = p->data;
    qc_http_resp *r = ps->r;
    if (r->len + n > QC_HTTP_MAX_BODY) {
        ps->too_big = 1;
        return -1;
    }
    if (r->len + n + 1 > ps->cap) {
        size_t cap = ps->cap ? ps->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return -1;
        r->body = b;
        ps->cap = cap;
    }
    memcpy(r->body + r->len, at, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

/* Appends what fits of at[0..n) to buf (cap bytes, *len used), kept
 * NUL-terminated: header pieces past the size we care about are dropped. */
static void append_cut(char *buf, size_t cap, size_t *len, const char *at, size_t n)
{
    size_t room = cap - 1 - *len, k = n < room ? n : room;
    memcpy(buf + *len, at, k);
    *len += k;
    buf[*len] = '\0';
}

/* Header names are kept (truncated) only to spot the revision. */
static int on_header_field(http_parser *p, const char *at, size_t n)
{
    parse *ps = p->data;
    if (ps->field_done) {
        ps->field_len = 0;
        ps->field_done = 0;
    }
    append_cut(ps->field, sizeof ps->field, &ps->field_len, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    parse *ps = p->data;
    qc_http_resp *r = ps->r;
    if (!ps->field_done) {
        ps->field_done = 1;
        ps->in_revision = strcasecmp(ps->field, "x-qcluster-revision") == 0;
        if (ps->in_revision) ps->revision_len = 0;
    }
    if (ps->in_revision) append_cut(r->revision, sizeof r->revision, &ps->revision_len, at, n);
    return 0;
}

static int on_complete(http_parser *p)
{
    parse *ps = p->data;
    ps->complete = 1;
    ps->r->status = (int)p->status_code;
    return 0;
}

/* Reads and parses the answer until it is complete, the peer closes or the
 * deadline passes. */
static int read_response(chan *ch, qc_http_resp *r, long long deadline, const char **why)
{
    static const http_parser_settings s = {.on_header_field = on_header_field,
                                           .on_header_value = on_header_value,
                                           .on_body = on_body,
                                           .on_message_complete = on_complete};
    parse ps = {.r = r};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &ps;
    char buf[8192];
    while (!ps.complete) {
        ssize_t n = chan_read(ch, buf, sizeof buf, deadline);
        if (n < 0) break;
        size_t used = http_parser_execute(&p, &s, buf, (size_t)n);
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK || used != (size_t)n) {
            *why = ps.too_big ? "answer too large" : "malformed answer";
            return -1;
        }
        if (n == 0) break;
    }
    if (ps.complete) return 0;
    *why = errno == ETIMEDOUT ? "timed out"
           : errno == EPROTO  ? r->error
                              : "connection closed before an answer";
    return -1;
}

/* The request line and headers; malloc'd (the caller frees it), NULL when
 * out of memory or the token is too long. */
static char *build_head(const qc_http_req *q, const char *host, size_t *len)
{
    char auth[600] = "";
    if (q->token && *q->token) {
        int n = snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", q->token);
        if (n < 0 || (size_t)n >= sizeof auth) return NULL;
    }
    const char *ctype = q->ctype ? q->ctype : "application/json";
    size_t cap =
        strlen(q->method) + strlen(q->path) + strlen(host) + strlen(ctype) + sizeof auth + 256;
    char *h = malloc(cap);
    if (!h) return NULL;
    int n = snprintf(h, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: qcluster/" QC_VERSION
                     "\r\nAccept: application/json\r\nConnection: close\r\n%s"
                     "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                     q->method, q->path, host, auth, ctype, q->blen);
    if (n < 0 || (size_t)n >= cap) {
        free(h);
        return NULL;
    }
    *len = (size_t)n;
    return h;
}

/* TLS over ch's socket for an https:// address: the context from q's
 * files, the server's certificate checked against host. 0, or -1 with *why. */
static int start_tls(chan *ch, const qc_http_req *q, const char *host, long long deadline,
                     const char **why)
{
    const qc_http_tls none = {0}, *t = q->tls ? q->tls : &none;
    qc_tls *ctx;
    *why = ch->err;
    if (qc_tls_client_new(t->cacert, t->cert, t->key, &ctx, ch->err, ch->errcap) != QC_OK)
        return -1;
    int rc = qc_tls_conn_new(ctx, ch->fd, host, &ch->tls);
    qc_tls_free(ctx); /* the session holds what it needs */
    if (rc != QC_OK) {
        *why = "out of memory";
        return -1;
    }
    if (chan_handshake(ch, deadline) == 0) return 0;
    if (errno != EPROTO) *why = errno == ETIMEDOUT ? "timed out" : strerror(errno);
    return -1;
}

int qc_http_call(const char *api, const qc_http_req *q, qc_http_resp *r, const char **why)
{
    char host[256];
    const char *port = NULL;
    memset(r, 0, sizeof *r);
    *why = "request too large";
    chan ch = {.fd = -1, .err = r->error, .errcap = sizeof r->error};
    size_t hl = 0;
    char *head = NULL;
    /* One deadline for the whole call: connecting, sending and reading. */
    long long deadline = now_ms() + (q->wait_ms > 0 ? q->wait_ms : QC_HTTP_TIMEOUT_MS);
    if (qc_http_split_hostport(api, host, sizeof host, &port) == 0) head = build_head(q, host, &hl);
    if (!head || (ch.fd = dial(host, port, deadline, why)) < 0) goto fail;
    if (qc_http_is_https(api) && start_tls(&ch, q, host, deadline, why) != 0) goto fail;
    /* A refused body (413) may be cut short; its answer can still be read. */
    if (send_all(&ch, head, hl, deadline) != 0 ||
        (send_all(&ch, q->body, q->blen, deadline) != 0 && errno != EPIPE && errno != ECONNRESET)) {
        *why = errno == EPROTO ? r->error : strerror(errno);
        goto fail;
    }
    if (read_response(&ch, r, deadline, why) != 0) goto fail;
    qc_tls_conn_free(ch.tls);
    close(ch.fd);
    free(head);
    return 0;
fail:
    free(head);
    qc_tls_conn_free(ch.tls);
    if (ch.fd >= 0) close(ch.fd);
    free(r->body);
    r->body = NULL;
    return -1;
}

/* ---------- the SDK ---------- */

static int url_safe(unsigned char ch, int keep_slash)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~' || (keep_slash && ch == '/');
}

char *qc_http_url_encode(char *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (url_safe(*p, 1)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return o;
}

struct qc_client {
    char *api;
    char *token; /* NULL: none */
    /* What the last leader answer said (term and leader; NULL: none), which
     * the next wait_for_leader_change waits to see differ: a change between
     * two calls is never missed. */
    int known;
    unsigned long long known_term;
    char *known_leader;
    char *cacert, *cert, *key; /* https:// (NULL: none); tls points at them */
    qc_http_tls tls;
};

/* s copied into *field (NULL or "": none); QC_ENOMEM. */
static int set_str(char **field, const char *s)
{
    char *v = s && *s ? strdup(s) : NULL;
    if (s && *s && !v) return QC_ENOMEM;
    free(*field);
    *field = v;
    return QC_OK;
}

int qc_client_set_tls(qc_client *c, const char *cacert, const char *cert, const char *key)
{
    if (!c || (cert && *cert) != (key && *key)) return QC_EINVAL;
    if (set_str(&c->cacert, cacert) || set_str(&c->cert, cert) || set_str(&c->key, key))
        return QC_ENOMEM;
    c->tls = (qc_http_tls){.cacert = c->cacert, .cert = c->cert, .key = c->key};
    return QC_OK;
}

int qc_client_new(const char *api, const char *token, qc_client **out)
{
    if (!out) return QC_EINVAL;
    *out = NULL;
    api = qc_http_default_api(api);
    char host[256];
    const char *port;
    if (qc_http_split_hostport(api, host, sizeof host, &port) != 0) return QC_EINVAL;
    qc_client *c = calloc(1, sizeof *c);
    if (!c) return QC_ENOMEM;
    c->api = strdup(api);
    c->token = token && *token ? strdup(token) : NULL;
    if (!c->api || (token && *token && !c->token)) {
        qc_client_free(c);
        return QC_ENOMEM;
    }
    /* As the CLI: the environment gives the TLS files until set otherwise. */
    const char *cert = getenv("QCLUSTER_CERT"), *key = getenv("QCLUSTER_KEY");
    int rc = qc_client_set_tls(c, getenv("QCLUSTER_CACERT"), cert && key ? cert : NULL,
                               cert && key ? key : NULL);
    if (rc != QC_OK) {
        qc_client_free(c);
        return rc;
    }
    *out = c;
    return QC_OK;
}

void qc_client_free(qc_client *c)
{
    if (!c) return;
    free(c->api);
    free(c->token);
    free(c->known_leader);
    free(c->cacert);
    free(c->cert);
    free(c->key);
    free(c);
}

/* GETs path and parses its JSON answer into *v (the caller frees it with
 * yajl_tree_free); *status is the HTTP status. QC_EIO when the agent cannot
 * be asked or answers an error that is not JSON, QC_EINVAL when a 200
 * answer is not JSON. */
static int get_json(qc_client *c, const char *path, int wait_ms, int *status, yajl_val *v)
{
    qc_http_req q = {
        .method = "GET", .path = path, .token = c->token, .wait_ms = wait_ms, .tls = &c->tls};
    qc_http_resp r;
    const char *why;
    *v = NULL;
    if (qc_http_call(c->api, &q, &r, &why) != 0) return QC_EIO;
    *status = r.status;
    *v = r.body ? yajl_tree_parse(r.body, NULL, 0) : NULL;
    free(r.body);
    if (*v) return QC_OK;
    return r.status == 200 ? QC_EINVAL : QC_EIO;
}

int qc_client_is_leader(qc_client *c)
{
    if (!c) return QC_EINVAL;
    int status = 0;
    yajl_val v;
    int rc = get_json(c, "/v1/status", QC_HTTP_TIMEOUT_MS, &status, &v);
    if (rc == QC_OK && status != 200) rc = QC_EIO;
    const char *role = qc_json_get_str(v, "role");
    if (rc == QC_OK && !role) rc = QC_EINVAL;
    if (rc == QC_OK) rc = strcmp(role, "leader") == 0;
    yajl_tree_free(v);
    return rc;
}

/* A copy of v's string key; "" when absent. NULL only when out of memory. */
static char *dup_str(yajl_val v, const char *key)
{
    const char *s = qc_json_get_str(v, key);
    return strdup(s ? s : "");
}

/* The Peer of a /v1/leader answer: what the API says, plus what being the
 * leader implies (role "leader", up, voter); priority -1 from an agent too
 * old to say. *out is the caller's, freed with qc_peer_free.
 * The strings come first and the struct last, so that a failure frees only
 * what this function made (and the CLI, which links this file without the
 * node, needs no qc_peer_free). */
static int leader_peer(yajl_val v, qc_peer **out)
{
    yajl_val port = qc_json_get(v, "port"), meta = qc_json_get(v, "metadata");
    yajl_val priority = qc_json_get(v, "priority"), healthy;
    if (!qc_json_get_str(v, "identifier") || !port || !YAJL_IS_INTEGER(port)) return QC_EINVAL;
    char *id = dup_str(v, "identifier"), *host = dup_str(v, "host"), *role = strdup("leader");
    char *mtext = NULL;
    int rc = meta && YAJL_IS_OBJECT(meta) ? qc_json_val_text(meta, &mtext) : QC_OK;
    if (rc == QC_OK && !mtext) mtext = strdup("{}");
    qc_peer *p = rc == QC_OK && id && host && role && mtext ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        free(id);
        free(host);
        free(role);
        free(mtext);
        return rc == QC_OK ? QC_ENOMEM : rc;
    }
    *p = (qc_peer){.identifier = id,
                   .host = host,
                   .port = (int)YAJL_GET_INTEGER(port),
                   .metadata = mtext,
                   .role = role,
                   .up = 1,
                   .voter = 1,
                   .priority =
                       priority && YAJL_IS_INTEGER(priority) ? (int)YAJL_GET_INTEGER(priority) : -1,
                   .healthy = (healthy = qc_json_get(v, "healthy")) && YAJL_IS_TRUE(healthy)};
    *out = p;
    return QC_OK;
}

/* Keeps what a /v1/leader answer said (its term, the leader or none) as
 * the client's knowledge; an answer without a term is not kept. */
static void remember(qc_client *c, yajl_val v, int has_leader)
{
    yajl_val t = qc_json_get(v, "term"), lid = qc_json_get(v, "identifier");
    if (!t || !YAJL_IS_INTEGER(t) || YAJL_GET_INTEGER(t) < 0) return;
    const char *text = has_leader && YAJL_IS_STRING(lid) ? YAJL_GET_STRING(lid) : NULL;
    if (has_leader && !text) return;
    char *id = NULL;
    if (text && !(id = strdup(text))) {
        c->known = 0; /* out of memory: the next wait asks afresh */
        return;
    }
    free(c->known_leader);
    c->known_leader = id;
    c->known_term = (unsigned long long)YAJL_GET_INTEGER(t);
    c->known = 1;
}

/* GET path (a /v1/leader form) and the Peer of its answer. */
static int leader_at(qc_client *c, const char *path, int wait_ms, qc_peer **out)
{
    if (!c || !out) return QC_EINVAL;
    *out = NULL;
    int status = 0;
    yajl_val v;
    int rc = get_json(c, path, wait_ms, &status, &v);
    if (rc == QC_OK && status == 503)
        rc = QC_ENOLEADER;
    else if (rc == QC_OK && status != 200)
        rc = QC_EIO;
    else if (rc == QC_OK)
        rc = leader_peer(v, out);
    if (rc == QC_OK || rc == QC_ENOLEADER) remember(c, v, rc == QC_OK);
    yajl_tree_free(v);
    return rc;
}

int qc_client_get_leader_info(qc_client *c, qc_peer **out)
{
    return leader_at(c, "/v1/leader", QC_HTTP_TIMEOUT_MS, out);
}

int qc_client_wait_for_leader_change(qc_client *c, double timeout, qc_peer **out)
{
    if (!c || !out || !(timeout >= 0)) return QC_EINVAL;
    *out = NULL;
    /* The agent holds a long-poll at most QC_API_MAX_WAIT_S (300 s). */
    if (timeout > 300) timeout = 300;
    if (!c->known) { /* nothing returned yet: the baseline is the leader now */
        int status = 0;
        yajl_val v;
        int rc = get_json(c, "/v1/leader", QC_HTTP_TIMEOUT_MS, &status, &v);
        if (rc == QC_OK && (status == 200 || status == 503)) remember(c, v, status == 200);
        yajl_tree_free(v);
        if (rc != QC_OK) return rc;
        if (!c->known) return QC_EIO; /* an answer without a term */
    }
    const char *id = c->known_leader ? c->known_leader : "none";
    char *path = malloc(strlen(id) * 3 + 96);
    if (!path) return QC_ENOMEM;
    char *e =
        path + sprintf(path, "/v1/leader?wait=%.3f&term=%llu&leader=", timeout, c->known_term);
    qc_http_url_encode(e, id);
    /* The agent holds the request up to timeout; then the usual bound. */
    int rc = leader_at(c, path, (int)(timeout * 1000) + QC_HTTP_TIMEOUT_MS, out);
    free(path);
    return rc;
}

/* ---------- health checks ---------- */

void qc_client_checks_free(qc_check *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        free(list[i].name);
        free(list[i].kind);
        free(list[i].output);
    }
    free(list);
}

/* One check of a /v1/checks answer into *k; QC_EINVAL when it is not one. */
static int check_from(yajl_val v, qc_check *k)
{
    const char *name = qc_json_get_str(v, "name"), *status = qc_json_get_str(v, "status");
    yajl_val since = qc_json_get(v, "since");
    if (!name || !status || (since && !YAJL_IS_NUMBER(since))) return QC_EINVAL;
    k->name = strdup(name);
    k->kind = dup_str(v, "kind");
    k->output = dup_str(v, "output");
    k->passing = strcmp(status, "passing") == 0;
    k->since = since ? YAJL_GET_DOUBLE(since) : 0;
    return k->name && k->kind && k->output ? QC_OK : QC_ENOMEM;
}

int qc_client_checks(qc_client *c, qc_check **out, size_t *n)
{
    if (!c || !out || !n) return QC_EINVAL;
    *out = NULL;
    *n = 0;
    int status = 0;
    yajl_val v;
    int rc = get_json(c, "/v1/checks", QC_HTTP_TIMEOUT_MS, &status, &v);
    if (rc == QC_OK && status != 200) rc = QC_EIO;
    if (rc == QC_OK && !YAJL_IS_ARRAY(v)) rc = QC_EINVAL;
    size_t len = rc == QC_OK ? v->u.array.len : 0;
    qc_check *list = rc == QC_OK ? calloc(len ? len : 1, sizeof *list) : NULL;
    if (rc == QC_OK && !list) rc = QC_ENOMEM;
    for (size_t i = 0; rc == QC_OK && i < len; i++) rc = check_from(v->u.array.values[i], &list[i]);
    yajl_tree_free(v);
    if (rc != QC_OK) {
        qc_client_checks_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return QC_OK;
}

/* A name as the config allows it ([A-Za-z0-9_.-], 1..64 bytes), so that
 * it goes into the path as it is. */
static int check_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > 64) return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int check_report(qc_client *c, const char *name, int pass, const char *output)
{
    if (!c || !check_name_ok(name)) return QC_EINVAL;
    char path[128];
    snprintf(path, sizeof path, "/v1/checks/%s/%s", name, pass ? "pass" : "fail");
    qc_http_req q = {.method = "PUT",
                     .path = path,
                     .ctype = "text/plain",
                     .body = output,
                     .blen = output ? strlen(output) : 0,
                     .token = c->token,
                     .tls = &c->tls};
    qc_http_resp r;
    const char *why;
    if (qc_http_call(c->api, &q, &r, &why) != 0) return QC_EIO;
    free(r.body);
    switch (r.status) {
    case 200: return QC_OK;
    case 404: return QC_ENOTFOUND;
    case 409: return QC_EINVAL;
    default: return QC_EIO;
    }
}

int qc_client_check_pass(qc_client *c, const char *name, const char *output)
{
    return check_report(c, name, 1, output);
}

int qc_client_check_fail(qc_client *c, const char *name, const char *output)
{
    return check_report(c, name, 0, output);
}
