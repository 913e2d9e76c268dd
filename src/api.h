/* The HTTP/1.1 API and /metrics on the agent's loop: nodejs http-parser for
 * requests, yajl for JSON. Long-polls, transfers and KV requests are parked
 * requests, never threads. It reads the agent only through qc_view.
 * Membership (POST /v1/join, POST /v1/leave, PUT /v1/self/metadata) goes to
 * view->join/leave/set_metadata; 501 while the view has none. */
#ifndef QC_API_H
#define QC_API_H

#include <ev.h>

#include "metrics.h"
#include "view.h"

typedef struct qc_api qc_api;

#define QC_API_MAX_BODY (64 * 1024) /* larger requests get 413 */
/* PUT /v1/kv/KEY: the default value limit plus slack, so a value just over
 * the store's limit is still read and answered 413 by the store. */
#define QC_API_MAX_KV_BODY (QC_KV_MAX_VALUE_DEFAULT + 64 * 1024)
#define QC_API_MAX_WAIT_S 300 /* longest ?wait= honoured */

/* Binds host:port and serves at once. view and metrics must outlive it.
 * token: required as "Authorization: Bearer TOKEN" on writes (NULL: none).
 * The key and value given to view->kv_*, and the addresses, identifier and
 * metadata given to view->join/leave/set_metadata, live only during that
 * call: the view copies what it keeps. Pending view callbacks (transfer,
 * membership, KV) must still fire after qc_api_free; they free their
 * request then. */
int qc_api_new(struct ev_loop *loop, const char *host, int port, const qc_view *view,
               qc_metrics *metrics, const char *token, qc_api **out);
/* Answers parked requests, closes every connection, frees everything. */
void qc_api_free(qc_api *a);
/* The largest KV value the store takes: PUT bodies up to it (and a margin)
 * are read, bigger ones get 413. Default QC_KV_MAX_VALUE_DEFAULT. */
void qc_api_set_max_value(qc_api *a, size_t bytes);
/* The leader or the term changed: parked /v1/leader?wait requests re-check. */
void qc_api_notify(qc_api *a);

#endif
