/* The routes that read the view, and the transfer: GET /v1/status,
 * /v1/members, /v1/history, /metrics and /ui, and POST
 * /v1/transfer-leadership, which waits for the view's callback (struct
 * pending). GET /v1/leader, a long-poll, is the server's (api.c). It
 * reaches the server only through api_int.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "api/api_int.h"
#include "base/common.h"
#include "base/embedded.h"
#include "base/json.h"

#define PEERS_STACK 16

/* Other members; *list is buf or a malloc'd array the caller frees. */
static size_t peers_now(const qc_api *a, qc_peer_info *buf, qc_peer_info **list)
{
    *list = buf;
    if (!a->view->peers) return 0;
    size_t n = a->view->peers(a->view->ud, buf, PEERS_STACK);
    if (n <= PEERS_STACK) return n;
    qc_peer_info *big = calloc(n, sizeof *big);
    if (!big) return PEERS_STACK;
    size_t m = a->view->peers(a->view->ud, big, n);
    *list = big;
    return m < n ? m : n;
}

static void self_now(const qc_api *a, qc_peer_info *out)
{
    memset(out, 0, sizeof *out);
    if (a->view->self) a->view->self(a->view->ud, out);
}

/* "checks": [{"name", "status"}] as the member last told (empty: unknown). */
static int peer_checks(yajl_gen g, const qc_peer_info *p)
{
    int rc = qc_json_key(g, "checks");
    if (!rc) rc = qc_json_gen_rc(yajl_gen_array_open(g));
    for (size_t i = 0; !rc && p->checks && i < p->n_checks; i++) {
        rc = qc_json_gen_rc(yajl_gen_map_open(g));
        if (!rc) rc = qc_json_key_str(g, "name", p->checks[i].name);
        if (!rc) rc = qc_json_key_str(g, "status", p->checks[i].passing ? "passing" : "failing");
        if (!rc) rc = qc_json_gen_rc(yajl_gen_map_close(g));
    }
    return rc ? rc : qc_json_gen_rc(yajl_gen_array_close(g));
}

/* A Peer {identifier, host, port, metadata}; with_state adds role, up, voter,
 * priority, healthy and checks ([{name, status}]). */
static int json_peer(yajl_gen g, const qc_peer_info *p, int with_state)
{
    int rc = qc_json_gen_rc(yajl_gen_map_open(g));
    if (!rc) rc = qc_json_key_str(g, "identifier", p->identifier);
    if (!rc) rc = qc_json_key_str(g, "host", p->host);
    if (!rc) rc = qc_json_key_int(g, "port", p->port);
    if (!rc) rc = qc_json_key(g, "metadata");
    if (!rc) rc = qc_json_raw_object(g, p->metadata);
    if (!rc && with_state) {
        rc = qc_json_key_str(g, "role", p->role);
        if (!rc) rc = qc_json_key_bool(g, "up", p->up);
        if (!rc) rc = qc_json_key_bool(g, "voter", p->voter);
        if (!rc) rc = qc_json_key_int(g, "priority", p->priority);
        if (!rc) rc = qc_json_key_bool(g, "healthy", p->healthy);
        if (!rc) rc = peer_checks(g, p);
    }
    return rc ? rc : qc_json_gen_rc(yajl_gen_map_close(g));
}

void api_h_status(conn *c, const req *r)
{
    (void)r;
    qc_api *a = c->api;
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        api_conn_close(c);
        return;
    }
    qc_peer_info self, lead, buf[PEERS_STACK], *list;
    self_now(a, &self);
    yajl_gen_map_open(g);
    qc_json_key_str(g, "identifier", self.identifier);
    qc_json_key_str(g, "role", a->view->role ? a->view->role(a->view->ud) : self.role);
    qc_json_key_int(g, "term", (long long)api_term_now(a));
    qc_json_key(g, "leader");
    if (api_leader_now(a, &lead))
        json_peer(g, &lead, 0);
    else
        yajl_gen_null(g);
    qc_json_key(g, "peers");
    yajl_gen_array_open(g);
    size_t n = peers_now(a, buf, &list);
    for (size_t i = 0; i < n; i++) json_peer(g, &list[i], 1);
    if (list != buf) free(list);
    yajl_gen_array_close(g);
    uint64_t ci = a->view->commit_index ? a->view->commit_index(a->view->ud) : 0;
    qc_json_key_int(g, "commit_index", (long long)ci);
    if (a->view->healthy) qc_json_key_bool(g, "healthy", a->view->healthy(a->view->ud));
    yajl_gen_map_close(g);
    api_respond_json_gen(c, 200, g, NULL);
    yajl_gen_free(g);
}

/* ?healthy=true|false: 1 or 0; -1 for every member; -2 for anything else. */
static int healthy_filter(const req *r)
{
    char v[8];
    int has = api_query_get(r, "healthy", v, sizeof v);
    if (has == 0) return -1;
    if (has > 0 && strcmp(v, "true") == 0) return 1;
    if (has > 0 && strcmp(v, "false") == 0) return 0;
    return -2;
}

void api_h_members(conn *c, const req *r)
{
    qc_api *a = c->api;
    int want = healthy_filter(r);
    if (want == -2) {
        api_respond_error(c, 400, "healthy must be true or false", NULL);
        return;
    }
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        api_conn_close(c);
        return;
    }
    qc_peer_info self, buf[PEERS_STACK], *list;
    self_now(a, &self);
    if (!self.role && a->view->role) self.role = a->view->role(a->view->ud);
    self.up = 1;
    self.is_self = 1;
    /* Before the agent provides health, this node is as healthy as it says. */
    if (a->view->healthy) self.healthy = a->view->healthy(a->view->ud);
    yajl_gen_array_open(g);
    if (want < 0 || !self.healthy == !want) json_peer(g, &self, 1);
    size_t n = peers_now(a, buf, &list);
    for (size_t i = 0; i < n; i++)
        if (want < 0 || !list[i].healthy == !want) json_peer(g, &list[i], 1);
    if (list != buf) free(list);
    yajl_gen_array_close(g);
    api_respond_json_gen(c, 200, g, NULL);
    yajl_gen_free(g);
}

static void transfer_answer(conn *c, const pending *x, int rc)
{
    if (rc == QC_ENOTFOUND) {
        char msg[300];
        snprintf(msg, sizeof msg, "no such peer: %.256s", x->to ? x->to : "(any)");
        api_respond_error(c, 404, msg, NULL);
        return;
    }
    if (rc != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "transfer failed: %s", qc_strerror(rc));
        api_respond_error(c, 409, msg, NULL);
        return;
    }
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        api_conn_close(c);
        return;
    }
    qc_peer_info p;
    yajl_gen_map_open(g);
    qc_json_key(g, "leader");
    if (api_leader_now(c->api, &p))
        json_peer(g, &p, 0);
    else
        qc_json_str(g, x->to);
    qc_json_key_int(g, "term", (long long)api_term_now(c->api));
    yajl_gen_map_close(g);
    api_respond_json_gen(c, 200, g, NULL);
    yajl_gen_free(g);
}

static void xfer_done(void *arg, int rc)
{
    pending *x = arg;
    if (x->fired) return; /* done() must fire once; ignore a second call */
    conn *c = api_pending_fire(x);
    if (c) transfer_answer(c, x, rc);
    api_pending_settle(x, c);
}

/* Body: empty, or {"to": IDENTIFIER}. *to is malloc'd or NULL; why as
 * body_json's. */
static int transfer_target(const conn *c, char **to, char *why, size_t cap)
{
    yajl_val v;
    *to = NULL;
    int rc = api_body_json(c, NULL, &v, why, cap);
    if (rc || !v) return rc;
    if (!YAJL_IS_OBJECT(v)) rc = QC_EINVAL;
    yajl_val t = rc ? NULL : qc_json_get(v, "to");
    if (t && !YAJL_IS_NULL(t)) {
        if (!YAJL_IS_STRING(t))
            rc = QC_EINVAL;
        else if (!(*to = strdup(t->u.string)))
            rc = QC_ENOMEM;
    }
    yajl_tree_free(v);
    return rc;
}

void api_h_transfer(conn *c, const req *r)
{
    (void)r;
    char *to, why[256];
    int rc = transfer_target(c, &to, why, sizeof why);
    if (api_body_failed(c, rc, why, "body must be {\"to\": IDENTIFIER} or empty")) return;
    pending *x = c->api->view->transfer ? api_pending_new(c) : NULL;
    if (!x) {
        free(to);
        api_respond_error(c, 409, "transfer is not available", NULL);
        return;
    }
    x->to = to;
    c->api->view->transfer(c->api->view->ud, to, xfer_done, x);
    api_pending_called(x);
}

/* One history entry (README "Fail-over history and logs"): the contract's
 * fields, and for an event what it is and whom it is about. */
static int history_entry(yajl_gen g, const qc_history_entry *e)
{
    char num[40];
    int len = snprintf(num, sizeof num, "%.3f", e->time); /* milliseconds, as "since" */
    int rc = yajl_gen_map_open(g) != yajl_gen_status_ok;
    rc |= qc_json_key(g, "time") || yajl_gen_number(g, num, (size_t)len) != yajl_gen_status_ok;
    rc |= qc_json_key_int(g, "term", (long long)e->term);
    rc |= qc_json_key_str(g, "leader", e->leader[0] ? e->leader : NULL);
    rc |= qc_json_key_str(g, "previous_leader", e->previous_leader[0] ? e->previous_leader : NULL);
    rc |= qc_json_key_str(g, "reason", e->reason);
    if (e->event) {
        rc |= qc_json_key_str(g, "event", e->event);
        rc |= qc_json_key_str(g, "peer", e->peer);
    }
    rc |= yajl_gen_map_close(g) != yajl_gen_status_ok;
    return rc ? QC_ENOMEM : QC_OK;
}

/* GET /v1/history: the transitions this node recorded, oldest first;
 * ?events=true adds the health and reachability events among them. */
void api_h_history(conn *c, const req *r)
{
    const qc_view *v = c->api->view;
    char flag[8];
    int has = api_query_get(r, "events", flag, sizeof flag);
    int events = has > 0 && strcmp(flag, "true") == 0;
    if (has != 0 && !events && !(has > 0 && strcmp(flag, "false") == 0)) {
        api_respond_error(c, 400, "events must be true or false", NULL);
        return;
    }
    size_t max = 2 * QC_HISTORY_MAX, n = 0;
    qc_history_entry *list = v->history ? malloc(max * sizeof *list) : NULL;
    yajl_gen g = yajl_gen_alloc(NULL);
    if ((v->history && !list) || !g) {
        free(list);
        if (g) yajl_gen_free(g);
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    if (list) n = v->history(v->ud, events, list, max);
    int rc = yajl_gen_array_open(g) != yajl_gen_status_ok;
    for (size_t i = 0; i < n && !rc; i++) rc = history_entry(g, &list[i]);
    rc |= yajl_gen_array_close(g) != yajl_gen_status_ok;
    if (rc)
        api_respond_error(c, 500, "out of memory", NULL);
    else
        api_respond_json_gen(c, 200, g, NULL);
    yajl_gen_free(g);
    free(list);
}

void api_h_metrics(conn *c, const req *r)
{
    (void)r;
    qc_api *a = c->api;
    if (a->view->refresh_metrics) a->view->refresh_metrics(a->view->ud);
    char *text = NULL;
    size_t len = 0;
    if (qc_metrics_render(a->metrics, &text, &len) != 0) {
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    api_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
    free(text);
}

/* The page (ui/index.html, embedded) runs only its own inline script and
 * style and talks only to this agent; it is read-only, so no token. */
static const char ui_headers[] =
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

void api_h_ui(conn *c, const req *r)
{
    (void)r;
    size_t len = 0;
    const char *page = qc_embedded_lookup("ui/index.html", &len);
    if (!page) {
        api_respond_error(c, 500, "status page not built in", NULL);
        return;
    }
    api_respond(c, 200, "text/html; charset=utf-8", page, len, ui_headers);
}
