/* Test-only: serves qc_api on 127.0.0.1:PORT over a fake qc_view that the
 * specs drive with signals. SIGUSR1 toggles "leader known" (and bumps the
 * term), SIGUSR2 bumps the term only, SIGHUP toggles "leader known" in the
 * same term (a node learns a term before its leader); each calls
 * qc_api_notify. SIGTERM or
 * SIGINT stops it cleanly. It holds a small in-memory KV store (see the
 * KV section for its special keys; none when QC_FAKE_NO_KV is set) and
 * answers membership requests (see that section; none when
 * QC_FAKE_NO_MEMBERS is set). The API's limits can be made small for the
 * specs: QC_FAKE_API_MAX_CONNS, QC_FAKE_API_MAX_PER_CLIENT,
 * QC_FAKE_API_MAX_LONGPOLLS, QC_FAKE_API_TOKEN_SPARE, QC_FAKE_API_IDLE_S,
 * QC_FAKE_API_REQUEST_S, QC_FAKE_API_HEADER_S (see qc_api_set_limits).
 * QC_FAKE_API_TLS_CERT and QC_FAKE_API_TLS_KEY (PEM files) make it serve
 * HTTPS, QC_FAKE_API_TLS_CLIENT_CA too with client certificates.
 * Usage: api_fake PORT [TOKEN]. Never linked into the agent. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/common.h"
#include "base/metrics.h"
#include "core/view.h"

/* A key of the fake store; the store is an array kept in bytewise order. */
typedef struct kv_ent {
    uint8_t *key, *value;
    size_t klen, vlen;
    uint64_t revision;
} kv_ent;

/* A write of a "slow..." key, applied when kv_later fires. */
typedef struct kv_op {
    int del;
    uint8_t *key, *value;
    size_t klen, vlen;
    int64_t cas;
    qc_kv_done_fn *done;
    void *arg;
    struct kv_op *next;
} kv_op;

typedef struct fake {
    struct ev_loop *loop;
    qc_api *api;
    qc_metrics *metrics;
    int leader_known;
    uint64_t term;
    ev_timer later; /* an asynchronous transfer completes on it */
    qc_transfer_done_fn *pending_done;
    void *pending_arg;
    kv_ent *kv;
    size_t nkv, kv_cap;
    uint64_t revision; /* of the last change */
    ev_timer kv_later; /* slow writes complete on it */
    kv_op *slow, **slow_tail;
    char *self_meta;       /* set through set_metadata; NULL: members[0]'s */
    ev_timer member_later; /* slow membership requests complete on it */
    struct member_op *mslow, **mslow_tail;
} fake;

/* server_a (self) and server_b are healthy, server_c is down and so
 * of unknown health (not healthy), with the checks it last told. */
static const qc_peer_check a_checks[] = {{"web", 1}, {"disk.free", 1}};
static const qc_peer_check c_checks[] = {{"web", 0}};
static const qc_peer_info members[] = {
    {"server_a", "localhost", 7001, "{}", "follower", 1, 1, 1, 1, 1, a_checks, 2},
    {"server_b", "localhost", 7002, "{\"server_port\":8002,\"tags\":[\"a\",\"b\"]}", "leader", 1, 1,
     0, 2, 1, NULL, 0},
    {"server_c", "localhost", 7003, "not json", "follower", 0, 1, 0, 0, 0, c_checks, 1},
};

static int f_is_leader(void *ud)
{
    (void)ud;
    return 0;
}

static uint64_t f_term(void *ud) { return ((fake *)ud)->term; }

static const char *f_role(void *ud)
{
    (void)ud;
    return "follower";
}

static uint64_t f_commit(void *ud)
{
    (void)ud;
    return 42;
}

static int f_leader(void *ud, qc_peer_info *out)
{
    if (!((fake *)ud)->leader_known) return QC_ENOLEADER;
    *out = members[1];
    return 0;
}

static void f_self(void *ud, qc_peer_info *out)
{
    fake *f = ud;
    *out = members[0];
    if (f->self_meta) out->metadata = f->self_meta;
}

static size_t f_peers(void *ud, qc_peer_info *out, size_t max)
{
    fake *f = ud;
    for (size_t i = 0; i < 2 && i < max; i++) {
        out[i] = members[i + 1];
        if (!f->leader_known) out[i].role = "follower";
    }
    return 2;
}

static void later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    fake *f = w->data;
    qc_transfer_done_fn *done = f->pending_done;
    f->pending_done = NULL;
    if (done) done(f->pending_arg, 0);
}

/* server_b: done at once; none given: done 200 ms later; server_c: 409;
 * "slow": 409 after 1 s; anything else: no such peer. */
static void f_transfer(void *ud, const char *to, qc_transfer_done_fn *done, void *arg)
{
    fake *f = ud;
    if (to && strcmp(to, "server_b") == 0) {
        done(arg, 0);
    } else if (!to || strcmp(to, "slow") == 0) {
        if (f->pending_done) {
            done(arg, QC_EBUSY);
            return;
        }
        f->pending_done = done;
        f->pending_arg = arg;
        ev_timer_set(&f->later, to ? 1.0 : 0.2, 0.);
        ev_timer_start(f->loop, &f->later);
    } else if (strcmp(to, "server_c") == 0) {
        done(arg, QC_EBUSY);
    } else {
        done(arg, QC_ENOTFOUND);
    }
}

/* ---------- KV ----------
 * Keys starting with "slow" are written 0.5 s later; "down" answers
 * QC_ENOLEADER (reads only when not stale); "readonly" writes answer QC_EIO,
 * "timeout" QC_EBUSY, "broken" QC_ECORRUPT. Limits: kv.h's defaults. */

#define SLOW_S 0.5

static int has_prefix(const uint8_t *key, size_t klen, const char *p)
{
    size_t n = strlen(p);
    return klen >= n && memcmp(key, p, n) == 0;
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int r = memcmp(a, b, al < bl ? al : bl);
    if (r) return r;
    return al < bl ? -1 : al > bl;
}

/* The index of key, or where it would go (*found 0). */
static size_t kv_find(const fake *f, const uint8_t *key, size_t klen, int *found)
{
    size_t lo = 0, hi = f->nkv;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = key_cmp(f->kv[mid].key, f->kv[mid].klen, key, klen);
        if (r == 0) {
            *found = 1;
            return mid;
        }
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

/* Writes errors special keys answer, or QC_KV_OK. */
static int kv_special(const uint8_t *key, size_t klen)
{
    if (has_prefix(key, klen, "down")) return QC_ENOLEADER;
    if (has_prefix(key, klen, "readonly")) return QC_EIO;
    if (has_prefix(key, klen, "timeout")) return QC_EBUSY;
    if (has_prefix(key, klen, "broken")) return QC_ECORRUPT;
    return QC_KV_OK;
}

static int kv_insert(fake *f, size_t at, uint8_t *key, size_t klen)
{
    if (f->nkv == f->kv_cap) {
        size_t cap = f->kv_cap ? f->kv_cap * 2 : 16;
        kv_ent *n = realloc(f->kv, cap * sizeof *n);
        if (!n) return QC_ENOMEM;
        f->kv = n;
        f->kv_cap = cap;
    }
    memmove(&f->kv[at + 1], &f->kv[at], (f->nkv - at) * sizeof *f->kv);
    f->kv[at] = (kv_ent){.key = key, .klen = klen};
    f->nkv++;
    return QC_OK;
}

static qc_kv_answer kv_do_put(fake *f, const uint8_t *key, size_t klen, const uint8_t *value,
                              size_t vlen, int64_t cas)
{
    qc_kv_answer a = {.status = kv_special(key, klen)};
    if (a.status) return a;
    if (klen > QC_KV_MAX_KEY_DEFAULT || vlen > QC_KV_MAX_VALUE_DEFAULT) {
        a.status = QC_KV_TOOBIG;
        return a;
    }
    int found;
    size_t i = kv_find(f, key, klen, &found);
    uint64_t cur = found ? f->kv[i].revision : 0;
    if (cas != QC_KV_CAS_NONE && (uint64_t)cas != cur) {
        a.status = QC_KV_CONFLICT;
        a.revision = cur;
        return a;
    }
    uint8_t *v = dup_bytes(value, vlen), *k = found ? NULL : dup_bytes(key, klen);
    if (!v || (!found && (!k || kv_insert(f, i, k, klen) != 0))) {
        free(v);
        free(k);
        a.status = QC_ENOMEM;
        return a;
    }
    free(f->kv[i].value);
    f->kv[i].value = v;
    f->kv[i].vlen = vlen;
    f->kv[i].revision = a.revision = ++f->revision;
    return a;
}

static qc_kv_answer kv_do_delete(fake *f, const uint8_t *key, size_t klen, int64_t cas)
{
    qc_kv_answer a = {.status = kv_special(key, klen)};
    if (a.status) return a;
    int found;
    size_t i = kv_find(f, key, klen, &found);
    if (!found) {
        a.status = QC_KV_NOTFOUND;
        return a;
    }
    if (cas != QC_KV_CAS_NONE && (uint64_t)cas != f->kv[i].revision) {
        a.status = QC_KV_CONFLICT;
        a.revision = f->kv[i].revision;
        return a;
    }
    free(f->kv[i].key);
    free(f->kv[i].value);
    memmove(&f->kv[i], &f->kv[i + 1], (f->nkv - i - 1) * sizeof *f->kv);
    f->nkv--;
    a.revision = ++f->revision;
    return a;
}

/* Queues a slow write; 0, or QC_ENOMEM (then the caller answers at once). */
static int kv_defer(fake *f, int del, const uint8_t *key, size_t klen, const uint8_t *value,
                    size_t vlen, int64_t cas, qc_kv_done_fn *done, void *arg)
{
    kv_op *op = calloc(1, sizeof *op);
    if (!op) return QC_ENOMEM;
    op->key = dup_bytes(key, klen);
    op->value = del ? NULL : dup_bytes(value, vlen);
    if (!op->key || (!del && !op->value)) {
        free(op->key);
        free(op->value);
        free(op);
        return QC_ENOMEM;
    }
    op->del = del;
    op->klen = klen;
    op->vlen = vlen;
    op->cas = cas;
    op->done = done;
    op->arg = arg;
    *f->slow_tail = op;
    f->slow_tail = &op->next;
    if (!ev_is_active(&f->kv_later)) {
        ev_timer_set(&f->kv_later, SLOW_S, 0.);
        ev_timer_start(f->loop, &f->kv_later);
    }
    return QC_OK;
}

/* Answers every queued slow write: applied now, or status when it is set. */
static void kv_flush(fake *f, int status)
{
    kv_op *op = f->slow;
    f->slow = NULL;
    f->slow_tail = &f->slow;
    while (op) {
        kv_op *next = op->next;
        qc_kv_answer a = {.status = status};
        if (!status && op->del)
            a = kv_do_delete(f, op->key, op->klen, op->cas);
        else if (!status)
            a = kv_do_put(f, op->key, op->klen, op->value, op->vlen, op->cas);
        op->done(op->arg, &a);
        free(op->key);
        free(op->value);
        free(op);
        op = next;
    }
}

static void kv_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kv_flush(w->data, QC_KV_OK);
}

static void f_kv_put(void *ud, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                     int64_t cas, qc_kv_done_fn *done, void *arg)
{
    fake *f = ud;
    if (has_prefix(key, klen, "slow") &&
        kv_defer(f, 0, key, klen, value, vlen, cas, done, arg) == QC_OK)
        return;
    qc_kv_answer a = kv_do_put(f, key, klen, value, vlen, cas);
    done(arg, &a);
}

static void f_kv_delete(void *ud, const uint8_t *key, size_t klen, int64_t cas, qc_kv_done_fn *done,
                        void *arg)
{
    fake *f = ud;
    if (has_prefix(key, klen, "slow") &&
        kv_defer(f, 1, key, klen, NULL, 0, cas, done, arg) == QC_OK)
        return;
    qc_kv_answer a = kv_do_delete(f, key, klen, cas);
    done(arg, &a);
}

static void f_kv_get(void *ud, const uint8_t *key, size_t klen, int stale, qc_kv_done_fn *done,
                     void *arg)
{
    fake *f = ud;
    qc_kv_answer a = {.status = QC_KV_NOTFOUND};
    int found;
    size_t i = kv_find(f, key, klen, &found);
    if (!stale && has_prefix(key, klen, "down")) {
        a.status = QC_ENOLEADER;
    } else if (found) {
        a = (qc_kv_answer){QC_KV_OK, f->kv[i].revision, f->kv[i].value, f->kv[i].vlen};
    }
    done(arg, &a);
}

static void f_kv_list(void *ud, const uint8_t *prefix, size_t plen, int stale, qc_kv_each_fn *each,
                      qc_kv_done_fn *done, void *arg)
{
    fake *f = ud;
    qc_kv_answer a = {.status = QC_KV_OK};
    if (!stale && has_prefix(prefix, plen, "down")) {
        a.status = QC_ENOLEADER;
        done(arg, &a);
        return;
    }
    int found;
    for (size_t i = kv_find(f, prefix, plen, &found); i < f->nkv; i++) {
        const kv_ent *e = &f->kv[i];
        if (e->klen < plen || memcmp(e->key, prefix, plen) != 0) break;
        if (each(arg, e->key, e->klen, e->value, e->vlen, e->revision)) break;
    }
    done(arg, &a);
}

static void kv_free_all(fake *f)
{
    for (size_t i = 0; i < f->nkv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].value);
    }
    free(f->kv);
}

/* ---------- membership ----------
 * join looks at its first address: "refuse:..." is refused (QC_EINVAL,
 * with a message), "noleader:..." QC_ENOLEADER, "timeout:..." QC_EBUSY,
 * "missing:..." QC_ENOTFOUND, "broken:..." QC_EIO, "slow:..." joins 0.3 s
 * later; anything else joins at once, the message naming every address.
 * leave: none given (this node) or "server_c" is done at once; "ghost" and
 * any unknown name QC_ENOTFOUND without a message (the API names it);
 * "refuse", "noleader", "timeout", "broken" as for join; "slow" is done
 * 0.3 s later. set_metadata replaces self's metadata (so GET /v1/members
 * shows it): an object with a "refuse" key is refused, one with a "slow"
 * key is applied 0.3 s later. */

#define MEMBER_SLOW_S 0.3

typedef struct member_op {
    qc_member_done_fn *done;
    void *arg;
    char *metadata; /* set_metadata: applied when it completes */
    struct member_op *next;
} member_op;

static int member_special(const char *s, int *rc, const char **msg)
{
    static const struct {
        const char *prefix;
        int rc;
        const char *msg;
    } specials[] = {
        {"refuse", QC_EINVAL, "identifier server_a is already in use"},
        {"noleader", QC_ENOLEADER, NULL},
        {"timeout", QC_EBUSY, "timed out waiting for the change to commit"},
        {"missing", QC_ENOTFOUND, NULL},
        {"broken", QC_EIO, "the log cannot be written"},
    };
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        if (s && strncmp(s, specials[i].prefix, strlen(specials[i].prefix)) == 0) {
            *rc = specials[i].rc;
            *msg = specials[i].msg;
            return 1;
        }
    return 0;
}

/* Queues done for MEMBER_SLOW_S later; 0, or QC_ENOMEM. metadata (may be
 * NULL) is copied and becomes self's metadata then. */
static int member_defer(fake *f, const char *metadata, qc_member_done_fn *done, void *arg)
{
    member_op *op = calloc(1, sizeof *op);
    if (!op || (metadata && !(op->metadata = strdup(metadata)))) {
        free(op);
        return QC_ENOMEM;
    }
    op->done = done;
    op->arg = arg;
    *f->mslow_tail = op;
    f->mslow_tail = &op->next;
    if (!ev_is_active(&f->member_later)) {
        ev_timer_set(&f->member_later, MEMBER_SLOW_S, 0.);
        ev_timer_start(f->loop, &f->member_later);
    }
    return QC_OK;
}

/* Takes over metadata (malloc'd) as self's. */
static void set_self_meta(fake *f, char *metadata)
{
    free(f->self_meta);
    f->self_meta = metadata;
}

/* Completes every queued request: done, or rc when it is set. */
static void member_flush(fake *f, int rc)
{
    member_op *op = f->mslow;
    f->mslow = NULL;
    f->mslow_tail = &f->mslow;
    while (op) {
        member_op *next = op->next;
        if (!rc && op->metadata) {
            set_self_meta(f, op->metadata);
            op->metadata = NULL;
        }
        op->done(op->arg, rc, rc ? "the agent stopped" : NULL);
        free(op->metadata);
        free(op);
        op = next;
    }
}

static void member_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    member_flush(w->data, 0);
}

static void f_join(void *ud, const char *const *addresses, size_t n, qc_member_done_fn *done,
                   void *arg)
{
    fake *f = ud;
    int rc;
    const char *msg;
    if (n > 0 && member_special(addresses[0], &rc, &msg)) {
        done(arg, rc, msg);
        return;
    }
    if (n > 0 && strncmp(addresses[0], "slow:", 5) == 0 &&
        member_defer(f, NULL, done, arg) == QC_OK)
        return;
    char text[1024] = "joined through ";
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(text);
        snprintf(text + used, sizeof text - used, "%s%s", i ? ", " : "", addresses[i]);
    }
    done(arg, 0, text);
}

static void f_leave(void *ud, const char *identifier, qc_member_done_fn *done, void *arg)
{
    fake *f = ud;
    int rc;
    const char *msg;
    if (!identifier || strcmp(identifier, "server_c") == 0) {
        done(arg, 0, NULL);
    } else if (strcmp(identifier, "slow") == 0 && member_defer(f, NULL, done, arg) == QC_OK) {
        return;
    } else if (strcmp(identifier, "missing") != 0 && member_special(identifier, &rc, &msg)) {
        done(arg, rc, rc == QC_EINVAL ? "server_a is the last voter" : msg);
    } else {
        done(arg, QC_ENOTFOUND, NULL);
    }
}

static void f_set_metadata(void *ud, const char *json, qc_member_done_fn *done, void *arg)
{
    fake *f = ud;
    if (strstr(json, "\"refuse\"")) {
        done(arg, QC_EINVAL, "metadata refused by the fake");
        return;
    }
    if (strstr(json, "\"slow\"") && member_defer(f, json, done, arg) == QC_OK) return;
    char *copy = strdup(json);
    if (!copy) {
        done(arg, QC_ENOMEM, NULL);
        return;
    }
    set_self_meta(f, copy);
    done(arg, 0, NULL);
}

static void f_refresh(void *ud)
{
    fake *f = ud;
    qc_metrics_set(f->metrics, "qcluster_term", NULL, NULL, (double)f->term);
    qc_metrics_set(f->metrics, "qcluster_is_leader", NULL, NULL, 0);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    fake *f = w->data;
    if (w->signum == SIGUSR1) {
        f->leader_known = !f->leader_known;
        f->term++;
        qc_api_notify(f->api);
    } else if (w->signum == SIGUSR2) {
        f->term++;
        qc_api_notify(f->api);
    } else if (w->signum == SIGHUP) {
        f->leader_known = !f->leader_known;
        qc_api_notify(f->api);
    } else {
        ev_break(loop, EVBREAK_ALL);
    }
}

/* A positive number from the environment, or 0 (keep the default). */
static double env_number(const char *name)
{
    const char *v = getenv(name);
    char *end;
    double d = v ? strtod(v, &end) : 0;
    return v && *v && !*end && d > 0 ? d : 0;
}

/* HTTPS when QC_FAKE_API_TLS_CERT and _KEY name PEM files. */
static int use_tls(qc_api *api)
{
    const char *cert = getenv("QC_FAKE_API_TLS_CERT"), *key = getenv("QC_FAKE_API_TLS_KEY");
    if (!cert || !key) return QC_OK;
    qc_tls *t;
    char err[512];
    int rc = qc_tls_server_new(cert, key, getenv("QC_FAKE_API_TLS_CLIENT_CA"), &t, err, sizeof err);
    if (rc != QC_OK) {
        fprintf(stderr, "api_fake: %s\n", err);
        return rc;
    }
    qc_api_set_tls(api, t);
    return QC_OK;
}

static void fill_metrics(qc_metrics *m)
{
    qc_metrics_declare(m, "qcluster_term", QC_METRIC_GAUGE, "Current term.");
    qc_metrics_declare(m, "qcluster_is_leader", QC_METRIC_GAUGE, "1 when leading.");
    qc_metrics_declare(m, "qcluster_peer_up", QC_METRIC_GAUGE, "1 when the peer is up.");
    qc_metrics_set(m, "qcluster_peer_up", "peer", "server_b", 1);
    qc_metrics_set(m, "qcluster_peer_up", "peer", "we\"ird\\name\n", 0);
    qc_metrics_declare(m, "qcluster_hook_duration_seconds", QC_METRIC_HISTOGRAM,
                       "Time spent in hooks.");
    qc_metrics_observe(m, "qcluster_hook_duration_seconds", 0.0003);
    qc_metrics_observe(m, "qcluster_hook_duration_seconds", 0.02);
    qc_metrics_observe(m, "qcluster_hook_duration_seconds", 20);
    qc_metrics_add(m, "qcluster_elections_total", NULL, NULL, 3);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: api_fake PORT [TOKEN]\n");
        return 2;
    }
    static fake f;
    f.loop = ev_default_loop(0);
    f.term = 1;
    f.metrics = qc_metrics_new();
    if (!f.metrics) return 1;
    fill_metrics(f.metrics);
    ev_timer_init(&f.later, later_cb, 0., 0.);
    f.later.data = &f;
    ev_timer_init(&f.kv_later, kv_later_cb, 0., 0.);
    f.kv_later.data = &f;
    f.slow_tail = &f.slow;
    ev_timer_init(&f.member_later, member_later_cb, 0., 0.);
    f.member_later.data = &f;
    f.mslow_tail = &f.mslow;
    qc_view view = {.ud = &f,
                    .is_leader = f_is_leader,
                    .term = f_term,
                    .role = f_role,
                    .commit_index = f_commit,
                    .leader = f_leader,
                    .self = f_self,
                    .peers = f_peers,
                    .transfer = f_transfer,
                    .refresh_metrics = f_refresh,
                    .join = f_join,
                    .leave = f_leave,
                    .set_metadata = f_set_metadata,
                    .kv_put = f_kv_put,
                    .kv_delete = f_kv_delete,
                    .kv_get = f_kv_get,
                    .kv_list = f_kv_list};
    if (getenv("QC_FAKE_NO_KV")) { /* an agent without the store: 501 */
        view.kv_put = NULL;
        view.kv_delete = NULL;
        view.kv_get = NULL;
        view.kv_list = NULL;
    }
    if (getenv("QC_FAKE_NO_MEMBERS")) { /* an agent without membership: 501 */
        view.join = NULL;
        view.leave = NULL;
        view.set_metadata = NULL;
    }
    int rc = qc_api_new(f.loop, "127.0.0.1", atoi(argv[1]), &view, f.metrics,
                        argc > 2 ? argv[2] : NULL, &f.api);
    if (rc) {
        fprintf(stderr, "api_fake: %s\n", qc_strerror(rc));
        qc_metrics_free(f.metrics);
        return 1;
    }
    qc_api_limits limits = {.max_conns = (int)env_number("QC_FAKE_API_MAX_CONNS"),
                            .max_conns_per_client = (int)env_number("QC_FAKE_API_MAX_PER_CLIENT"),
                            .max_longpolls = (int)env_number("QC_FAKE_API_MAX_LONGPOLLS"),
                            .token_spare = (int)env_number("QC_FAKE_API_TOKEN_SPARE"),
                            .idle_timeout_s = env_number("QC_FAKE_API_IDLE_S"),
                            .request_timeout_s = env_number("QC_FAKE_API_REQUEST_S"),
                            .header_timeout_s = env_number("QC_FAKE_API_HEADER_S")};
    qc_api_set_limits(f.api, &limits);
    if (use_tls(f.api) != QC_OK) {
        qc_api_free(f.api);
        qc_metrics_free(f.metrics);
        return 1;
    }
    int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP, SIGTERM, SIGINT};
    ev_signal sw[5];
    for (int i = 0; i < 5; i++) {
        ev_signal_init(&sw[i], on_signal, sigs[i]);
        sw[i].data = &f;
        ev_signal_start(f.loop, &sw[i]);
    }
    ev_run(f.loop, 0);
    qc_api_free(f.api);
    if (f.pending_done) f.pending_done(f.pending_arg, QC_EIO); /* done() exactly once */
    kv_flush(&f, QC_EIO);
    member_flush(&f, QC_EIO);
    ev_timer_stop(f.loop, &f.member_later);
    free(f.self_meta);
    ev_timer_stop(f.loop, &f.later);
    ev_timer_stop(f.loop, &f.kv_later);
    kv_free_all(&f);
    qc_metrics_free(f.metrics);
    ev_loop_destroy(f.loop);
    return 0;
}
