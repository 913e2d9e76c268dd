/* libFuzzer target: the HTTP API's request path, end to end. Each input is
 * one client connection: a fresh qc_api over a fake view gets one end of a
 * socketpair (qc_api_adopt), the harness writes the input to the other end
 * in chunks, runs the libev loop without blocking between them, hangs up,
 * and runs it until the API has closed the connection (bounded).
 * First byte, flags: bit 0 a leader is known (then it comes and goes, and
 * parked long-polls hear of it through qc_api_notify); bit 1 the view
 * answers later (callbacks fired from the loop, or, with bit 2, after
 * qc_api_free as the agent may); bits 3-5 the chunk size (0: all at once,
 * k: 2^k bytes); bit 6 a request timeout of a microsecond (the 408 path);
 * bit 7 more peers than the API's stack buffer. The rest is what the client
 * sends.
 * Properties: no memory error or leak, and every byte the API sends parses
 * as HTTP/1.1 responses (http_parser in response mode), the last one whole;
 * an answer to HEAD has GET's Content-Length and no body (the harness parses
 * the input's requests too, to know which answers those are). The API
 * knows the method once its parser passed it some of the URL; whether it
 * had, when it answers a request before its headers were whole, depends on
 * where the reads split the input (a 400: http_parser hands over the URL
 * read so far at the end of each read, but not at a parse error) or on
 * timing (a 408), so a 400 or 408 to a HEAD may have its body or none, and
 * nothing else after its headers. A 431 always comes after some URL.
 * Test-only. */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api.h"
#include "base/common.h"
#include "base/log.h"
#include "base/metrics.h"
#include "core/view.h"
#include "fuzz.h"

#define TOKEN "t"
#define MAX_SPINS 400
#define MAX_DEFERRED 64
#define NPEERS 20

enum { D_TRANSFER, D_MEMBER, D_KV, D_LIST };

typedef struct deferred {
    int kind;
    void *done;
    void *arg;
    qc_kv_each_fn *each;
} deferred;

typedef struct fake {
    int leader, later, many_peers;
    unsigned turn; /* rotates the answers */
    deferred d[MAX_DEFERRED];
    size_t nd;
} fake;

static fake F;

static const qc_peer_info PEER = {.identifier = "server_b",
                                  .host = "localhost",
                                  .port = 7002,
                                  .metadata = "{\"a\":[1,2]}",
                                  .role = "leader",
                                  .up = 1,
                                  .voter = 1,
                                  .priority = 2,
                                  .healthy = 1};
static const qc_peer_info SELF = {.identifier = "server_a",
                                  .host = "localhost",
                                  .port = 7001,
                                  .metadata = "{}",
                                  .role = "follower",
                                  .up = 1,
                                  .voter = 1,
                                  .is_self = 1,
                                  .priority = 1,
                                  .healthy = 1};

static int v_is_leader(void *ud)
{
    (void)ud;
    return 0;
}
static uint64_t v_term(void *ud)
{
    (void)ud;
    return 3 + F.turn % 2;
}
static const char *v_role(void *ud)
{
    (void)ud;
    return "follower";
}
static uint64_t v_commit(void *ud)
{
    (void)ud;
    return 42;
}
static int v_leader(void *ud, qc_peer_info *out)
{
    (void)ud;
    if (!F.leader) return QC_ENOLEADER;
    *out = PEER;
    return 0;
}
static void v_self(void *ud, qc_peer_info *out)
{
    (void)ud;
    *out = SELF;
}
static size_t v_peers(void *ud, qc_peer_info *out, size_t max)
{
    (void)ud;
    size_t n = F.many_peers ? NPEERS : 2;
    for (size_t i = 0; i < n && i < max; i++) {
        out[i] = PEER;
        out[i].metadata = i % 2 ? "not json" : PEER.metadata;
    }
    return n;
}

static int rc_of(void)
{
    static const int rcs[] = {0,        QC_ENOTFOUND, QC_EINVAL, QC_ENOLEADER,
                              QC_EBUSY, QC_ETOOBIG,   QC_EIO};
    return rcs[F.turn++ % (sizeof rcs / sizeof rcs[0])];
}

static void kv_fire(qc_kv_done_fn *done, void *arg)
{
    static const int sts[] = {
        QC_KV_OK,      QC_KV_CONFLICT, QC_KV_NOTFOUND, QC_KV_TOOBIG, QC_ENOLEADER,
        QC_ENOTLEADER, QC_EIO,         QC_EBUSY,       QC_ECORRUPT,  99};
    qc_kv_answer a = {.status = sts[F.turn++ % (sizeof sts / sizeof sts[0])],
                      .revision = 7,
                      .value = (const uint8_t *)"v\0\xff",
                      .vlen = 3};
    done(arg, &a);
}

static void list_fire(qc_kv_each_fn *each, qc_kv_done_fn *done, void *arg)
{
    each(arg, (const uint8_t *)"k1", 2, (const uint8_t *)"text", 4, 1);
    each(arg, (const uint8_t *)"k\xff", 2, (const uint8_t *)"\0\1", 2, 2);
    kv_fire(done, arg);
}

/* Keeps a callback for later; 0, or -1 when it must be answered now. */
static int defer(int kind, void *done, void *arg, qc_kv_each_fn *each)
{
    if (!F.later || F.nd == MAX_DEFERRED) return -1;
    F.d[F.nd++] = (deferred){kind, done, arg, each};
    return 0;
}

static void fire_all(void)
{
    /* a callback may not add more (the API calls the view only while
     * parsing), but copy first anyway */
    size_t n = F.nd;
    deferred d[MAX_DEFERRED];
    memcpy(d, F.d, n * sizeof d[0]);
    F.nd = 0;
    for (size_t i = 0; i < n; i++) {
        switch (d[i].kind) {
        case D_TRANSFER: ((qc_transfer_done_fn *)d[i].done)(d[i].arg, rc_of()); break;
        case D_MEMBER: ((qc_member_done_fn *)d[i].done)(d[i].arg, rc_of(), "later"); break;
        case D_KV: kv_fire((qc_kv_done_fn *)d[i].done, d[i].arg); break;
        default: list_fire(d[i].each, (qc_kv_done_fn *)d[i].done, d[i].arg); break;
        }
    }
}

static void v_transfer(void *ud, const char *to, qc_transfer_done_fn *done, void *arg)
{
    (void)ud;
    (void)to;
    if (defer(D_TRANSFER, (void *)done, arg, NULL)) done(arg, rc_of());
}

static void v_join(void *ud, const char *const *addrs, size_t n, qc_member_done_fn *done, void *arg)
{
    (void)ud;
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(addrs[i] != NULL);
    if (defer(D_MEMBER, (void *)done, arg, NULL)) done(arg, rc_of(), n ? addrs[0] : NULL);
}

static void v_leave(void *ud, const char *id, qc_member_done_fn *done, void *arg)
{
    (void)ud;
    if (defer(D_MEMBER, (void *)done, arg, NULL)) done(arg, rc_of(), id ? NULL : "");
}

static void v_set_metadata(void *ud, const char *json, qc_member_done_fn *done, void *arg)
{
    (void)ud;
    FUZZ_CHECK(json && json[0] == '{');
    if (defer(D_MEMBER, (void *)done, arg, NULL)) done(arg, rc_of(), NULL);
}

static void v_kv_put(void *ud, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                     int64_t cas, qc_kv_done_fn *done, void *arg)
{
    (void)ud;
    FUZZ_CHECK(klen > 0 && key && (value || vlen == 0) && cas >= QC_KV_CAS_NONE);
    if (defer(D_KV, (void *)done, arg, NULL)) kv_fire(done, arg);
}

static void v_kv_delete(void *ud, const uint8_t *key, size_t klen, int64_t cas, qc_kv_done_fn *done,
                        void *arg)
{
    (void)ud;
    FUZZ_CHECK(klen > 0 && key && cas >= QC_KV_CAS_NONE);
    if (defer(D_KV, (void *)done, arg, NULL)) kv_fire(done, arg);
}

static void v_kv_get(void *ud, const uint8_t *key, size_t klen, int stale, qc_kv_done_fn *done,
                     void *arg)
{
    (void)ud;
    (void)stale;
    FUZZ_CHECK(klen > 0 && key);
    if (defer(D_KV, (void *)done, arg, NULL)) kv_fire(done, arg);
}

static void v_kv_list(void *ud, const uint8_t *prefix, size_t plen, int stale, qc_kv_each_fn *each,
                      qc_kv_done_fn *done, void *arg)
{
    (void)ud;
    (void)stale;
    FUZZ_CHECK(prefix || plen == 0);
    if (defer(D_LIST, (void *)done, arg, each)) list_fire(each, done, arg);
}

static const qc_view VIEW = {.is_leader = v_is_leader,
                             .term = v_term,
                             .role = v_role,
                             .commit_index = v_commit,
                             .leader = v_leader,
                             .self = v_self,
                             .peers = v_peers,
                             .transfer = v_transfer,
                             .join = v_join,
                             .leave = v_leave,
                             .set_metadata = v_set_metadata,
                             .kv_put = v_kv_put,
                             .kv_delete = v_kv_delete,
                             .kv_get = v_kv_get,
                             .kv_list = v_kv_list};

/* ---------- the client side: reads and checks what the API sends ---------- */

#define MAX_REQUESTS 256

typedef struct client {
    int fd, eof;
    int lenient; /* after qc_api_free: answers may be cut short */
    http_parser parser;
    int responses;
    /* The method of each request in the input, in order, once some of its
     * URL was parsed (as the API knows it when it answers), else -1. */
    int methods[MAX_REQUESTS];
    size_t requests, answers;
    /* After a 400 or 408 to a HEAD: its Content-Length, and the bytes that
     * came after its headers (all of its body or none). */
    int either;
    unsigned long long either_len;
    size_t tail;
} client;

static int on_request_begin(http_parser *p)
{
    client *cl = p->data;
    if (cl->requests < MAX_REQUESTS) cl->methods[cl->requests] = -1;
    cl->requests++;
    return 0;
}

static int on_request_url(http_parser *p, const char *at, size_t n)
{
    (void)at;
    (void)n;
    client *cl = p->data;
    if (cl->requests <= MAX_REQUESTS) cl->methods[cl->requests - 1] = (int)p->method;
    return 0;
}

static const http_parser_settings request_settings = {.on_message_begin = on_request_begin,
                                                      .on_url = on_request_url};

/* Returns 1 (no body follows) for the answer to a HEAD request. Answers
 * come in the order of the requests; an interim one (100 Continue) comes
 * before its request's answer. */
static int on_response_headers(http_parser *p)
{
    client *cl = p->data;
    if (p->status_code / 100 == 1) return 0;
    size_t k = cl->answers++;
    int head = k < cl->requests && k < MAX_REQUESTS && cl->methods[k] == HTTP_HEAD;
    if (head && (p->status_code == 400 || p->status_code == 408)) {
        cl->either = 1;
        cl->either_len = p->content_length;
    }
    return head;
}

/* Pauses after a 400 or 408 to a HEAD (they close the connection):
 * client_read counts what follows. */
static int on_response_complete(http_parser *p)
{
    client *cl = p->data;
    cl->responses++;
    if (cl->either) http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings response_settings = {.on_headers_complete = on_response_headers,
                                                       .on_message_complete = on_response_complete};

static void client_read(client *cl)
{
    char buf[8192];
    while (!cl->eof) {
        ssize_t n = recv(cl->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) cl->eof = 1; /* reset */
            return;
        }
        if (cl->either && HTTP_PARSER_ERRNO(&cl->parser) == HPE_PAUSED) {
            cl->tail += (size_t)n;
            if (n == 0) {
                FUZZ_CHECK(cl->lenient || cl->tail == 0 || cl->tail == cl->either_len);
                cl->eof = 1;
            }
            continue;
        }
        size_t k = http_parser_execute(&cl->parser, &response_settings, buf, (size_t)n);
        if (HTTP_PARSER_ERRNO(&cl->parser) == HPE_PAUSED) {
            cl->tail = (size_t)n - k; /* the rest of this read */
            continue;
        }
        if (cl->lenient) {
            if (n == 0) cl->eof = 1;
            continue;
        }
        if (HTTP_PARSER_ERRNO(&cl->parser) != HPE_OK || k != (size_t)n) {
            fprintf(stderr, "the API sent a malformed response: %s\n",
                    http_errno_description(HTTP_PARSER_ERRNO(&cl->parser)));
            FUZZ_CHECK(0);
        }
        if (n == 0) cl->eof = 1; /* execute(…, 0) above checked the end */
    }
}

/* Writes what the socket takes now; the rest waits for the next round. */
static size_t client_write(client *cl, const uint8_t *p, size_t n)
{
    ssize_t k = send(cl->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    return k > 0 ? (size_t)k : 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    qc_log_set_level(QC_LOG_ERROR + 1); /* quiet */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t flags = data[0];
    const uint8_t *in = data + 1;
    size_t left = size - 1, chunk = (flags >> 3) & 7 ? (size_t)1 << ((flags >> 3) & 7) : left;
    memset(&F, 0, sizeof F);
    F.leader = flags & 1;
    F.later = (flags >> 1) & 1;
    F.many_peers = flags >> 7;

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    FUZZ_CHECK(loop != NULL);
    qc_metrics *m = qc_metrics_new();
    qc_api *api = NULL;
    FUZZ_CHECK(qc_api_new(loop, "127.0.0.1", 0, &VIEW, m, TOKEN, &api) == QC_OK);
    if (flags & 64) qc_api_set_limits(api, &(qc_api_limits){.request_timeout_s = 1e-6});
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    FUZZ_CHECK(qc_api_adopt(api, sv[0]) == QC_OK);
    client cl = {.fd = sv[1]};
    http_parser_init(&cl.parser, HTTP_RESPONSE);
    cl.parser.data = &cl;
    http_parser requests;
    http_parser_init(&requests, HTTP_REQUEST);
    requests.data = &cl;
    (void)http_parser_execute(&requests, &request_settings, (const char *)in, left);
    /* A parse error after the method (in the URL, say) hands over no URL,
     * but the API, reading in pieces, may have had some: HEAD all the same. */
    enum http_errno rerr = HTTP_PARSER_ERRNO(&requests);
    if (rerr != HPE_OK && rerr != HPE_INVALID_METHOD && cl.requests > 0 &&
        cl.requests <= MAX_REQUESTS && cl.methods[cl.requests - 1] < 0)
        cl.methods[cl.requests - 1] = (int)requests.method;

    int spins = 0, hung_up = 0;
    while (spins++ < MAX_SPINS) {
        if (left) {
            size_t k = client_write(&cl, in, left < chunk ? left : chunk);
            in += k;
            left -= k;
        } else if (!hung_up) {
            shutdown(cl.fd, SHUT_WR);
            hung_up = 1;
        }
        ev_run(loop, EVRUN_NOWAIT);
        client_read(&cl);
        if (cl.eof && cl.fd >= 0 && hung_up) {
            close(cl.fd); /* ends the API's linger */
            cl.fd = -1;
        }
        if (F.later && !(flags & 4) && spins % 8 == 0) fire_all();
        if ((flags & 1) && spins % 16 == 0) { /* the leader comes and goes */
            F.leader = !F.leader;
            qc_api_notify(api);
        }
        if (hung_up && qc_api_connections(api) == 0) break;
    }
    qc_api_free(api); /* parked and pending requests included */
    fire_all();       /* after the free, as the agent may */
    ev_run(loop, EVRUN_NOWAIT);
    if (cl.fd >= 0) {
        cl.lenient = 1;
        client_read(&cl);
        close(cl.fd);
    }
    qc_metrics_free(m);
    ev_loop_destroy(loop);
    return 0;
}
