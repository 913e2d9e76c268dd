/* The HTTP/1.1 API and /metrics on the agent's loop: nodejs http-parser for
 * requests, yajl for JSON. Long-polls, transfers and KV requests are parked
 * requests, never threads. It reads the agent only through qc_view.
 * Membership (POST /v1/join, POST /v1/leave, PUT /v1/self/metadata) goes to
 * view->join/leave/set_metadata; 501 while the view has none. */
#ifndef QC_API_H
#define QC_API_H

#include <ev.h>

#include "base/metrics.h"
#include "core/view.h"
#include "net/tls.h"

typedef struct qc_api qc_api;

/* Limits. Each is answered with a clear error and counted in
 * qcluster_api_limit_total{limit=...}; none stalls the loop or another
 * client. */
#define QC_API_MAX_BODY (64 * 1024) /* larger requests get 413 (limit="body") */
/* PUT /v1/kv/KEY: the default value limit plus slack, so a value just over
 * the store's limit is still read and answered 413 by the store. */
#define QC_API_MAX_KV_BODY (QC_KV_MAX_VALUE_DEFAULT + 64 * 1024)
/* Request line and headers together (each header counted with its ": " and
 * CRLF): larger get 431 (limit="header"); a request target over
 * QC_API_MAX_URL bytes gets 414 (limit="url"). Both close the connection. */
#define QC_API_MAX_HEADER 8192
#define QC_API_MAX_URL 4096
/* Connection slots. When all QC_API_MAX_CONNS are taken, a new connection
 * first takes the slot of the oldest idle keep-alive connection (closed, as
 * HTTP lets a server do; limit="evicted"). One client address (an IPv4
 * address, an IPv6 /64) holds at most QC_API_MAX_CONNS_PER_CLIENT slots,
 * so no single client can take them all (limit="client_connections"); its
 * own idle connections make room likewise. With no room, a new connection
 * is answered "503 too many connections" with Retry-After: 1 and
 * Connection: close at once, before any of its request is read
 * (limit="connections" or "client_connections") ... */
#define QC_API_MAX_CONNS 512
#define QC_API_MAX_CONNS_PER_CLIENT 128
/* ... unless an api_token is set: then up to QC_API_TOKEN_SPARE such
 * connections (the newest) wait for their first request's headers. One
 * with the valid bearer token takes the slot of an unauthenticated
 * connection (idle first, then one still sending its request; oldest
 * first), so a request with the token is never refused for slots taken by
 * requests without it; the others get the 503. A new connection's request
 * is read as soon as it is accepted, so a burst of long-polls parks (and
 * frees its slots) as fast as it is accepted. */
#define QC_API_TOKEN_SPARE 32
/* Parked /v1/leader?wait requests at once. A parked request holds no slot
 * above, from any address: long-polls are limited only by this budget (a
 * host with many watchers, or a proxy, may hold them all). One more is
 * answered at once, as without ?wait (limit="longpolls"); one with the
 * valid token answers the oldest parked unauthenticated one now and parks
 * instead. Answered, a long-poll keeps its connection (unless its client
 * said close) in this budget, still holding no slot, for
 * QC_API_LONGPOLL_GRACE_S: its next GET /v1/leader is served on it at
 * once; another request there needs a slot as a new connection does (else
 * 503, limit="connections"); when the grace ends it takes a free slot or
 * closes. With the budget full, the one kept the longest closes for a new
 * poll (limit="evicted"). The default shrinks to what
 * the descriptor limit (RLIMIT_NOFILE) leaves after the slots and
 * QC_API_FD_RESERVE, so that parked polls never take the descriptors
 * ordinary requests need; the agent raises that limit to its hard limit. */
#define QC_API_MAX_LONGPOLLS 16384
#define QC_API_LONGPOLL_GRACE_S 5.0
#define QC_API_FD_RESERVE 256 /* peers, WAL, hooks' children, listeners */
/* A keep-alive connection with no request under way (or whose client reads
 * nothing of its answer) for this long is closed (limit="idle"). */
#define QC_API_IDLE_TIMEOUT_S 60.0
/* A request must arrive whole, headers and body, within this long from its
 * first byte; else 408 and the connection closes (limit="request_timeout").
 * Slow clients cannot hold a connection by trickling bytes. */
#define QC_API_REQUEST_TIMEOUT_S 30.0
/* Its request line and headers within this long of its first byte, and a
 * new connection's first request within this long of the connection: else
 * 408 (or, with nothing sent, a plain close; limit="header_timeout"). */
#define QC_API_HEADER_TIMEOUT_S 10.0
#define QC_API_MAX_WAIT_S 300 /* longest ?wait= honoured */

/* Writes (POST, PUT, DELETE) need the token when one is set: a wrong or
 * missing one gets 401 as soon as the headers are in, before any body is
 * read, and closes the connection (limit="auth"). The comparison takes the
 * same time whatever the token's content and length. A token may be up to
 * QC_API_MAX_TOKEN bytes (qc_api_new refuses a longer one). */
#define QC_API_MAX_TOKEN 1024

/* Binds host:port (port 0: any free one) and serves at once. view and
 * metrics (may be NULL) must outlive it.
 * token: required as "Authorization: Bearer TOKEN" on writes (NULL: none).
 * The key and value given to view->kv_*, and the addresses, identifier and
 * metadata given to view->join/leave/set_metadata, live only during that
 * call: the view copies what it keeps. Pending view callbacks (transfer,
 * membership, KV) must still fire after qc_api_free; they free their
 * request then. */
int qc_api_new(struct ev_loop *loop, const char *host, int port, const qc_view *view,
               qc_metrics *metrics, const char *token, qc_api **out);
/* Serves HTTPS only from now on (or on, with new certificates: connections
 * open keep theirs): takes tls, a qc_tls_server_new context, and frees the
 * one it had. A plain HTTP request gets a plain 400 and a close; a refused
 * handshake is counted in qcluster_api_tls_failures_total{reason}. */
void qc_api_set_tls(qc_api *a, qc_tls *tls);
/* Answers parked requests, closes every connection, frees everything. */
void qc_api_free(qc_api *a);
/* The largest KV value the store takes: PUT bodies up to it (and a margin)
 * are read, bigger ones get 413. Default QC_KV_MAX_VALUE_DEFAULT. */
void qc_api_set_max_value(qc_api *a, size_t bytes);
/* The leader or the term changed: parked /v1/leader?wait requests re-check. */
void qc_api_notify(qc_api *a);

/* Overrides of the limits above, for tests (api_fake's QC_FAKE_API_* env);
 * a field at 0 keeps the default. Applies to connections accepted later. */
typedef struct qc_api_limits {
    int max_conns, max_conns_per_client, max_longpolls, token_spare;
    double idle_timeout_s, request_timeout_s, header_timeout_s;
} qc_api_limits;
void qc_api_set_limits(qc_api *a, const qc_api_limits *limits);
/* Serves fd, a connected stream socket (a socketpair in tests and the fuzz
 * target), as if it had been accepted; the API owns and closes it. 0;
 * QC_EBUSY over the connection limits (answered 503 and closed as above),
 * QC_EIO or QC_ENOMEM (fd closed). */
int qc_api_adopt(qc_api *a, int fd);
/* Connections open now (tests). */
int qc_api_connections(const qc_api *a);

#endif
