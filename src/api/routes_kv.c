/* The key-value store's routes, /v1/kv: GET, PUT and DELETE of a key and
 * the listing, each answered when the view's callback fires (struct
 * pending). KEY (the path after /v1/kv/) and ?prefix= are percent-decoded,
 * so any byte is reachable (%00, %FF); "+" is a plain "+". Values travel
 * raw. It reaches the server only through api_int.h. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "api/api_int.h"
#include "base/common.h"
#include "base/json.h"

enum { KV_GET, KV_PUT, KV_DELETE, KV_LIST };

/* How a KV answer that is not QC_KV_OK becomes HTTP. */
static const struct {
    int status, http;
    const char *msg;
} kv_errors[] = {
    {QC_KV_NOTFOUND, 404, "key not found"},
    {QC_KV_TOOBIG, 413, "key or value too large"},
    {QC_ETOOBIG, 413, "key or value too large"},
    {QC_KV_INVALID, 400, "invalid key-value request"},
    {QC_EINVAL, 400, "invalid key-value request"},
    {QC_ENOLEADER, 503, "no leader"},
    {QC_ENOTLEADER, 503, "not the leader: send it to the leader (GET /v1/leader)"},
    {QC_EIO, 503, "this node cannot write"},
    {QC_EBUSY, 504, "timed out"},
};

/* 409 carries the key's current revision (0: absent) for the next cas. */
static void kv_conflict(conn *c, uint64_t revision)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        api_conn_close(c);
        return;
    }
    yajl_gen_map_open(g);
    qc_json_key_str(g, "error", "revision mismatch");
    qc_json_key_int(g, "revision", (long long)revision);
    yajl_gen_map_close(g);
    api_respond_json_gen(c, 409, g, NULL);
    yajl_gen_free(g);
}

static void kv_error(conn *c, const qc_kv_answer *ans)
{
    if (ans->status == QC_KV_CONFLICT) {
        kv_conflict(c, ans->revision);
        return;
    }
    for (size_t i = 0; i < sizeof kv_errors / sizeof kv_errors[0]; i++)
        if (kv_errors[i].status == ans->status) {
            api_respond_error(c, kv_errors[i].http, kv_errors[i].msg, NULL);
            return;
        }
    char msg[128];
    snprintf(msg, sizeof msg, "key-value request failed: %s",
             ans->status < 0 ? qc_strerror(ans->status) : "unknown status");
    api_respond_error(c, 500, msg, NULL);
}

/* Every write's answer: printed as yajl would, without a generator's two
 * allocations per answer. */
static void kv_revision(conn *c, uint64_t revision)
{
    char body[40];
    int n = snprintf(body, sizeof body, "{\"revision\":%llu}", (unsigned long long)revision);
    api_respond(c, 200, "application/json", body, (size_t)n, NULL);
}

static void kv_answer(conn *c, pending *p, const qc_kv_answer *ans)
{
    if (ans->status != QC_KV_OK) {
        kv_error(c, ans);
        return;
    }
    if (p->op == KV_GET) {
        char rev[64];
        snprintf(rev, sizeof rev, "X-QCluster-Revision: %llu\r\n",
                 (unsigned long long)ans->revision);
        const char *v = ans->value ? (const char *)ans->value : "";
        api_respond(c, 200, "application/octet-stream", v, ans->value ? ans->vlen : 0, rev);
    } else if (p->op == KV_LIST) {
        if (p->list_error || yajl_gen_array_close(p->list) != yajl_gen_status_ok)
            api_respond_error(c, 500, "out of memory", NULL);
        else
            api_respond_json_gen(c, 200, p->list, NULL);
    } else {
        kv_revision(c, ans->revision);
    }
}

static void kv_done(void *arg, const qc_kv_answer *ans)
{
    pending *p = arg;
    if (p->fired) return; /* done() must fire once; ignore a second call */
    conn *c = api_pending_fire(p);
    if (c) kv_answer(c, p, ans);
    api_pending_settle(p, c);
}

static int kv_each(void *arg, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                   uint64_t revision)
{
    pending *p = arg;
    if (!p->c || p->fired || p->list_error) return 1; /* nobody to tell: stop */
    if (qc_json_kv(p->list, key, klen, value, vlen, revision) != 0) p->list_error = 1;
    return p->list_error;
}

/* ?cas=N: 0 and *cas (QC_KV_CAS_NONE when absent), or -1 when malformed. */
static int kv_cas(const req *r, int64_t *cas)
{
    const char *v;
    size_t vl;
    char text[24];
    uint64_t n;
    *cas = QC_KV_CAS_NONE;
    if (!api_query_find(r, "cas", &v, &vl)) return 0;
    if (vl == 0 || vl >= sizeof text) return -1;
    memcpy(text, v, vl);
    text[vl] = '\0';
    if (api_parse_u64(text, &n) != 0 || n > INT64_MAX) return -1;
    *cas = (int64_t)n;
    return 0;
}

static int kv_stale(const req *r)
{
    const char *v;
    size_t vl;
    return api_query_find(r, "stale", &v, &vl);
}

static void kv_unavailable(conn *c)
{
    api_respond_error(c, 501, "the key-value store is not available on this node", NULL);
}

static void kv_list(conn *c, const req *r)
{
    const qc_view *v = c->api->view;
    if (!v->kv_list) {
        kv_unavailable(c);
        return;
    }
    const char *raw = "";
    size_t rl = 0, plen = 0;
    uint8_t prefix[URL_MAX];
    api_query_find(r, "prefix", &raw, &rl);
    if (api_pct_decode(raw, rl, prefix, &plen) != 0) {
        api_respond_error(c, 400, "bad percent-encoding in the prefix", NULL);
        return;
    }
    yajl_gen g = yajl_gen_alloc(NULL);
    pending *p = g ? api_pending_new(c) : NULL;
    if (!p) {
        if (g) yajl_gen_free(g);
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    p->op = KV_LIST;
    p->list = g;
    yajl_gen_array_open(g);
    v->kv_list(v->ud, prefix, plen, kv_stale(r), kv_each, kv_done, p);
    api_pending_called(p);
}

static void kv_call(conn *c, const req *r, const uint8_t *key, size_t klen)
{
    const qc_view *v = c->api->view;
    int op = c->method == HTTP_GET ? KV_GET : c->method == HTTP_PUT ? KV_PUT : KV_DELETE;
    if ((op == KV_GET && !v->kv_get) || (op == KV_PUT && !v->kv_put) ||
        (op == KV_DELETE && !v->kv_delete)) {
        kv_unavailable(c);
        return;
    }
    int64_t cas = QC_KV_CAS_NONE;
    if (op != KV_GET && kv_cas(r, &cas) != 0) {
        api_respond_error(c, 400, "cas must be a non-negative integer", NULL);
        return;
    }
    pending *p = api_pending_new(c);
    if (!p) {
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    p->op = op;
    const uint8_t *body = (const uint8_t *)c->body;
    if (op == KV_GET)
        v->kv_get(v->ud, key, klen, kv_stale(r), kv_done, p);
    else if (op == KV_PUT)
        v->kv_put(v->ud, key, klen, c->body_len ? body : (const uint8_t *)"", c->body_len, cas,
                  kv_done, p);
    else
        v->kv_delete(v->ud, key, klen, cas, kv_done, p);
    api_pending_called(p);
}

/* /v1/kv/KEY (GET, PUT, DELETE); /v1/kv and /v1/kv/ (GET: the listing). */
void api_h_kv(conn *c, const req *r)
{
    static const char base[] = "/v1/kv";
    const char *k = r->path + sizeof base - 1;
    size_t kn = r->path_len - (sizeof base - 1), klen;
    if (kn > 0) k++, kn--; /* the "/" */
    uint8_t key[URL_MAX];
    if (api_pct_decode(k, kn, key, &klen) != 0) {
        api_respond_error(c, 400, "bad percent-encoding in the key", NULL);
        return;
    }
    if (klen > 0)
        kv_call(c, r, key, klen);
    else if (c->method == HTTP_GET)
        kv_list(c, r);
    else
        api_respond_error(c, 400, "empty key", NULL);
}
