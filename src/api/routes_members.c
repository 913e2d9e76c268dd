/* The membership routes: POST /v1/join, POST /v1/leave and PUT
 * /v1/self/metadata. Each waits for the view's qc_member_done_fn (struct
 * pending, as a transfer does). Addresses, identifiers and metadata text
 * handed to the view live only during its call. It reaches the server only
 * through api_int.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "api/api_int.h"
#include "base/common.h"
#include "base/json.h"

#define JOIN_MAX 32       /* addresses in one join */
#define JOIN_HOST_MAX 255 /* a DNS name's limit */

/* How a membership failure becomes HTTP; the agent's message is the error
 * text when it gives one, else msg:
 *   QC_EINVAL     409  the change was refused (identifier in use, ...)
 *   QC_ENOTFOUND  404  no such member
 *   QC_ENOLEADER  503  no leader to commit it (QC_ENOTLEADER likewise)
 *   QC_EBUSY      504  timed out, or another change is in progress
 *   QC_ETOOBIG    413  e.g. metadata over the agent's limit
 *   anything else 500 */
static const struct {
    int rc, http;
    const char *msg;
} member_errors[] = {
    {QC_EINVAL, 409, "the change was refused"},
    {QC_ENOTFOUND, 404, "no such member"},
    {QC_ENOLEADER, 503, "no leader"},
    {QC_ENOTLEADER, 503, "no leader"},
    {QC_EBUSY, 504, "timed out"},
    {QC_ETOOBIG, 413, "too large"},
};

static void member_ok(conn *c, const char *message)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        api_conn_close(c);
        return;
    }
    yajl_gen_map_open(g);
    qc_json_key_bool(g, "ok", 1);
    if (message && *message) qc_json_key_str(g, "message", message);
    yajl_gen_map_close(g);
    api_respond_json_gen(c, 200, g, NULL);
    yajl_gen_free(g);
}

/* p->to: the identifier of a leave, for a 404 without a message. */
static void member_answer(conn *c, const pending *p, int rc, const char *message)
{
    if (rc == 0) {
        member_ok(c, message);
        return;
    }
    int has_msg = message && *message;
    for (size_t i = 0; i < sizeof member_errors / sizeof member_errors[0]; i++) {
        if (member_errors[i].rc != rc) continue;
        char msg[300];
        if (!has_msg && rc == QC_ENOTFOUND && p->to)
            snprintf(msg, sizeof msg, "no such member: %.256s", p->to);
        else
            snprintf(msg, sizeof msg, "%s", member_errors[i].msg);
        api_respond_error(c, member_errors[i].http, has_msg ? message : msg, NULL);
        return;
    }
    char msg[300];
    snprintf(msg, sizeof msg, "membership change failed: %.256s",
             has_msg  ? message
             : rc < 0 ? qc_strerror(rc)
                      : "unknown status");
    api_respond_error(c, 500, msg, NULL);
}

static void member_done(void *arg, int rc, const char *message)
{
    pending *p = arg;
    if (p->fired) return; /* done() must fire once; ignore a second call */
    conn *c = api_pending_fire(p);
    if (c) member_answer(c, p, rc, message);
    api_pending_settle(p, c);
}

static void member_unavailable(conn *c)
{
    api_respond_error(c, 501, "membership is not available", NULL);
}

static int present(yajl_val v) { return v && !YAJL_IS_NULL(v); }

/* HOST:PORT or [V6]:PORT: a host of printable characters without spaces,
 * a decimal port from 1 to 65535. */
static int address_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return 0;
    size_t hl = (size_t)(colon - s);
    if (hl > JOIN_HOST_MAX + 2 || (s[0] == '[' && (hl < 3 || s[hl - 1] != ']'))) return 0;
    for (const char *h = s; h < colon; h++)
        if ((unsigned char)*h <= ' ' || (unsigned char)*h == 0x7f) return 0;
    const char *p = colon + 1;
    long port = 0;
    if (!*p || strlen(p) > 5) return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        port = port * 10 + (*p - '0');
    }
    return port >= 1 && port <= 65535;
}

/* {"join": ["HOST:PORT", ...]} or {"address": "HOST:PORT"}: the addresses
 * (pointers into body) in addrs, how many in *n. NULL, or why not (in why). */
static const char *join_addresses(yajl_val body, const char **addrs, size_t *n, char *why,
                                  size_t cap)
{
    static const char shape[] =
        "body must be {\"join\": [\"HOST:PORT\", ...]} or {\"address\": \"HOST:PORT\"}";
    yajl_val list = qc_json_get(body, "join"), one = qc_json_get(body, "address");
    *n = 0;
    if (!body || !YAJL_IS_OBJECT(body) || present(list) == present(one)) return shape;
    if (present(one)) {
        if (!YAJL_IS_STRING(one)) return shape;
        addrs[(*n)++] = one->u.string;
    } else {
        if (!YAJL_IS_ARRAY(list) || list->u.array.len == 0) return shape;
        if (list->u.array.len > JOIN_MAX) {
            snprintf(why, cap, "at most %d addresses to join through", JOIN_MAX);
            return why;
        }
        for (size_t i = 0; i < list->u.array.len; i++) {
            yajl_val a = list->u.array.values[i];
            if (!YAJL_IS_STRING(a)) return "every address must be a string \"HOST:PORT\"";
            addrs[(*n)++] = a->u.string;
        }
    }
    for (size_t i = 0; i < *n; i++) {
        if (address_ok(addrs[i])) continue;
        snprintf(why, cap, "bad address \"%.100s\": expected HOST:PORT, port 1 to 65535", addrs[i]);
        return why;
    }
    return NULL;
}

/* Hands the addresses in body to the view, or answers 400. */
static void join_call(conn *c, yajl_val body)
{
    const qc_view *v = c->api->view;
    const char *addrs[JOIN_MAX];
    size_t n;
    char why[200];
    const char *bad = join_addresses(body, addrs, &n, why, sizeof why);
    if (bad) {
        api_respond_error(c, 400, bad, NULL);
        return;
    }
    pending *p = api_pending_new(c);
    if (!p) {
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    v->join(v->ud, addrs, n, member_done, p);
    api_pending_called(p);
}

/* POST /v1/join: this node joins a running cluster through those members. */
void api_h_join(conn *c, const req *r)
{
    (void)r;
    if (!c->api->view->join) {
        member_unavailable(c);
        return;
    }
    yajl_val body;
    char why[256];
    int rc = api_body_json(c, NULL, &body, why, sizeof why);
    if (api_body_failed(c, rc, why, "body must be JSON: {\"join\": [\"HOST:PORT\", ...]}")) return;
    join_call(c, body);
    yajl_tree_free(body); /* after the call: addrs point into it */
}

/* Body: empty, or {"identifier": ID} (null: this node). *id is malloc'd or
 * NULL. 0, QC_EINVAL or QC_ENOMEM; why as body_json's. */
static int leave_target(const conn *c, char **id, char *why, size_t cap)
{
    yajl_val body;
    *id = NULL;
    int rc = api_body_json(c, NULL, &body, why, cap);
    if (rc || !body) return rc;
    yajl_val t = YAJL_IS_OBJECT(body) ? qc_json_get(body, "identifier") : NULL;
    if (!YAJL_IS_OBJECT(body) || (present(t) && (!YAJL_IS_STRING(t) || !*t->u.string)))
        rc = QC_EINVAL;
    else if (present(t) && !(*id = strdup(t->u.string)))
        rc = QC_ENOMEM;
    yajl_tree_free(body);
    return rc;
}

/* POST /v1/leave: removes a member (none named: this node). */
void api_h_leave(conn *c, const req *r)
{
    (void)r;
    const qc_view *v = c->api->view;
    if (!v->leave) {
        member_unavailable(c);
        return;
    }
    char *id, why[256];
    int rc = leave_target(c, &id, why, sizeof why);
    if (api_body_failed(c, rc, why, "body must be {\"identifier\": IDENTIFIER} or empty")) return;
    pending *p = api_pending_new(c);
    if (!p) {
        free(id);
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    p->to = id;
    v->leave(v->ud, id, member_done, p);
    api_pending_called(p);
}

/* PUT /v1/self/metadata: the body (a JSON object) becomes this node's
 * metadata, handed to the view as compact JSON text. */
void api_h_self_metadata(conn *c, const req *r)
{
    (void)r;
    static const char shape[] = "body must be a JSON object";
    const qc_view *v = c->api->view;
    if (!v->set_metadata) {
        member_unavailable(c);
        return;
    }
    yajl_val body;
    char *text = NULL, why[256];
    int rc = api_body_json(c, "metadata", &body, why, sizeof why);
    if (!rc && (!body || !YAJL_IS_OBJECT(body))) rc = QC_EINVAL;
    if (!rc) rc = qc_json_val_text(body, &text);
    yajl_tree_free(body);
    if (rc == QC_ETOOBIG) {
        api_respond_error(c, 400, "metadata nests too deep", NULL);
        return;
    }
    if (api_body_failed(c, rc, why, shape)) return;
    pending *p = api_pending_new(c);
    if (!p) {
        free(text);
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    v->set_metadata(v->ud, text, member_done, p);
    free(text);
    api_pending_called(p);
}
