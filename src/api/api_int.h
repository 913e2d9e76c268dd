/* Private to src/api/: nothing outside this folder includes it. What the
 * server (api.c: connections, parsing, dispatch, output, long-polls)
 * shares with the route files (routes_status.c, routes_members.c,
 * routes_kv.c, routes_checks.c): the connection, the request, a request
 * the view answers later (struct pending), the server's state, api_server,
 * the server's functions the routes call, the view's leader and term, and
 * query.c's helpers for the request target, which both sides use. The
 * server names the routes in its route table; the routes reach the server
 * only through api_server, never by name, so that no two files call each
 * other (scripts/check-layers.lua). */
#ifndef QC_API_INT_H
#define QC_API_INT_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "api/api.h"
#include "core/members.h" /* QC_MEMBER_ID_MAX */

#define URL_MAX QC_API_MAX_URL /* a 1 KiB binary key, percent-encoded, fits */

typedef struct api_server api_server;

typedef struct conn conn;

/* Who a connection counts against: an IPv4 address, an IPv6 /64 (one host
 * usually holds a whole /64), or "local" (any other family). */
typedef struct client_addr {
    int family; /* AF_INET, AF_INET6 or 0 */
    unsigned char bytes[8];
} client_addr;

/* Why a connection was over its budgets when it came (conn.over). */
enum { OVER_NONE = 0, OVER_ALL, OVER_CLIENT };

/* A request the view answers through a callback (transfer, membership, KV): it
 * outlives its connection until the callback fires, which frees it, or the
 * handler frees it when the callback fired inside the view call. */
typedef struct pending {
    conn *c;  /* NULL once the connection is gone */
    int sync; /* still inside the view call */
    int fired;
    char *to;              /* transfer: the target (NULL: the best peer); leave: who */
    int op;                /* KV: KV_GET, ... */
    yajl_gen list;         /* KV list: the array being built */
    int list_error;        /* KV list: emitting failed */
    const api_server *srv; /* the server's, while c may be gone */
} pending;

struct conn {
    qc_api *api;
    int fd;
    qc_tls_conn *tls; /* NULL: plain HTTP */
    int tls_seen;     /* the first byte was looked at (see conn_sniff) */
    int tls_swap;     /* TLS_READ_WANTS_WRITE, TLS_WRITE_WANTS_READ */
    int tls_refused;  /* the session failed: its alert goes out, then a close */
    ev_io rio, wio;
    ev_timer idle, wait;
    http_parser parser;
    char *in; /* IN_CAP bytes, NULL when nothing is buffered (see bufs_get) */
    size_t in_len, in_off;
    /* the request being parsed */
    char *url; /* URL_MAX + 1 bytes, in in's block */
    size_t url_len, hdr_bytes;
    char field[32];
    size_t field_len;
    int field_done, hdr_kind, url_overflow;
    char *auth; /* AUTH_MAX + 1 bytes, in in's block */
    size_t auth_len;
    int auth_over; /* the Authorization value was longer than AUTH_MAX */
    int expect_continue;
    char *body;
    size_t body_len, body_cap, body_max;
    int err_status; /* set by a callback that rejects the request */
    int method, keep_alive;
    int client_close; /* the request said it is the last (Connection: close, HTTP/1.0) */
    /* output */
    char *out;
    size_t out_len, out_off, out_cap;
    /* lifecycle */
    int busy;    /* parked or transfer pending: parse nothing more */
    int closing; /* last response queued */
    int lingering, eof, dead;
    /* the connection's timer (idle) runs to the earliest deadline; see
     * timer_arm */
    ev_tstamp progress;  /* last answer byte sent, request in, or open */
    ev_tstamp req_start; /* first byte of the request under way; 0: none */
    ev_tstamp linger_start;
    /* slots (see QC_API_MAX_CONNS in api.h) */
    client_addr addr;
    int counted;        /* holds a slot: counts in nslots and against its address */
    int over;           /* OVER_*: came over a budget and waits to show the token */
    int authed;         /* a request on it carried the valid token */
    int hdr_done;       /* the request under way has all its headers */
    unsigned long nreq; /* requests completed */
    ev_tstamp opened;
    /* parked /v1/leader?wait: what its client knows (see struct known) */
    int parked, park_has_term, park_has_leader;
    uint64_t park_term;
    char *park_leader;
    int expired; /* parked: its wait ended, answered by the next drain */
    int held;    /* answered long-poll kept in the long-poll budget (see api.h) */
    pending *pend;
    conn *next, *prev;
    conn **home;         /* the list it is on (conns, parked, unchecked, zombies) */
    int deferred;        /* its read waits on the drain queue (rio stopped) */
    conn *dnext, *dprev; /* the drain queue */
};

/* GET /v1/leader's answer as one drain pass found the view (see
 * drain_cb): the parked polls it wakes get these very bytes, one send
 * each, with no JSON built nor memory taken per answer. */
typedef struct shared_answer {
    int valid; /* built in this pass and no change since (qc_api_notify) */
    int tried; /* building it was tried since (it failed when not valid) */
    uint64_t term;
    int has_leader;
    char leader[QC_MEMBER_ID_MAX + 1];
    int status;    /* 200, or 503 with no leader */
    char *text[2]; /* the whole response: [0] closes, [1] keeps alive */
    size_t len[2], cap[2];
} shared_answer;

struct qc_api {
    struct ev_loop *loop;
    const qc_view *view;
    const api_server *srv; /* for the routes (api_int.h) */
    qc_metrics *metrics;
    char *token;
    size_t token_len;
    size_t max_kv_body; /* largest PUT /v1/kv body taken */
    int fd;
    qc_tls *tls; /* api_tls_*: every connection speaks TLS; NULL: plain HTTP */
    ev_io accept_w;
    ev_timer accept_pause; /* restarts accept_w after a failed accept */
    int starved;           /* pauses since the listener was last drained (logged once) */
    ev_prepare reaper;
    /* Parked long-polls live on their own list, so that walks over the
     * connections that hold slots (addr_slots, find_victim) stay short
     * and a change walks only the parked ones. */
    conn *conns, *parked, *zombies;
    conn *held; /* answered long-polls waiting for their client's next poll */
    int nheld;
    /* Parked polls not checked since the last change (qc_api_notify) or
     * whose wait ended, and connections whose read waits for a turn with
     * budget left: both served by drain_cb, TURN_BUDGET a turn, reads
     * first (oldest first). */
    conn *unchecked, *dhead, *dtail;
    ev_check drain_w;
    ev_idle spin_w; /* keeps the loop from blocking while work waits */
    shared_answer shared;
    unsigned turn_iter;
    int turn_used;
    int nconns;  /* open, the gauge */
    int nslots;  /* holding a slot */
    int nspare;  /* over a budget, waiting to show the token */
    int nparked; /* parked long-polls (none holds a slot) */
    int max_conns, max_per_client, max_longpolls, token_spare;
    double idle_s, request_s, header_s;
};

typedef struct req {
    const char *path;
    const char *query;
    size_t path_len, query_len;
} req;

/* The server's functions the routes call (api.c's, under the same names
 * without api_); every qc_api and pending points to the one table. */
struct api_server {
    void (*respond)(conn *c, int status, const char *ctype, const char *body, size_t len,
                    const char *extra);
    void (*respond_json_gen)(conn *c, int status, yajl_gen g, const char *extra);
    void (*respond_error)(conn *c, int status, const char *msg, const char *extra);
    void (*conn_close)(conn *c);
    pending *(*pending_new)(conn *c);
    conn *(*pending_fire)(pending *p);
    void (*pending_settle)(pending *p, conn *c);
    void (*pending_called)(pending *p);
    int (*body_json)(const conn *c, const char *prefix, yajl_val *out, char *why, size_t cap);
    int (*body_failed)(conn *c, int rc, const char *why, const char *expected);
};

/* What each does is written at its definition in api.c. */
static inline void api_respond(conn *c, int status, const char *ctype, const char *body, size_t len,
                               const char *extra)
{
    c->api->srv->respond(c, status, ctype, body, len, extra);
}

static inline void api_respond_json_gen(conn *c, int status, yajl_gen g, const char *extra)
{
    c->api->srv->respond_json_gen(c, status, g, extra);
}

static inline void api_respond_error(conn *c, int status, const char *msg, const char *extra)
{
    c->api->srv->respond_error(c, status, msg, extra);
}

static inline void api_conn_close(conn *c) { c->api->srv->conn_close(c); }

static inline pending *api_pending_new(conn *c) { return c->api->srv->pending_new(c); }

/* p->c is NULL once the client is gone: p has its own way to the table. */
static inline conn *api_pending_fire(pending *p) { return p->srv->pending_fire(p); }

static inline void api_pending_settle(pending *p, conn *c) { p->srv->pending_settle(p, c); }

static inline void api_pending_called(pending *p) { p->srv->pending_called(p); }

static inline int api_body_json(const conn *c, const char *prefix, yajl_val *out, char *why,
                                size_t cap)
{
    return c->api->srv->body_json(c, prefix, out, why, cap);
}

static inline int api_body_failed(conn *c, int rc, const char *why, const char *expected)
{
    return c->api->srv->body_failed(c, rc, why, expected);
}

/* The view as both sides read it. */

/* The leader now: 1 with *out, else 0 (*out zeroed). */
static inline int api_leader_now(const qc_api *a, qc_peer_info *out)
{
    memset(out, 0, sizeof *out);
    return a->view->leader && a->view->leader(a->view->ud, out) == 0 && out->identifier;
}

static inline uint64_t api_term_now(const qc_api *a)
{
    return a->view->term ? a->view->term(a->view->ud) : 0;
}

/* query.c: the request target's text, for the server and the routes. */

/* Finds name or name=value in the query: 1 with the raw value, else 0. */
int api_query_find(const req *r, const char *name, const char **val, size_t *vlen);
/* name=value's raw value copied into out (cap bytes): 1, 0 when absent,
 * -1 when it does not fit. */
int api_query_get(const req *r, const char *name, char *out, size_t cap);
/* A decimal number of digits only: 0 and *out, else -1. */
int api_parse_u64(const char *s, uint64_t *out);
/* Percent-decodes s[0..n) into out (room for n bytes): 0 and *len, or -1 on
 * a broken escape. */
int api_pct_decode(const char *s, size_t n, uint8_t *out, size_t *len);

/* The routes, in the server's route table: each answers its request or
 * leaves it pending (c->busy) until the view's callback answers it. */
void api_h_status(conn *c, const req *r);        /* routes_status.c */
void api_h_members(conn *c, const req *r);       /* routes_status.c */
void api_h_transfer(conn *c, const req *r);      /* routes_status.c */
void api_h_history(conn *c, const req *r);       /* routes_status.c */
void api_h_metrics(conn *c, const req *r);       /* routes_status.c */
void api_h_ui(conn *c, const req *r);            /* routes_status.c */
void api_h_join(conn *c, const req *r);          /* routes_members.c */
void api_h_leave(conn *c, const req *r);         /* routes_members.c */
void api_h_self_metadata(conn *c, const req *r); /* routes_members.c */
void api_h_kv(conn *c, const req *r);            /* routes_kv.c */
void api_h_checks(conn *c, const req *r);        /* routes_checks.c */

#endif
