/* The HTTP/1.1 API on the agent's libev loop: http_parser reads requests,
 * yajl writes JSON, long-polls (GET /v1/leader?wait) are parked
 * connections with a timer, and transfers, membership changes and KV
 * requests wait for the view's callback (struct pending). The other
 * routes are in routes_*.c, which reach this file only through
 * api_int.h's api_server.
 * It reads the agent only through qc_view and must never block, never
 * let one client hurt another, and never touch a closed connection:
 * closed connections are only freed from the loop (see reap_cb). */
#define _GNU_SOURCE /* accept4 */
#include "api/api.h"
#include "api/api_int.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "base/common.h"
#include "base/json.h"
#include "base/log.h"
#include "core/members.h" /* QC_MEMBER_ID_MAX */
#include "net/tls.h"

#define IN_CAP 16384                    /* unparsed request bytes kept per connection */
#define HDR_MAX QC_API_MAX_HEADER       /* request line plus headers */
#define HDR_LINE 4                      /* ": " and CRLF, counted for each header */
#define AUTH_MAX (QC_API_MAX_TOKEN + 7) /* "Bearer " and the token */
#define OUT_HIGH (256 * 1024)           /* stop parsing while this much output waits */
#define LINGER_S 2.0
/* Out of descriptors or memory, the listener stays readable: the accept
 * watcher pauses this long instead of spinning on the failing accept. */
#define ACCEPT_PAUSE_S 0.1
/* Thousands of long-poll clients may connect at once (after a restart, or
 * all reconnecting after a change); the kernel caps it at somaxconn. */
#define LISTEN_BACKLOG 4096
/* Units of client work (a connection accepted, a request read, a parked
 * poll answered) done in one loop turn. Past it the rest waits for the
 * next turns (struct qc_api, drain_cb): thousands of polls woken or
 * asking again at once never hold the loop for long, and peer messages
 * and the raft timer, at a higher priority, run between the batches. */
#define TURN_BUDGET 256
/* Every API watcher runs below the agent's (peers, raft timer, the WAL's
 * completions: the default priority) within a loop turn. */
#define API_PRI EV_MINPRI
/* A connection's input, request target and Authorization value: allocated
 * while a request is read, given back when the connection parks or idles
 * with nothing buffered, so a parked long-poll costs well under 1 KiB. */
#define BUFS_SIZE (IN_CAP + URL_MAX + 1 + AUTH_MAX + 1)

enum { HDR_OTHER = 0, HDR_AUTH, HDR_EXPECT };

/* A TLS read that must wait for the socket to be writable, or a write for
 * it to be readable (conn.tls_swap). */
enum { TLS_READ_WANTS_WRITE = 1, TLS_WRITE_WANTS_READ = 2 };

static void conn_process(conn *c);
static void conn_flush(conn *c);
static int admit_late(conn *c);
static void respond_error(conn *c, int status, const char *msg, const char *extra);
static void slot_leave(conn *c);
static void slot_back(conn *c);
static void hold_back(conn *c);
static int room_for(qc_api *a, const client_addr *addr, int idle_only);
static void over_refused(conn *c, int why);
static int held_to_slot(conn *c);

/* qcluster_api_limit_total{limit=NAME}: a limit turned a client away. */
static void limit_hit(const qc_api *a, const char *name)
{
    qc_metrics_add(a->metrics, "qcluster_api_limit_total", "limit", name, 1);
}

/* ---------- connection lifecycle ---------- */

static void list_unlink(conn *c)
{
    if (!c->home) return;
    if (c->prev)
        c->prev->next = c->next;
    else
        *c->home = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = c->prev = NULL;
    c->home = NULL;
}

static void list_push(conn **head, conn *c)
{
    list_unlink(c);
    c->prev = NULL;
    c->next = *head;
    if (*head) (*head)->prev = c;
    *head = c;
    c->home = head;
}

/* 1 when this loop turn may do one more unit of client work (see
 * TURN_BUDGET); the count starts again with each turn. */
static int turn_take(qc_api *a)
{
    unsigned it = ev_iteration(a->loop);
    if (it != a->turn_iter) {
        a->turn_iter = it;
        a->turn_used = 0;
    }
    if (a->turn_used >= TURN_BUDGET) return 0;
    a->turn_used++;
    return 1;
}

/* Work waits for drain_cb: run it at the end of this turn and the next
 * ones, without blocking in between, until none is left. */
static void drain_wake(qc_api *a)
{
    ev_check_start(a->loop, &a->drain_w);
    ev_idle_start(a->loop, &a->spin_w);
}

static void dq_unlink(conn *c)
{
    qc_api *a = c->api;
    if (!c->deferred) return;
    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        a->dhead = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    else
        a->dtail = c->dprev;
    c->dnext = c->dprev = NULL;
    c->deferred = 0;
}

/* c's input waits for a turn with budget left, behind the others. */
static void defer_read(conn *c)
{
    qc_api *a = c->api;
    ev_io_stop(a->loop, &c->rio);
    if (c->deferred) return;
    c->deferred = 1;
    c->dnext = NULL;
    c->dprev = a->dtail;
    if (a->dtail)
        a->dtail->dnext = c;
    else
        a->dhead = c;
    a->dtail = c;
    drain_wake(a);
}

/* The buffers a request is read into; QC_ENOMEM. */
static int bufs_get(conn *c)
{
    if (c->in) return QC_OK;
    char *b = malloc(BUFS_SIZE);
    if (!b) return QC_ENOMEM;
    c->in = b;
    c->url = b + IN_CAP;
    c->auth = c->url + URL_MAX + 1;
    c->url[0] = c->auth[0] = '\0';
    return QC_OK;
}

/* Between requests with nothing buffered (parked, idle): the buffers go
 * back, and the output buffer too once flushed. */
static void bufs_drop(conn *c)
{
    if (c->in && c->in_len == 0 && c->req_start <= 0) {
        free(c->in);
        c->in = c->url = c->auth = NULL;
        c->url_len = c->auth_len = 0;
    }
    if (c->out && c->out_len == 0) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
}

/* Out of the long-poll budget, holding no slot yet. */
static void unhold(conn *c)
{
    if (!c->held) return;
    c->held = 0;
    c->api->nheld--;
    list_push(&c->api->conns, c);
}

/* Back on the connection list, holding no slot yet (see slot_back). */
static void unpark(conn *c)
{
    if (!c->parked) return;
    qc_api *a = c->api;
    a->nparked--;
    ev_timer_stop(a->loop, &c->wait);
    free(c->park_leader);
    c->park_leader = NULL;
    c->parked = 0;
    c->busy = 0;
    c->expired = 0;
    list_push(&a->conns, c);
}

/* Stops everything and hands the memory to the reaper; safe to call twice. */
static void conn_close(conn *c)
{
    if (c->dead) return;
    qc_api *a = c->api;
    c->dead = 1;
    unpark(c);
    unhold(c);
    if (c->pend) c->pend->c = NULL;
    c->pend = NULL;
    ev_io_stop(a->loop, &c->rio);
    ev_io_stop(a->loop, &c->wio);
    ev_timer_stop(a->loop, &c->idle);
    dq_unlink(c);
    qc_tls_conn_free(c->tls);
    c->tls = NULL;
    close(c->fd);
    list_push(&a->zombies, c);
    if (c->counted) a->nslots--;
    if (c->over) a->nspare--;
    c->counted = c->over = 0;
    a->nconns--;
    qc_metrics_set(a->metrics, "qcluster_api_connections", NULL, NULL, a->nconns);
    ev_prepare_start(a->loop, &a->reaper);
}

static void conn_free(conn *c)
{
    free(c->in);
    free(c->body);
    free(c->out);
    free(c);
}

static void reap_all(qc_api *a)
{
    while (a->zombies) {
        conn *c = a->zombies;
        list_unlink(c);
        conn_free(c);
    }
}

static void reap_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    qc_api *a = w->data;
    reap_all(a);
    ev_prepare_stop(loop, w);
}

enum { DL_IDLE, DL_LINGER, DL_REQUEST, DL_HEADER };

/* The earliest deadline that applies to c, and which (DL_*):
 * lingering: LINGER_S after the half-close; a request under way: request_s
 * after its first byte, and header_s for its headers; a new connection's
 * first request: header_s after the connection; an idle keep-alive
 * connection, or an answer the client does not read: idle_s after the last
 * progress. Bytes that start no request (blank lines) are no progress. */
static ev_tstamp deadline(const conn *c, int *kind)
{
    const qc_api *a = c->api;
    *kind = DL_IDLE;
    ev_tstamp at = c->progress + (c->held ? QC_API_LONGPOLL_GRACE_S : a->idle_s);
    if (c->lingering) {
        *kind = DL_LINGER;
        return c->linger_start + LINGER_S;
    }
    if (c->req_start > 0 && c->req_start + a->request_s < at) {
        *kind = DL_REQUEST;
        at = c->req_start + a->request_s;
    }
    ev_tstamp from = c->req_start > 0 ? c->req_start : c->nreq == 0 ? c->opened : 0;
    if (from > 0 && !c->hdr_done && from + a->header_s < at) {
        *kind = DL_HEADER;
        at = from + a->header_s;
    }
    return at;
}

/* Sets the connection's timer to its deadline; none while busy (a long-poll
 * or a view callback pending): those end on their own. */
static void timer_arm(conn *c)
{
    qc_api *a = c->api;
    if (c->dead) return;
    ev_timer_stop(a->loop, &c->idle);
    if (c->busy && !c->lingering) return;
    int kind;
    ev_tstamp left = deadline(c, &kind) - ev_now(a->loop);
    ev_timer_set(&c->idle, left > 0 ? left : 0., 0.);
    ev_timer_start(a->loop, &c->idle);
}

/* Something moved (an answer went out, a request came in, a wait ended). */
static void touch(conn *c)
{
    c->progress = ev_now(c->api->loop);
    timer_arm(c);
}

/* ---------- output ---------- */

static int out_append(conn *c, const char *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n) cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o) return QC_ENOMEM;
        c->out = o;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return QC_OK;
}

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Internal Server Error";
    }
}

/* The status line and headers of a response with a body of len bytes
 * into head (cap bytes): their length, or -1 when they do not fit. */
static int response_head(char *head, size_t cap, int status, const char *ctype, size_t len,
                         int closing, const char *extra)
{
    int n = snprintf(head, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                     status, status_text(status), ctype, len, closing ? "close" : "keep-alive",
                     extra ? extra : "");
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* An answer closes its connection: the client asked, or the request
 * cannot be trusted to end where the parser says. */
static void answer_closes(conn *c, int status)
{
    /* err_status: the parser gave up on this request (e.g. a body over the
     * limit), so the rest of the input cannot be trusted. */
    if (!c->keep_alive || c->err_status || status == 400 || status == 408 || status == 414 ||
        status == 431)
        c->closing = 1;
}

/* Queues one response and starts writing it. extra: more header lines. */
static void respond(conn *c, int status, const char *ctype, const char *body, size_t len,
                    const char *extra)
{
    if (c->dead) return;
    answer_closes(c, status);
    /* An answer to HEAD has the headers of the answer to GET, Content-Length
     * included, and no body (RFC 9110 9.3.2): a body would be read as the
     * next response. */
    size_t send = c->method == HTTP_HEAD ? 0 : len;
    c->method = -1; /* answered: a parse error before the next request starts is no HEAD */
    char head[512];
    int n = response_head(head, sizeof head, status, ctype, len, c->closing, extra);
    if (n < 0 || out_append(c, head, (size_t)n) || out_append(c, body, send)) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

static void respond_json_gen(conn *c, int status, yajl_gen g, const char *extra)
{
    const unsigned char *buf;
    size_t len;
    if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok) {
        static const char oops[] = "{\"error\":\"internal error\"}";
        respond(c, 500, "application/json", oops, sizeof oops - 1, NULL);
        return;
    }
    respond(c, status, "application/json", (const char *)buf, len, extra);
}

static void respond_error(conn *c, int status, const char *msg, const char *extra)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        conn_close(c);
        return;
    }
    yajl_gen_map_open(g);
    qc_json_key_str(g, "error", msg);
    yajl_gen_map_close(g);
    respond_json_gen(c, status, g, extra);
    yajl_gen_free(g);
}

/* 1 when c's answer under way is its last and c closes as soon as it is
 * out, with no linger: the client said it sends nothing more and all it
 * sent was read, so a close cannot draw a reset. Thousands of long-polls
 * answered together so close without a linger each (a shutdown, a
 * wake-up, a read, a close), and their FIN goes in the answer's segment. */
static int closes_at_once(const conn *c)
{
    return !c->tls && c->closing && !c->busy && c->client_close && !c->err_status &&
           c->in_off >= c->in_len;
}

/* After the last response is out: close at once when closes_at_once, else
 * half-close, drain the peer briefly so it reads our answer instead of a
 * reset, then close. */
static void begin_linger(conn *c)
{
    if (closes_at_once(c)) {
        conn_close(c);
        return;
    }
    if (!c->eof) qc_tls_close_notify(c->tls);
    if (c->eof || shutdown(c->fd, SHUT_WR) != 0) {
        conn_close(c);
        return;
    }
    c->lingering = 1;
    c->linger_start = ev_now(c->api->loop);
    if (c->counted) c->api->nslots--; /* answered for good: its slot is free */
    c->counted = 0;
    ev_io_start(c->api->loop, &c->rio);
    timer_arm(c);
}

/* ---------- the transport: the socket, or TLS over it ---------- */

enum { IO_OK, IO_AGAIN, IO_EOF, IO_FAIL };

/* A TLS session failed or was refused: counted by reason, logged at a
 * bounded rate (a scanner must not flood the log). */
static void tls_failed(conn *c)
{
    char detail[200];
    const char *reason = qc_tls_conn_failure(c->tls, detail, sizeof detail);
    c->tls_refused = 1;
    qc_metrics_add(c->api->metrics, "qcluster_api_tls_failures_total", "reason", reason, 1);
    qc_tls_log_failure(c->api->tls, reason, detail);
}

/* What a TLS call's outcome means here; a WANT the other way round starts
 * that watcher and remembers why (tls_swap). */
static int tls_io(conn *c, int r, int swap)
{
    switch (r) {
    case QC_TLS_DONE: return IO_OK;
    case QC_TLS_CLOSED: return IO_EOF;
    case QC_TLS_FAILED: tls_failed(c); return IO_FAIL;
    default: break;
    }
    int usual = swap == TLS_READ_WANTS_WRITE ? QC_TLS_WANT_READ : QC_TLS_WANT_WRITE;
    if (r != usual) c->tls_swap |= swap;
    ev_io_start(c->api->loop, r == QC_TLS_WANT_WRITE ? &c->wio : &c->rio);
    return IO_AGAIN;
}

/* Reads into buf: IO_OK with *got > 0, IO_AGAIN, IO_EOF or IO_FAIL. */
static int conn_recv(conn *c, char *buf, size_t cap, size_t *got)
{
    *got = 0;
    if (c->tls) return tls_io(c, qc_tls_read(c->tls, buf, cap, got), TLS_READ_WANTS_WRITE);
    ssize_t n = read(c->fd, buf, cap);
    if (n > 0) *got = (size_t)n;
    if (n >= 0) return n > 0 ? IO_OK : IO_EOF;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN : IO_FAIL;
}

/* Writes from buf: IO_OK with *sent (maybe 0 after EINTR), IO_AGAIN with
 * the right watcher started, or IO_FAIL. */
static int conn_send(conn *c, const char *buf, size_t len, size_t *sent)
{
    *sent = 0;
    if (c->tls) {
        int r = tls_io(c, qc_tls_write(c->tls, buf, len, sent), TLS_WRITE_WANTS_READ);
        return r == IO_EOF ? IO_FAIL : r;
    }
    /* MSG_MORE: the close right after adds its FIN to this segment */
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | (closes_at_once(c) ? MSG_MORE : 0));
    if (n > 0) *sent = (size_t)n;
    if (n > 0 || (n < 0 && errno == EINTR)) return IO_OK;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        ev_io_start(c->api->loop, &c->wio);
        return IO_AGAIN;
    }
    return IO_FAIL;
}

static void conn_flush(conn *c)
{
    while (!c->dead && c->out_off < c->out_len) {
        size_t n;
        int r = conn_send(c, c->out + c->out_off, c->out_len - c->out_off, &n);
        if (r == IO_OK) {
            if (n) {
                c->out_off += n;
                touch(c);
            }
            continue;
        }
        if (r == IO_AGAIN) return;
        conn_close(c);
        return;
    }
    if (c->dead) return;
    ev_io_stop(c->api->loop, &c->wio);
    c->out_off = c->out_len = 0;
    if (c->closing && !c->busy && !c->lingering) begin_linger(c);
}

static void conn_read(conn *c);

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn *c = w->data;
    if (c->tls_swap & TLS_READ_WANTS_WRITE) { /* a TLS read waited for this */
        c->tls_swap &= ~TLS_READ_WANTS_WRITE;
        conn_flush(c);
        if (!c->dead) conn_read(c);
        return;
    }
    conn_flush(c);
    if (!c->dead && c->out_len == 0) conn_process(c);
}

/* ---------- the long-poll route, GET /v1/leader ---------- */

static int leader_json(const qc_api *a, yajl_gen g)
{
    qc_peer_info p;
    if (!api_leader_now(a, &p)) {
        yajl_gen_map_open(g);
        qc_json_key(g, "leader");
        yajl_gen_null(g);
        qc_json_key_int(g, "term", (long long)api_term_now(a));
        yajl_gen_map_close(g);
        return 503;
    }
    yajl_gen_map_open(g);
    qc_json_key_str(g, "identifier", p.identifier);
    qc_json_key_str(g, "host", p.host);
    qc_json_key_int(g, "port", p.port);
    qc_json_key(g, "metadata");
    qc_json_raw_object(g, p.metadata);
    qc_json_key_int(g, "priority", p.priority);
    qc_json_key_bool(g, "healthy", p.healthy);
    qc_json_key_int(g, "term", (long long)api_term_now(a));
    yajl_gen_map_close(g);
    return 200;
}

static void answer_leader(conn *c)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        conn_close(c);
        return;
    }
    int status = leader_json(c->api, g);
    respond_json_gen(c, status, g, NULL);
    yajl_gen_free(g);
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= 0)) return -1;
    *out = v;
    return 0;
}

static int same_id(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

/* What a long-poll's client says it knows: held while it still holds. */
typedef struct known {
    int has_term, has_leader;
    uint64_t term;
    const char *leader; /* NULL: no leader ("none") */
} known;

/* 1 when term and leader (NULL: none) differ from what k says. */
static int differs(uint64_t term, const char *leader, const known *k)
{
    if (k->has_term && term != k->term) return 1;
    return k->has_leader && !same_id(leader, k->leader);
}

/* 1 when the leader or the term now differs from what k says. */
static int known_differs(const qc_api *a, const known *k)
{
    qc_peer_info p;
    if (k->has_term && api_term_now(a) != k->term) return 1;
    if (!k->has_leader) return 0;
    return !same_id(api_leader_now(a, &p) ? p.identifier : NULL, k->leader);
}

/* Builds a->shared from the view now: QC_ENOMEM, or QC_EINVAL when the
 * leader's identifier is too long to keep (answers are then built one by
 * one, as before). */
static int shared_build(qc_api *a)
{
    shared_answer *sa = &a->shared;
    qc_peer_info p;
    sa->valid = 0;
    sa->term = api_term_now(a);
    sa->has_leader = api_leader_now(a, &p);
    if (sa->has_leader && strlen(p.identifier) >= sizeof sa->leader) return QC_EINVAL;
    if (sa->has_leader) strcpy(sa->leader, p.identifier);
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return QC_ENOMEM;
    int rc = QC_OK, status = sa->status = leader_json(a, g);
    const unsigned char *body;
    size_t len;
    if (yajl_gen_get_buf(g, &body, &len) != yajl_gen_status_ok) rc = QC_ENOMEM;
    for (int keep = 0; keep < 2 && rc == QC_OK; keep++) {
        char head[512];
        int n = response_head(head, sizeof head, status, "application/json", len, !keep, NULL);
        size_t need = (size_t)n + len;
        if (n < 0) {
            rc = QC_EINVAL;
            break;
        }
        if (need > sa->cap[keep]) {
            char *t = realloc(sa->text[keep], need);
            if (!t) {
                rc = QC_ENOMEM;
                break;
            }
            sa->text[keep] = t;
            sa->cap[keep] = need;
        }
        memcpy(sa->text[keep], head, (size_t)n);
        memcpy(sa->text[keep] + n, body, len);
        sa->len[keep] = need;
    }
    yajl_gen_free(g);
    sa->valid = rc == QC_OK;
    return rc;
}

/* Answers c with a->shared, as answer_leader would: one send from the
 * shared bytes, whatever the socket does not take now kept in c->out. */
static void shared_send(conn *c)
{
    const shared_answer *sa = &c->api->shared;
    answer_closes(c, sa->status);
    c->method = -1;
    const char *t = sa->text[!c->closing];
    size_t len = sa->len[!c->closing], sent = 0;
    if (conn_send(c, t, len, &sent) == IO_FAIL) {
        conn_close(c);
        return;
    }
    if (sent < len && out_append(c, t + sent, len - sent) != QC_OK) {
        conn_close(c);
        return;
    }
    conn_flush(c); /* the rest, if any; a closing answer closes */
}

/* 1 when the view differs from what parked c knows: as a->shared holds
 * it, built once a drain pass (the view is asked only if that fails). */
static int park_changed(qc_api *a, const conn *c)
{
    known k = {c->park_has_term, c->park_has_leader, c->park_term, c->park_leader};
    shared_answer *sa = &a->shared;
    if (!sa->valid && !sa->tried) {
        sa->tried = 1;
        if (shared_build(a) == QC_ENOMEM)
            qc_log(QC_LOG_WARN, "api", "out of memory: long-polls answered one by one");
    }
    if (!sa->valid) return known_differs(a, &k);
    return differs(sa->term, sa->has_leader ? sa->leader : NULL, &k);
}

/* The wait ended or the state changed: answer (from a->shared when it
 * fits c: plain HTTP, GET, nothing else queued) and go on with the input. */
static void park_answer(conn *c)
{
    unpark(c);
    hold_back(c);
    touch(c);
    if (c->api->shared.valid && !c->tls && c->method == HTTP_GET && c->out_len == 0 &&
        !c->err_status)
        shared_send(c);
    else
        answer_leader(c);
    conn_process(c);
}

/* The wait ended: answered by the drain, with the budget, since thousands
 * of polls parked together end together. */
static void wait_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn *c = w->data;
    c->expired = 1;
    list_push(&c->api->unchecked, c);
    drain_wake(c->api);
}

/* The long-polls are all parked: one with the token answers the oldest
 * parked one without it now (its answer is as valid, only earlier) and
 * parks in its place; 1 when it did. Walks every parked one, but only
 * when the budget is full and the newcomer has the token. */
static int longpoll_room(conn *c)
{
    if (!c->authed) return 0;
    conn *old = NULL, *lists[2] = {c->api->parked, c->api->unchecked};
    for (int l = 0; l < 2; l++)
        for (conn *o = lists[l]; o; o = o->next)
            if (!o->authed && !o->dead && (!old || o->progress < old->progress)) old = o;
    if (!old) return 0;
    unpark(old);
    hold_back(old);
    touch(old);
    answer_leader(old);
    /* its pipelined requests go on from the loop, not inside c's */
    if (!old->dead) ev_feed_event(old->api->loop, &old->wio, EV_WRITE);
    return 1;
}

/* The long-poll budget is full: the connection kept the longest after
 * its answer closes (as any idle keep-alive one may), making room; 1 when
 * one did. Walks them all, but only when the budget is full. */
static int held_room(qc_api *a)
{
    conn *old = NULL;
    for (conn *o = a->held; o; o = o->next)
        if (!o->busy && o->req_start <= 0 && (!old || o->progress < old->progress)) old = o;
    if (!old) return 0;
    limit_hit(a, "evicted");
    conn_close(old);
    return 1;
}

/* Parks c until k no longer holds or wait seconds pass. A parked request
 * leaves its connection slot: it counts only against max_longpolls. */
static void park(conn *c, double wait, const known *k)
{
    qc_api *a = c->api;
    if (!c->held && a->nparked + a->nheld >= a->max_longpolls && !held_room(a) &&
        !longpoll_room(c)) {
        limit_hit(a, "longpolls"); /* answered as it is now, as without ?wait */
        answer_leader(c);
        return;
    }
    c->park_leader = NULL;
    if (k->has_leader && k->leader && !(c->park_leader = strdup(k->leader))) {
        answer_leader(c);
        return;
    }
    unhold(c); /* parked instead, in the same budget */
    c->park_has_term = k->has_term;
    c->park_has_leader = k->has_leader;
    c->park_term = k->term;
    c->parked = 1;
    c->busy = 1;
    a->nparked++;
    slot_leave(c);
    list_push(&a->parked, c);
    ev_timer_set(&c->wait, wait, 0.);
    ev_timer_start(a->loop, &c->wait);
}

/* ?leader=ID or ?leader=none (percent-decoded): 1 with k->leader set (NULL
 * for none, else into buf), 0 when absent, -1 when malformed. */
static int query_leader(const req *r, char *buf, size_t cap, known *k)
{
    const char *v;
    size_t vl, n;
    if (!api_query_find(r, "leader", &v, &vl)) return 0;
    if (vl == 0 || vl >= cap || api_pct_decode(v, vl, (uint8_t *)buf, &n) != 0 ||
        memchr(buf, '\0', n))
        return -1;
    buf[n] = '\0';
    k->leader = strcmp(buf, "none") == 0 ? NULL : buf;
    return 1;
}

static void h_leader(conn *c, const req *r)
{
    char ws[32], ts[32], ls[QC_MEMBER_ID_MAX + 1];
    double wait = 0;
    known k = {0};
    int has_wait = api_query_get(r, "wait", ws, sizeof ws);
    k.has_term = api_query_get(r, "term", ts, sizeof ts);
    k.has_leader = query_leader(r, ls, sizeof ls, &k);
    if (has_wait < 0 || (has_wait && parse_double(ws, &wait) != 0)) {
        respond_error(c, 400, "wait must be a number of seconds", NULL);
        return;
    }
    if (k.has_term < 0 || (k.has_term && api_parse_u64(ts, &k.term) != 0)) {
        respond_error(c, 400, "term must be a non-negative integer", NULL);
        return;
    }
    if (k.has_leader < 0) {
        respond_error(c, 400, "leader must be an identifier or none", NULL);
        return;
    }
    if (!k.has_term && !k.has_leader) { /* neither: held until the leader changes */
        qc_peer_info p;
        k.has_leader = 1;
        k.leader = api_leader_now(c->api, &p) ? p.identifier : NULL;
    }
    if (wait > QC_API_MAX_WAIT_S) wait = QC_API_MAX_WAIT_S;
    if (!has_wait || wait <= 0 || known_differs(c->api, &k)) {
        answer_leader(c);
        return;
    }
    park(c, wait, &k);
}

/* ---------- requests the view answers later (struct pending) ---------- */

static void pending_free(pending *p)
{
    free(p->to);
    if (p->list) yajl_gen_free(p->list);
    free(p);
}

/* Parks c until the view's callback fires; NULL when out of memory. */
static pending *pending_new(conn *c)
{
    pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->c = c;
    p->srv = c->api->srv;
    p->sync = 1;
    c->pend = p;
    c->busy = 1;
    return p;
}

/* Large bodies (KV values) are not kept on an idle keep-alive connection. */
static void body_trim(conn *c)
{
    if (c->body_cap <= QC_API_MAX_BODY) return;
    free(c->body);
    c->body = NULL;
    c->body_cap = 0;
}

/* The callback fired: frees c (if still there) for the answer; NULL when
 * the client is gone. Follow with pending_settle once answered. */
static conn *pending_fire(pending *p)
{
    p->fired = 1;
    conn *c = p->c;
    if (!c) return NULL;
    p->c = NULL;
    c->pend = NULL;
    c->busy = 0;
    touch(c);
    return c;
}

/* After the answer: a late callback frees p and goes on with c's input;
 * one inside the view call leaves both to pending_called. */
static void pending_settle(pending *p, conn *c)
{
    if (p->sync) return;
    pending_free(p);
    if (c) {
        body_trim(c);
        conn_process(c);
    }
}

/* The view call returned: free p if it was answered meanwhile. */
static void pending_called(pending *p)
{
    p->sync = 0;
    if (p->fired) pending_free(p);
}

/* ---------- the request's body, for the routes ---------- */

/* The body as a JSON tree in *out (NULL when the body is empty). 0,
 * QC_EINVAL (not JSON, a NUL byte that would hide the rest, or a string
 * that is not UTF-8: then why names it under prefix, "metadata.k: text is
 * not valid UTF-8") or QC_ENOMEM. The caller frees *out with
 * yajl_tree_free. */
static int body_json(const conn *c, const char *prefix, yajl_val *out, char *why, size_t cap)
{
    *out = NULL;
    why[0] = '\0';
    if (c->body_len == 0) return 0;
    return qc_json_parse(c->body, c->body_len, prefix, out, why, cap);
}

/* Answers 400 (or 500) for a body_json failure: why when body_json said
 * what is wrong, else expected; 1 when it did. */
static int body_failed(conn *c, int rc, const char *why, const char *expected)
{
    if (rc == 0) return 0;
    if (rc == QC_ENOMEM)
        respond_error(c, 500, "out of memory", NULL);
    else
        respond_error(c, 400, why[0] ? why : expected, NULL);
    return 1;
}

/* ---------- the route table ---------- */

/* What the routes in their own files call (api_int.h). */
static const api_server server = {
    .respond = respond,
    .respond_json_gen = respond_json_gen,
    .respond_error = respond_error,
    .conn_close = conn_close,
    .pending_new = pending_new,
    .pending_fire = pending_fire,
    .pending_settle = pending_settle,
    .pending_called = pending_called,
    .body_json = body_json,
    .body_failed = body_failed,
};

typedef void handler_fn(conn *c, const req *r);

#define METHOD(m) (1u << (m))

static const struct route {
    const char *path;
    unsigned methods;  /* METHOD(HTTP_GET) | ... */
    const char *allow; /* the Allow header of a 405 */
    handler_fn *fn;
    int subtree; /* also serves path/ANYTHING */
} routes[] = {
    {"/v1/status", METHOD(HTTP_GET), "GET", api_h_status, 0},
    {"/v1/leader", METHOD(HTTP_GET), "GET", h_leader, 0},
    {"/v1/members", METHOD(HTTP_GET), "GET", api_h_members, 0},
    {"/v1/transfer-leadership", METHOD(HTTP_POST), "POST", api_h_transfer, 0},
    {"/v1/join", METHOD(HTTP_POST), "POST", api_h_join, 0},
    {"/v1/leave", METHOD(HTTP_POST), "POST", api_h_leave, 0},
    {"/v1/self/metadata", METHOD(HTTP_PUT), "PUT", api_h_self_metadata, 0},
    {"/v1/kv", METHOD(HTTP_GET) | METHOD(HTTP_PUT) | METHOD(HTTP_DELETE), "GET, PUT, DELETE",
     api_h_kv, 1},
    {"/v1/checks", METHOD(HTTP_GET) | METHOD(HTTP_PUT), "GET, PUT", api_h_checks, 1},
    {"/v1/history", METHOD(HTTP_GET), "GET", api_h_history, 0},
    {"/metrics", METHOD(HTTP_GET), "GET", api_h_metrics, 0},
    {"/ui", METHOD(HTTP_GET) | METHOD(HTTP_HEAD), "GET, HEAD", api_h_ui, 0},
};

/* ---------- dispatch ---------- */

static int is_write(int method)
{
    return method == HTTP_POST || method == HTTP_PUT || method == HTTP_DELETE ||
           method == HTTP_PATCH;
}

static int is_ows(char ch) { return ch == ' ' || ch == '\t'; }

/* The token of "Bearer TOKEN": a field value excludes the whitespace around
 * it (RFC 9110 5.5), and the scheme is followed by one or more spaces
 * (11.4), so neither belongs to the token. 0 and *tok, *len; -1 when the
 * value is no bearer credential. */
static int bearer_token(const conn *c, const unsigned char **tok, size_t *len)
{
    const char *v = c->auth, *end = c->auth + c->auth_len;
    while (v < end && is_ows(*v)) v++;
    while (end > v && is_ows(end[-1])) end--;
    if (end - v < 7 || strncasecmp(v, "Bearer", 6) != 0 || !is_ows(v[6])) return -1;
    for (v += 7; v < end && is_ows(*v);) v++;
    *tok = (const unsigned char *)v;
    *len = (size_t)(end - v);
    return 0;
}

/* Takes the same time whatever the given token and the real one hold:
 * every byte of a fixed span is compared, the lengths included, with no
 * early exit and no branch on their content. */
static int auth_ok(const conn *c)
{
    const char *tok = c->api->token;
    if (!tok) return 1;
    const unsigned char *given;
    size_t gl;
    if (c->auth_over || bearer_token(c, &given, &gl) != 0) return 0;
    const unsigned char *want = (const unsigned char *)tok;
    size_t tl = c->api->token_len, span = AUTH_MAX - 7;
    volatile unsigned diff = (unsigned)(gl ^ tl);
    for (size_t i = 0; i < span; i++) {
        /* masks rather than branches: bytes past an end compare as 0 */
        unsigned g = i < gl ? given[i] : 0, w = i < tl ? want[i] : 0;
        diff |= g ^ w;
    }
    return diff == 0;
}

static int split_url(conn *c, req *r)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (c->url_overflow || http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH)))
        return -1;
    r->path = c->url + u.field_data[UF_PATH].off;
    r->path_len = u.field_data[UF_PATH].len;
    r->query = NULL;
    r->query_len = 0;
    if (u.field_set & (1 << UF_QUERY)) {
        r->query = c->url + u.field_data[UF_QUERY].off;
        r->query_len = u.field_data[UF_QUERY].len;
    }
    return 0;
}

static const struct route *route_find(const req *r)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t n = strlen(routes[i].path);
        if (r->path_len < n || memcmp(routes[i].path, r->path, n) != 0) continue;
        if (r->path_len == n || (routes[i].subtree && r->path[n] == '/')) return &routes[i];
    }
    return NULL;
}

/* PUT /v1/kv/KEY carries a value: it may send up to max_kv_body. */
static size_t body_limit(conn *c, int method)
{
    static const char kv[] = "/v1/kv/";
    req r;
    if (method == HTTP_PUT && split_url(c, &r) == 0 && r.path_len >= sizeof kv - 1 &&
        memcmp(r.path, kv, sizeof kv - 1) == 0)
        return c->api->max_kv_body;
    return QC_API_MAX_BODY;
}

/* A write this route takes, without the right token: refused before its
 * body is read. Unknown paths and methods go on to their 404 and 405. */
static int write_refused(conn *c, int method)
{
    req r;
    if (!is_write(method) || auth_ok(c) || split_url(c, &r) != 0) return 0;
    const struct route *rt = route_find(&r);
    return rt && method >= 0 && method < 32 && (rt->methods & METHOD(method));
}

static void dispatch(conn *c)
{
    req r;
    if (c->url_overflow) {
        limit_hit(c->api, "url");
        respond_error(c, 414, "request target too long", NULL);
        return;
    }
    if (split_url(c, &r) != 0) {
        respond_error(c, 400, "malformed request target", NULL);
        return;
    }
    const struct route *rt = route_find(&r);
    if (c->held && (!rt || rt->fn != h_leader) && held_to_slot(c) != 0) return;
    if (!rt) {
        respond_error(c, 404, "no such path", NULL);
        return;
    }
    if (c->method < 0 || c->method >= 32 || !(rt->methods & METHOD(c->method))) {
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", rt->allow);
        respond_error(c, 405, "method not allowed", allow);
        return;
    }
    if (is_write(c->method) && !auth_ok(c)) {
        respond_error(c, 401, "missing or wrong bearer token", "WWW-Authenticate: Bearer\r\n");
        return;
    }
    rt->fn(c, &r);
    if (!c->busy) body_trim(c);
}

/* ---------- slots: who may hold a connection (see api.h) ---------- */

static void addr_of(int fd, client_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(out, 0, sizeof *out);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return; /* "local" */
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        out->family = AF_INET;
        memcpy(out->bytes, &in->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        int v4 = IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr);
        out->family = v4 ? AF_INET : AF_INET6;
        memcpy(out->bytes, in6->sin6_addr.s6_addr + (v4 ? 12 : 0), v4 ? 4 : 8);
    }
}

static int same_addr(const client_addr *x, const client_addr *y)
{
    return x->family == y->family && memcmp(x->bytes, y->bytes, sizeof x->bytes) == 0;
}

static int addr_slots(const qc_api *a, const client_addr *addr)
{
    int n = 0;
    for (const conn *c = a->conns; c; c = c->next) n += c->counted && same_addr(&c->addr, addr);
    return n;
}

/* How readily c gives up its slot, 0 never: idle keep-alive ones first
 * (unauthenticated before authenticated: closing one is ordinary HTTP);
 * unless idle_only, then a request still arriving (or a new connection yet
 * to send one: those only go for the token, the header deadline frees them
 * otherwise). Never one that showed the token, unless idle, nor a request
 * the view is answering, nor one already closing. Parked long-polls hold
 * no slot (see park). */
static int victim_rank(const conn *c, int idle_only)
{
    if (!c->counted || c->dead || c->closing || c->lingering || c->pend) return 0;
    if (!c->busy && c->req_start <= 0 && c->out_off >= c->out_len && c->nreq > 0)
        return c->authed ? (idle_only ? 3 : 0) : 4;
    if (idle_only || c->authed) return 0;
    return c->busy ? 0 : 2;
}

/* The connection to give up its slot (of addr's when addr is not NULL):
 * the best rank, then the longest without progress. */
static conn *find_victim(qc_api *a, const client_addr *addr, int idle_only)
{
    conn *best = NULL;
    int best_rank = 0;
    for (conn *c = a->conns; c; c = c->next) {
        int r = addr && !same_addr(&c->addr, addr) ? 0 : victim_rank(c, idle_only);
        if (r > best_rank || (r > 0 && r == best_rank && c->progress < best->progress)) {
            best = c;
            best_rank = r;
        }
    }
    return best;
}

/* Takes v's slot away: an idle connection closes; a request still arriving
 * gets 503, then closes. */
static void evict(conn *v)
{
    qc_api *a = v->api;
    limit_hit(a, "evicted");
    v->counted = 0;
    a->nslots--;
    v->keep_alive = 0;
    if (v->req_start > 0) {
        v->req_start = 0;
        respond_error(v, 503, "too many connections: this one was closed for another",
                      "Retry-After: 1\r\n");
    } else {
        conn_close(v);
    }
}

/* A long-poll parks: its slot (or spare place) is free for others. */
static void slot_leave(conn *c)
{
    qc_api *a = c->api;
    if (c->counted) a->nslots--;
    if (c->over) a->nspare--;
    c->counted = c->over = 0;
}

/* A held long-poll's grace ended: it keeps its connection if a slot is
 * free (none is taken from another), else it closes. So a change answered
 * to many polls never turns into evictions; a client whose connection
 * closed simply opens a new one for its next poll. */
static void slot_back(conn *c)
{
    qc_api *a = c->api;
    if (c->counted || c->dead) return;
    if (a->nslots < a->max_conns && addr_slots(a, &c->addr) < a->max_per_client) {
        c->counted = 1;
        a->nslots++;
    } else {
        c->keep_alive = 0;
    }
}

/* An answered long-poll whose client keeps the connection stays in the
 * long-poll budget, holding no slot, for QC_API_LONGPOLL_GRACE_S (its
 * next poll parks at once, with no new connection). One that closes after
 * its answer takes no slot: it would give it back at once, and finding
 * one walks the connections (thousands, for as many answers). */
static void hold_back(conn *c)
{
    qc_api *a = c->api;
    if (c->dead || c->counted || !c->keep_alive) return;
    c->held = 1;
    a->nheld++;
    list_push(&a->held, c);
}

/* A held connection's request other than GET /v1/leader needs a slot, as
 * a new connection would: 0 when it has one, else it was answered 503. */
static int held_to_slot(conn *c)
{
    qc_api *a = c->api;
    unhold(c);
    int over = room_for(a, &c->addr, 1);
    if (over) {
        over_refused(c, over);
        return -1;
    }
    c->counted = 1;
    a->nslots++;
    return 0;
}

/* OVER_NONE when a connection from addr may hold a slot now, after making
 * room (see victim_rank) where needed; else which budget is full. */
static int room_for(qc_api *a, const client_addr *addr, int idle_only)
{
    conn *v;
    if (addr_slots(a, addr) >= a->max_per_client) {
        if (!(v = find_victim(a, addr, idle_only))) return OVER_CLIENT;
        evict(v);
    }
    if (a->nslots >= a->max_conns) {
        if (!(v = find_victim(a, NULL, idle_only))) return OVER_ALL;
        evict(v);
    }
    return OVER_NONE;
}

static void over_message(const qc_api *a, int why, char *msg, size_t cap)
{
    if (why == OVER_CLIENT)
        snprintf(msg, cap, "too many connections from this address (limit %d)", a->max_per_client);
    else
        snprintf(msg, cap, "too many connections (limit %d)", a->max_conns);
}

/* Answers 503 for budget why and closes; c gives up its spare place. */
static void over_refused(conn *c, int why)
{
    qc_api *a = c->api;
    char msg[128];
    if (c->over) a->nspare--;
    c->over = OVER_NONE;
    c->keep_alive = 0;
    over_message(a, why, msg, sizeof msg);
    limit_hit(a, why == OVER_CLIENT ? "client_connections" : "connections");
    respond_error(c, 503, msg, "Retry-After: 1\r\n");
}

/* c came over a budget and its headers are in: with the valid token it
 * takes the slot of a connection without one; 0, or -1 (c->over says
 * which budget is full). */
static int admit_late(conn *c)
{
    qc_api *a = c->api;
    if (!c->authed) return -1;
    int over = room_for(a, &c->addr, 0);
    if (over) {
        c->over = over;
        return -1;
    }
    a->nspare--;
    c->over = OVER_NONE;
    c->counted = 1;
    a->nslots++;
    return 0;
}

/* The spare places are all taken: the oldest gives its place up, so that
 * connections held there cannot shut out a newcomer with the token. */
static void spare_make_room(qc_api *a)
{
    if (a->nspare < a->token_spare) return;
    conn *old = NULL;
    for (conn *c = a->conns; c; c = c->next)
        if (c->over && !c->dead && (!old || c->opened < old->opened)) old = c;
    if (old) over_refused(old, old->over);
}

/* ---------- request parsing (http_parser callbacks) ---------- */

static int hdr_count(conn *c, size_t n)
{
    c->hdr_bytes += n;
    if (c->hdr_bytes <= HDR_MAX) return 0;
    c->err_status = 431;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    c->req_start = ev_now(c->api->loop);
    c->method = -1;
    c->url_len = c->hdr_bytes = c->field_len = c->auth_len = c->body_len = 0;
    c->auth_over = 0;
    c->body_max = QC_API_MAX_BODY;
    body_trim(c);
    c->field_done = c->url_overflow = c->expect_continue = c->err_status = c->hdr_done = 0;
    c->hdr_kind = HDR_OTHER;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    /* The method is whole once the URL starts: an answer given before the
     * headers are (408, 431, 400) frames by it too, so a HEAD gets none. */
    c->method = (int)p->method;
    if (hdr_count(c, n)) return -1;
    if (c->url_len + n > URL_MAX) {
        c->url_overflow = 1;
        return 0;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (hdr_count(c, n)) return -1;
    if (c->field_done) {
        c->field_len = 0;
        c->field_done = 0;
    }
    size_t room = sizeof c->field - 1 - c->field_len;
    size_t k = n < room ? n : room;
    memcpy(c->field + c->field_len, at, k);
    c->field_len += k;
    c->field[c->field_len] = '\0';
    if (n > room) c->field[0] = '\0'; /* too long to be one we read */
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (hdr_count(c, n)) return -1;
    if (!c->field_done) {
        if (hdr_count(c, HDR_LINE)) return -1;
        c->field_done = 1;
        c->hdr_kind = strcasecmp(c->field, "authorization") == 0 ? HDR_AUTH
                      : strcasecmp(c->field, "expect") == 0      ? HDR_EXPECT
                                                                 : HDR_OTHER;
        if (c->hdr_kind == HDR_AUTH) c->auth_len = c->auth_over = 0;
    }
    if (c->hdr_kind == HDR_AUTH) {
        size_t k = c->auth_len + n <= AUTH_MAX ? n : AUTH_MAX - c->auth_len;
        if (k < n) c->auth_over = 1; /* never compared cut short */
        memcpy(c->auth + c->auth_len, at, k);
        c->auth_len += k;
        c->auth[c->auth_len] = '\0';
    } else if (c->hdr_kind == HDR_EXPECT && n >= 12 && strncasecmp(at, "100-continue", 12) == 0) {
        c->expect_continue = 1;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    c->method = (int)p->method;
    c->hdr_done = 1;
    if (c->api->token && c->auth_len > 0 && auth_ok(c)) c->authed = 1;
    if (c->over && admit_late(c) != 0) {
        c->err_status = 503; /* came over a budget and shows no token */
        return -1;
    }
    if (write_refused(c, (int)p->method)) {
        c->err_status = 401; /* before reading a body nobody may send */
        return -1;
    }
    c->body_max = body_limit(c, (int)p->method);
    if (p->content_length != ULLONG_MAX && p->content_length > c->body_max) {
        c->err_status = 413;
        return -1;
    }
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (c->expect_continue && p->content_length != ULLONG_MAX && p->content_length > 0 &&
        out_append(c, cont, sizeof cont - 1) != 0)
        return -1;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (c->body_len + n > c->body_max) {
        c->err_status = 413;
        return -1;
    }
    if (c->body_len + n > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + n) cap *= 2;
        char *b = realloc(c->body, cap);
        if (!b) return -1;
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

/* Pauses so the request is answered outside the parser, one at a time. */
static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    c->req_start = 0;
    c->nreq++;
    c->progress = ev_now(c->api->loop);
    c->method = (int)p->method;
    c->keep_alive = http_should_keep_alive(p);
    c->client_close = !c->keep_alive;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void parse_failed(conn *c)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    c->keep_alive = 0;
    if (c->err_status == 503) {
        over_refused(c, c->over);
    } else if (c->err_status == 401) {
        limit_hit(c->api, "auth");
        respond_error(c, 401, "missing or wrong bearer token", "WWW-Authenticate: Bearer\r\n");
    } else if (c->err_status == 413) {
        limit_hit(c->api, "body");
        respond_error(c, 413, "request body too large", NULL);
    } else if (c->err_status == 431) {
        limit_hit(c->api, "header");
        respond_error(c, 431, "request headers too large", NULL);
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed request: %s", http_errno_description(e));
        respond_error(c, 400, msg, NULL);
    }
}

/* Parses and answers buffered requests until the input runs out or one
 * of them must wait (busy). May close c; callers check c->dead. */
static void conn_process(conn *c)
{
    while (!c->dead && !c->busy && !c->closing && c->in_off < c->in_len &&
           c->out_len - c->out_off < OUT_HIGH) {
        size_t n = http_parser_execute(&c->parser, &parser_settings, c->in + c->in_off,
                                       c->in_len - c->in_off);
        c->in_off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            dispatch(c);
        } else if (e != HPE_OK) {
            parse_failed(c);
        }
    }
    if (!c->dead && c->out_off < c->out_len) conn_flush(c); /* e.g. 100 Continue */
    if (c->dead) return;
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->eof && !c->busy) {
        c->closing = 1;
        if (c->out_len == 0) conn_close(c);
        return;
    }
    if (c->parked) bufs_drop(c);
    /* Read on while parked (to notice a hang-up) unless the buffer is full
     * or the read waits for the drain. */
    if (!c->eof && !c->closing && c->in_len < IN_CAP) {
        if (!c->deferred) {
            ev_io_start(c->api->loop, &c->rio);
            /* Bytes TLS decrypted already: the socket will not signal them. */
            if (qc_tls_pending(c->tls)) ev_feed_event(c->api->loop, &c->rio, EV_READ);
        }
    } else if (!c->lingering) {
        ev_io_stop(c->api->loop, &c->rio);
    }
    timer_arm(c);
}

/* ---------- reading, accepting ---------- */

static void linger_read(conn *c)
{
    char sink[4096];
    ssize_t n = read(c->fd, sink, sizeof sink);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        conn_close(c);
}

/* On the TLS port, the first byte tells a TLS client from one speaking
 * plain HTTP, which gets a plain 400 it can read (as nginx's 497) and a
 * close. 1 when the connection reads on as TLS, else 0. */
static int conn_sniff(conn *c)
{
    int r = qc_tls_sniff(c->fd);
    if (r == QC_EBUSY) return 0;
    if (r < 0) {
        conn_close(c);
        return 0;
    }
    c->tls_seen = 1;
    if (r == 1) return 1;
    qc_tls_conn_free(c->tls);
    c->tls = NULL;
    qc_metrics_add(c->api->metrics, "qcluster_api_tls_failures_total", "reason", "plain_http", 1);
    qc_tls_log_failure(c->api->tls, "plain_http", "a plain HTTP request on the HTTPS port");
    c->keep_alive = 0;
    respond_error(c, 400, "this port speaks HTTPS: use https:// and the agent's CA certificate",
                  NULL);
    return 0;
}

static void conn_read(conn *c)
{
    if (c->tls_swap & TLS_WRITE_WANTS_READ) { /* a TLS write waited for this */
        c->tls_swap &= ~TLS_WRITE_WANTS_READ;
        conn_flush(c);
        if (c->dead) return;
    }
    if (c->lingering) {
        linger_read(c);
        return;
    }
    if (c->tls && !c->tls_seen && !conn_sniff(c)) return;
    if (c->in_len >= IN_CAP) { /* woken for a TLS write only: the input waits */
        ev_io_stop(c->api->loop, &c->rio);
        return;
    }
    if (bufs_get(c) != QC_OK) {
        qc_log(QC_LOG_WARN, "api", "out of memory for a request");
        conn_close(c);
        return;
    }
    size_t n;
    int r = conn_recv(c, c->in + c->in_len, IN_CAP - c->in_len, &n);
    if (r == IO_AGAIN) return;
    if (r == IO_FAIL && c->tls_refused && !c->busy) {
        /* Closing now, with the client's request unread, would reset the
         * connection and could drop the alert that says why. */
        c->closing = 1;
        begin_linger(c);
        return;
    }
    if (r == IO_FAIL || (r == IO_EOF && c->busy)) { /* gone, maybe while parked */
        conn_close(c);
        return;
    }
    if (r == IO_EOF) c->eof = 1;
    c->in_len += n;
    conn_process(c); /* arms the timer: reads alone are no progress */
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn *c = w->data;
    /* a linger's read counts too: thousands of answered polls whose
     * clients close at once end in as many reads and closes */
    if (c->api->dhead || !turn_take(c->api)) { /* others wait already, or the turn is spent */
        defer_read(c);
        return;
    }
    conn_read(c);
}

/* At the end of a loop turn, after the peers' input: deferred reads, then
 * parked polls to check, as far as the turn's budget goes. */
static void drain_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)revents;
    qc_api *a = w->data;
    while (a->dhead && turn_take(a)) {
        conn *c = a->dhead;
        dq_unlink(c);
        ev_io_start(loop, &c->rio);
        conn_read(c);
    }
    /* The view as this pass finds it, built once (park_changed): not per
     * poll. A change within the pass (qc_api_notify) builds it again. */
    a->shared.valid = a->shared.tried = 0;
    while (a->unchecked) {
        conn *c = a->unchecked;
        if (!c->expired && !park_changed(a, c)) {
            list_push(&a->parked, c); /* still holds: checking it is cheap */
            continue;
        }
        if (!turn_take(a)) break;
        park_answer(c);
    }
    a->shared.valid = 0; /* only within the pass: the view moves on */
    if (!a->dhead && !a->unchecked) {
        ev_check_stop(loop, &a->drain_w);
        ev_idle_stop(loop, &a->spin_w);
    }
}

static void spin_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* The deadline timer_arm set has passed. */
static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn *c = w->data;
    qc_api *a = c->api;
    if (c->busy && !c->lingering) return; /* a parked request has its own timer */
    int kind;
    deadline(c, &kind);
    if (c->held && kind == DL_IDLE && !c->closing && c->out_off >= c->out_len) {
        unhold(c); /* its grace ended: an ordinary connection if a slot is free */
        slot_back(c);
        if (c->counted) {
            touch(c);
            return;
        }
    }
    if (c->lingering || c->closing || c->out_off < c->out_len || c->req_start <= 0) {
        if (!c->lingering && !c->closing)
            limit_hit(a, kind == DL_HEADER ? "header_timeout" : "idle");
        conn_close(c);
        return;
    }
    /* The request did not arrive whole in time: say so, then close. */
    char msg[96];
    if (kind == DL_HEADER)
        snprintf(msg, sizeof msg, "request headers not received within %g s", a->header_s);
    else
        snprintf(msg, sizeof msg, "request not received within %g s", a->request_s);
    limit_hit(a, kind == DL_HEADER ? "header_timeout" : "request_timeout");
    c->keep_alive = 0;
    c->req_start = 0;
    respond_error(c, 408, msg, NULL);
}

/* Sockets are born non-blocking and close-on-exec: set afterwards, a fork
 * in another thread of the program could hand them to its child between. */
#define SOCK_FLAGS (SOCK_NONBLOCK | SOCK_CLOEXEC)

/* Serves fd (non-blocking already) from addr, in a slot or (over: the
 * budget that is full) in a spare place; closes it when out of memory. */
static int conn_open(qc_api *a, int fd, const client_addr *addr, int over)
{
    conn *c = calloc(1, sizeof *c);
    if (!c || (a->tls && qc_tls_conn_new(a->tls, fd, NULL, &c->tls) != QC_OK)) {
        qc_log(QC_LOG_WARN, "api", "out of memory for a connection");
        free(c);
        close(fd);
        return QC_ENOMEM;
    }
    c->api = a;
    c->fd = fd;
    c->keep_alive = 1;
    c->addr = *addr;
    c->over = over;
    c->counted = !over;
    if (over)
        a->nspare++;
    else
        a->nslots++;
    c->opened = ev_now(a->loop);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    ev_io_init(&c->rio, read_cb, fd, EV_READ);
    ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
    ev_init(&c->idle, idle_cb);
    ev_init(&c->wait, wait_cb);
    ev_set_priority(&c->rio, API_PRI);
    ev_set_priority(&c->wio, API_PRI);
    ev_set_priority(&c->idle, API_PRI);
    ev_set_priority(&c->wait, API_PRI);
    c->rio.data = c->wio.data = c->idle.data = c->wait.data = c;
    list_push(&a->conns, c);
    a->nconns++;
    qc_metrics_set(a->metrics, "qcluster_api_connections", NULL, NULL, a->nconns);
    ev_io_start(a->loop, &c->rio);
    touch(c);
    /* Read at once: in a burst the request came with the connection and
     * waits in its socket, so a long-poll parks (and leaves its slot)
     * before the next connection is accepted, not an iteration later. */
    conn_read(c);
    return QC_OK;
}

/* Over a budget (why): a short 503 if the socket takes it at once, then
 * close. What the client already sent is read first, so that the close
 * does not turn into a reset that could discard the answer. */
static void conn_refuse(qc_api *a, int fd, int why)
{
    char text[128], msg[160];
    over_message(a, why, text, sizeof text);
    int body = snprintf(msg, sizeof msg, "{\"error\":\"%s\"}", text);
    char out[400];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                     body, msg);
    limit_hit(a, why == OVER_CLIENT ? "client_connections" : "connections");
    char sink[4096];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    if (n > 0 && (size_t)n < sizeof out &&
        send(fd, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n)
        shutdown(fd, SHUT_WR);
    close(fd);
}

/* accept failed for want of descriptors or memory: the pending connection
 * stays queued and the listener readable, so trying again at once would
 * spin. Pause the watcher, count each pause, log once an episode. */
static int accept_starved(qc_api *a, int err)
{
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) return 0;
    ev_io_stop(a->loop, &a->accept_w);
    ev_timer_set(&a->accept_pause, ACCEPT_PAUSE_S, 0.);
    ev_timer_start(a->loop, &a->accept_pause);
    qc_metrics_add(a->metrics, "qcluster_accept_backoffs_total", "listener", "api", 1);
    if (!a->starved)
        qc_log(QC_LOG_WARN, "api",
               "accept: %s: new connections wait (retried every %g s) until some close",
               strerror(err), ACCEPT_PAUSE_S);
    a->starved++;
    return 1;
}

/* The queue of connections is drained: the episode is over. It ends here,
 * not at the first accept that works, so that an agent hovering at its
 * limit logs once rather than at every close. */
static void accept_caught_up(qc_api *a)
{
    if (a->starved)
        qc_log(QC_LOG_INFO, "api", "accepting connections again (after %d pauses)", a->starved);
    a->starved = 0;
}

static void accept_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    qc_api *a = w->data;
    ev_io_start(loop, &a->accept_w);
}

/* Gives fd (accepted or adopted) a slot, a spare place while it may still
 * show the token, or its 503. */
static int conn_admit(qc_api *a, int fd)
{
    client_addr addr;
    addr_of(fd, &addr);
    int over = room_for(a, &addr, 1);
    /* Over TLS a plain 503 cannot be read: the connection waits in a spare
     * place for its handshake and headers, as it would for the token. */
    if (over && !a->token && !a->tls) {
        conn_refuse(a, fd, over);
        return QC_EBUSY;
    }
    if (over) spare_make_room(a);
    return conn_open(a, fd, &addr, over);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_api *a = w->data;
    /* Reads waiting first; the listener stays readable meanwhile. */
    for (int i = 0; i < 64 && !a->dhead && turn_take(a); i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_FLAGS);
        if (fd < 0) {
            if (accept_starved(a, errno)) return;
            if (errno == EAGAIN || errno == EWOULDBLOCK) accept_caught_up(a);
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                qc_log(QC_LOG_WARN, "api", "accept: %s", strerror(errno));
            return;
        }
        conn_admit(a, fd);
    }
}

/* ---------- public ---------- */

static int listen_on(const char *host, int port, int *out)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0) {
        qc_log(QC_LOG_ERROR, "api", "cannot resolve %s: %s", host ? host : "*", gai_strerror(g));
        return QC_EINVAL;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_FLAGS, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        qc_log(QC_LOG_ERROR, "api", "cannot listen on %s:%d: %s", host ? host : "*", port,
               strerror(err));
        return QC_EIO;
    }
    *out = fd;
    return QC_OK;
}

/* QC_API_MAX_LONGPOLLS, or fewer when the descriptor limit would run out
 * first (see api.h): past it, polls would wait in the listen backlog with
 * every other request, where a poll over its budget is answered now. */
static int longpolls_default(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return QC_API_MAX_LONGPOLLS;
    long long room =
        (long long)rl.rlim_cur - QC_API_MAX_CONNS - QC_API_TOKEN_SPARE - QC_API_FD_RESERVE;
    if (room >= QC_API_MAX_LONGPOLLS) return QC_API_MAX_LONGPOLLS;
    if (room < 16) room = 16;
    qc_log(QC_LOG_INFO, "api",
           "long-polls limited to %lld by the descriptor limit %llu (raise it for up to %d)", room,
           (unsigned long long)rl.rlim_cur, QC_API_MAX_LONGPOLLS);
    return (int)room;
}

int qc_api_new(struct ev_loop *loop, const char *host, int port, const qc_view *view,
               qc_metrics *metrics, const char *token, qc_api **out)
{
    if (!loop || !view || !out || port < 0 || port > 65535) return QC_EINVAL;
    if (token && strlen(token) > QC_API_MAX_TOKEN) {
        qc_log(QC_LOG_ERROR, "api", "api_token is longer than %d bytes", QC_API_MAX_TOKEN);
        return QC_EINVAL;
    }
    qc_api *a = calloc(1, sizeof *a);
    if (!a) return QC_ENOMEM;
    a->max_kv_body = QC_API_MAX_KV_BODY;
    a->max_conns = QC_API_MAX_CONNS;
    a->max_per_client = QC_API_MAX_CONNS_PER_CLIENT;
    a->max_longpolls = longpolls_default();
    a->token_spare = QC_API_TOKEN_SPARE;
    a->idle_s = QC_API_IDLE_TIMEOUT_S;
    a->request_s = QC_API_REQUEST_TIMEOUT_S;
    a->header_s = QC_API_HEADER_TIMEOUT_S;
    a->loop = loop;
    a->view = view;
    a->srv = &server;
    a->metrics = metrics;
    if (token && *token && !(a->token = strdup(token))) {
        free(a);
        return QC_ENOMEM;
    }
    a->token_len = a->token ? strlen(a->token) : 0;
    qc_metrics_declare(metrics, "qcluster_api_limit_total", QC_METRIC_COUNTER,
                       "API requests and connections turned away by a limit");
    qc_metrics_declare(metrics, "qcluster_api_connections", QC_METRIC_GAUGE,
                       "API connections open now");
    qc_metrics_declare(metrics, "qcluster_api_tls_failures_total", QC_METRIC_COUNTER,
                       "API connections refused at TLS, by reason (plain_http, no_client_cert, "
                       "bad_client_cert, handshake, protocol)");
    qc_metrics_declare(metrics, "qcluster_accept_backoffs_total", QC_METRIC_COUNTER,
                       "Times a listener paused accepting for lack of descriptors or memory "
                       "(EMFILE, ENFILE, ENOBUFS, ENOMEM), by listener (api, cluster).");
    qc_metrics_add(metrics, "qcluster_accept_backoffs_total", "listener", "api", 0);
    int rc = listen_on(host, port, &a->fd);
    if (rc) {
        free(a->token);
        free(a);
        return rc;
    }
    ev_io_init(&a->accept_w, accept_cb, a->fd, EV_READ);
    ev_set_priority(&a->accept_w, API_PRI);
    a->accept_w.data = a;
    ev_check_init(&a->drain_w, drain_cb);
    ev_set_priority(&a->drain_w, API_PRI);
    a->drain_w.data = a;
    ev_idle_init(&a->spin_w, spin_cb);
    ev_set_priority(&a->spin_w, API_PRI);
    a->spin_w.data = a;
    ev_init(&a->accept_pause, accept_pause_cb);
    a->accept_pause.data = a;
    ev_prepare_init(&a->reaper, reap_cb);
    a->reaper.data = a;
    ev_io_start(loop, &a->accept_w);
    *out = a;
    return QC_OK;
}

void qc_api_set_limits(qc_api *a, const qc_api_limits *limits)
{
    if (!a || !limits) return;
    if (limits->max_conns > 0) a->max_conns = limits->max_conns;
    if (limits->max_conns_per_client > 0) a->max_per_client = limits->max_conns_per_client;
    if (limits->max_longpolls > 0) a->max_longpolls = limits->max_longpolls;
    if (limits->token_spare > 0) a->token_spare = limits->token_spare;
    if (limits->idle_timeout_s > 0) a->idle_s = limits->idle_timeout_s;
    if (limits->request_timeout_s > 0) a->request_s = limits->request_timeout_s;
    if (limits->header_timeout_s > 0) a->header_s = limits->header_timeout_s;
}

int qc_api_adopt(qc_api *a, int fd)
{
    if (!a || fd < 0) return QC_EINVAL;
    /* born elsewhere: made what accept4 would have made it */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        close(fd);
        return QC_EIO;
    }
    return conn_admit(a, fd);
}

int qc_api_connections(const qc_api *a) { return a ? a->nconns : 0; }

void qc_api_set_max_value(qc_api *a, size_t bytes)
{
    a->max_kv_body = bytes + 64 * 1024; /* a bigger one is answered 413 */
}

void qc_api_notify(qc_api *a)
{
    if (!a) return;
    a->shared.valid = a->shared.tried = 0; /* a drain pass under way looks again */
    /* Every parked poll is checked again, by the drain: thousands of
     * answers never run inside the caller (the agent's raft output). */
    while (a->parked) list_push(&a->unchecked, a->parked);
    if (a->unchecked) drain_wake(a);
}

void qc_api_free(qc_api *a)
{
    if (!a) return;
    while (a->parked || a->unchecked) {
        conn *c = a->parked ? a->parked : a->unchecked;
        unpark(c);
        c->keep_alive = 0;
        answer_leader(c); /* one try; the socket closes right after */
        conn_close(c);
    }
    while (a->held) conn_close(a->held);
    while (a->conns) conn_close(a->conns);
    reap_all(a);
    ev_check_stop(a->loop, &a->drain_w);
    ev_idle_stop(a->loop, &a->spin_w);
    ev_prepare_stop(a->loop, &a->reaper);
    ev_io_stop(a->loop, &a->accept_w);
    ev_timer_stop(a->loop, &a->accept_pause);
    close(a->fd);
    qc_tls_free(a->tls);
    free(a->shared.text[0]);
    free(a->shared.text[1]);
    free(a->token);
    free(a);
}

void qc_api_set_tls(qc_api *a, qc_tls *tls)
{
    if (!a->tls && tls)
        qc_metrics_add(a->metrics, "qcluster_api_tls_failures_total", "reason", "handshake", 0);
    qc_tls_free(a->tls);
    a->tls = tls;
}
