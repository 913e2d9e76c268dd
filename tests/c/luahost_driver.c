/* Test driver for the config loader and the Lua host, run by the busted
 * specs: `check CONFIG` prints the resolved config as JSON (exit 0) or the
 * error (exit 2); `hooks CONFIG EVENT...` fires hooks against a fake view,
 * runs the loop until nothing is left and prints the hook counters. Special
 * events: reload, drain, run (the loop), wait:MS (the loop for MS), stop
 * (free the host right away), and for the fake KV: nokv (the view has no KV
 * functions from then on), kvlate (reads answer later, not during the call),
 * `kvchange KEY VALUE REV` and `kvdelete KEY REV` (fire on_kv_change as the
 * agent would). The fake KV applies writes one at a time from a timer,
 * fires on_kv_change for each applied one, then answers; the key "nope"
 * answers QC_ENOLEADER at once. Writes still in flight when the host is
 * freed are answered after it.
 * Membership: the fake's self has priority 1, its i-th peer priority i + 2.
 * set_metadata commits from a timer (self() then shows the new metadata)
 * and answers; events nomember (the view has no set_metadata), metafail
 * (later answers fail: QC_ENOLEADER, "no leader to commit it"), metanow
 * (answers QC_EINVAL, no message, before the call returns), metaok (back to
 * success), and `memberjoin|memberleave ID HOST PORT METADATA` (fire
 * on_member_join, a learner that is up, or on_member_leave, a voter that is
 * down, with that Peer). Test-only: never linked into the agent. */
#include <ev.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "base/log.h"
#include "base/metrics.h"
#include "lua/config.h"
#include "lua/luahost.h"
#include "lua/luajson.h"
#include "lua_fields.h"

/* ---- a fake view: this node leads, every peer is up ------------------- */

typedef struct fkv_entry {
    uint8_t *key, *value;
    size_t klen, vlen;
    uint64_t revision;
} fkv_entry;

enum { FKV_PUT, FKV_DELETE, FKV_GET, FKV_LIST };

/* A request the fake KV answers later, in arrival order. */
typedef struct fkv_op {
    struct fkv_op *next;
    int kind;
    uint8_t *key, *value;
    size_t klen, vlen;
    int64_t cas;
    qc_kv_done_fn *done;
    void *arg;
} fkv_op;

/* A set_metadata the fake commits later. */
typedef struct fmeta_op {
    struct fmeta_op *next;
    char *json;
    qc_member_done_fn *done;
    void *arg;
} fmeta_op;

enum { FMETA_OK, FMETA_FAIL, FMETA_NOW };

typedef struct fake {
    const qc_config *cfg;
    qc_lua *h; /* NULL once freed */
    struct ev_loop *loop;
    fkv_entry *kv;
    size_t n, cap;
    uint64_t revision;
    fkv_op *ops, **ops_tail;
    ev_timer apply;
    int late_reads;
    char *meta; /* self's metadata once set_metadata committed, else NULL */
    int meta_mode;
    fmeta_op *metas, **metas_tail;
    ev_timer meta_timer;
} fake;

static void self_info(const qc_config *c, qc_peer_info *p)
{
    memset(p, 0, sizeof *p);
    p->identifier = c->identifier;
    p->host = c->listen_host;
    p->port = c->listen_port;
    p->metadata = c->metadata;
    p->role = "leader";
    p->up = p->voter = p->is_self = 1;
    p->priority = 1;
}

static void peer_info(const qc_config *c, size_t i, qc_peer_info *p)
{
    memset(p, 0, sizeof *p);
    p->identifier = c->peers[i].identifier;
    p->host = c->peers[i].host;
    p->port = c->peers[i].port;
    p->metadata = c->peers[i].metadata;
    p->role = "follower";
    p->up = p->voter = 1;
    p->priority = (int)i + 2;
}

/* self_info, with the metadata set_metadata committed. */
static void fake_self(const fake *f, qc_peer_info *p)
{
    static const qc_config none = {.identifier = "", .listen_host = "", .metadata = "{}"};
    self_info(f->cfg ? f->cfg : &none, p);
    if (f->meta) p->metadata = f->meta;
}

static int v_is_leader(void *ud) { return ((fake *)ud)->cfg != NULL; }
static uint64_t v_term(void *ud) { return ((fake *)ud)->cfg ? 7 : 0; }
static const char *v_role(void *ud) { return ((fake *)ud)->cfg ? "leader" : "follower"; }
static uint64_t v_commit(void *ud) { return ((fake *)ud)->cfg ? 1 : 0; }
static int v_leader(void *ud, qc_peer_info *out)
{
    fake *f = ud;
    if (!f->cfg) return QC_ENOLEADER;
    fake_self(f, out);
    return 0;
}
static void v_self(void *ud, qc_peer_info *out) { fake_self(ud, out); }
static size_t v_peers(void *ud, qc_peer_info *out, size_t max)
{
    fake *f = ud;
    size_t n = f->cfg ? f->cfg->n_peers : 0;
    for (size_t i = 0; i < n && i < max; i++) peer_info(f->cfg, i, &out[i]);
    return n;
}

/* ---- the fake KV -------------------------------------------------------- */

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (!d) abort(); /* test driver */
    if (n) memcpy(d, p, n);
    return d;
}

static int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

static fkv_entry *fkv_find(fake *f, const uint8_t *key, size_t klen)
{
    for (size_t i = 0; i < f->n; i++)
        if (bytes_cmp(f->kv[i].key, f->kv[i].klen, key, klen) == 0) return &f->kv[i];
    return NULL;
}

static int entry_cmp(const void *a, const void *b)
{
    const fkv_entry *x = a, *y = b;
    return bytes_cmp(x->key, x->klen, y->key, y->klen);
}

static void fkv_answer_read(fake *f, const fkv_op *op, qc_kv_each_fn *each)
{
    qc_kv_answer a = {.status = QC_KV_NOTFOUND};
    if (op->kind == FKV_LIST) {
        qsort(f->kv, f->n, sizeof *f->kv, entry_cmp);
        for (size_t i = 0; i < f->n; i++) {
            const fkv_entry *e = &f->kv[i];
            if (e->klen >= op->klen && memcmp(e->key, op->key, op->klen) == 0 && each &&
                each(op->arg, e->key, e->klen, e->value, e->vlen, e->revision))
                break;
        }
        a.status = QC_KV_OK;
    } else {
        const fkv_entry *e = fkv_find(f, op->key, op->klen);
        if (e) a = (qc_kv_answer){QC_KV_OK, e->revision, e->value, e->vlen};
    }
    op->done(op->arg, &a);
}

/* Applies one write, fires on_kv_change for it as the agent does, then
 * answers it. */
static void fkv_apply(fake *f, const fkv_op *op)
{
    fkv_entry *e = fkv_find(f, op->key, op->klen);
    qc_kv_answer a = {.status = QC_KV_OK};
    if (op->cas != QC_KV_CAS_NONE && (e ? (int64_t)e->revision != op->cas : op->cas != 0)) {
        a.status = QC_KV_CONFLICT;
        a.revision = e ? e->revision : 0;
    } else if (op->kind == FKV_DELETE && !e) {
        a.status = QC_KV_NOTFOUND;
    } else {
        a.revision = ++f->revision;
        if (op->kind == FKV_DELETE) {
            free(e->key);
            free(e->value);
            *e = f->kv[--f->n];
        } else {
            if (!e) {
                if (f->n == f->cap) {
                    f->cap = f->cap ? 2 * f->cap : 8;
                    f->kv = realloc(f->kv, f->cap * sizeof *f->kv);
                    if (!f->kv) abort();
                }
                e = &f->kv[f->n++];
                e->key = dup_bytes(op->key, op->klen);
                e->klen = op->klen;
            } else {
                free(e->value);
            }
            e->value = dup_bytes(op->value, op->vlen);
            e->vlen = op->vlen;
            e->revision = a.revision;
        }
        if (f->h) {
            qc_hook_event ev = {.hook = "on_kv_change",
                                .key = op->key,
                                .klen = op->klen,
                                .value = op->value,
                                .vlen = op->vlen,
                                .has_value = op->kind == FKV_PUT,
                                .revision = a.revision};
            qc_lua_fire(f->h, &ev);
        }
    }
    op->done(op->arg, &a);
}

static void fkv_free_op(fkv_op *op)
{
    free(op->key);
    free(op->value);
    free(op);
}

/* Takes the first request and answers it. */
static void fkv_step(fake *f)
{
    fkv_op *op = f->ops;
    f->ops = op->next;
    if (!f->ops) f->ops_tail = &f->ops;
    if (op->kind == FKV_PUT || op->kind == FKV_DELETE)
        fkv_apply(f, op);
    else
        fkv_answer_read(f, op, NULL); /* a late list lists nothing */
    fkv_free_op(op);
}

static void on_fkv_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    fake *f = w->data;
    if (f->ops) fkv_step(f);
    if (f->ops) ev_timer_start(loop, w);
}

static void fkv_queue(fake *f, int kind, const uint8_t *key, size_t klen, const uint8_t *value,
                      size_t vlen, int64_t cas, qc_kv_done_fn *done, void *arg)
{
    fkv_op *op = calloc(1, sizeof *op);
    if (!op) abort();
    op->kind = kind;
    op->key = dup_bytes(key, klen);
    op->klen = klen;
    op->value = value ? dup_bytes(value, vlen) : NULL;
    op->vlen = vlen;
    op->cas = cas;
    op->done = done;
    op->arg = arg;
    *f->ops_tail = op;
    f->ops_tail = &op->next;
    if (!ev_is_active(&f->apply)) ev_timer_start(f->loop, &f->apply);
}

static int is_nope(const uint8_t *key, size_t klen)
{
    return klen == 4 && memcmp(key, "nope", 4) == 0;
}

static void v_kv_put(void *ud, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                     int64_t cas, qc_kv_done_fn *done, void *arg)
{
    if (is_nope(key, klen)) {
        done(arg, &(qc_kv_answer){.status = QC_ENOLEADER});
        return;
    }
    fkv_queue(ud, FKV_PUT, key, klen, value, vlen, cas, done, arg);
}

static void v_kv_delete(void *ud, const uint8_t *key, size_t klen, int64_t cas, qc_kv_done_fn *done,
                        void *arg)
{
    if (is_nope(key, klen)) {
        done(arg, &(qc_kv_answer){.status = QC_ENOLEADER});
        return;
    }
    fkv_queue(ud, FKV_DELETE, key, klen, NULL, 0, cas, done, arg);
}

static void v_kv_get(void *ud, const uint8_t *key, size_t klen, int stale, qc_kv_done_fn *done,
                     void *arg)
{
    fake *f = ud;
    if (!stale) {
        fprintf(stderr, "driver: the Lua host asked for a linearizable read\n");
        abort();
    }
    if (f->late_reads) {
        fkv_queue(f, FKV_GET, key, klen, NULL, 0, QC_KV_CAS_NONE, done, arg);
        return;
    }
    fkv_op op = {.kind = FKV_GET, .key = (uint8_t *)key, .klen = klen, .done = done, .arg = arg};
    fkv_answer_read(f, &op, NULL);
}

static void v_kv_list(void *ud, const uint8_t *prefix, size_t plen, int stale, qc_kv_each_fn *each,
                      qc_kv_done_fn *done, void *arg)
{
    fake *f = ud;
    if (!stale) {
        fprintf(stderr, "driver: the Lua host asked for a linearizable listing\n");
        abort();
    }
    if (f->late_reads) {
        fkv_queue(f, FKV_LIST, prefix, plen, NULL, 0, QC_KV_CAS_NONE, done, arg);
        return;
    }
    fkv_op op = {
        .kind = FKV_LIST, .key = (uint8_t *)prefix, .klen = plen, .done = done, .arg = arg};
    fkv_answer_read(f, &op, each);
}

/* After the host is gone: answers what is still in flight, frees the rest. */
static void fkv_finish(fake *f)
{
    ev_timer_stop(f->loop, &f->apply);
    while (f->ops) fkv_step(f);
    for (size_t i = 0; i < f->n; i++) {
        free(f->kv[i].key);
        free(f->kv[i].value);
    }
    free(f->kv);
}

/* ---- the fake membership ------------------------------------------------ */

/* Commits (or fails) the first set_metadata and answers it. */
static void fmeta_step(fake *f)
{
    fmeta_op *op = f->metas;
    f->metas = op->next;
    if (!f->metas) f->metas_tail = &f->metas;
    if (f->meta_mode == FMETA_FAIL) {
        op->done(op->arg, QC_ENOLEADER, "no leader to commit it");
    } else {
        free(f->meta);
        f->meta = op->json;
        op->json = NULL;
        op->done(op->arg, 0, NULL);
    }
    free(op->json);
    free(op);
}

static void on_fmeta_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    fake *f = w->data;
    if (f->metas) fmeta_step(f);
    if (f->metas) ev_timer_start(loop, w);
}

static void v_set_metadata(void *ud, const char *json, qc_member_done_fn *done, void *arg)
{
    fake *f = ud;
    if (f->meta_mode == FMETA_NOW) {
        done(arg, QC_EINVAL, NULL);
        return;
    }
    fmeta_op *op = calloc(1, sizeof *op);
    if (!op || !(op->json = strdup(json))) abort(); /* test driver */
    op->done = done;
    op->arg = arg;
    *f->metas_tail = op;
    f->metas_tail = &op->next;
    if (!ev_is_active(&f->meta_timer)) ev_timer_start(f->loop, &f->meta_timer);
}

/* After the host is gone: answers what is still in flight. */
static void fmeta_finish(fake *f)
{
    ev_timer_stop(f->loop, &f->meta_timer);
    while (f->metas) fmeta_step(f);
    free(f->meta);
    f->meta = NULL;
}

/* on_member_join (a learner that is up) or on_member_leave (a voter that
 * is down) for the Peer in args: ID HOST PORT METADATA. */
static void fire_member(qc_lua *h, const char *hook, char **args)
{
    int join = strcmp(hook, "on_member_join") == 0;
    qc_peer_info p = {.identifier = args[0],
                      .host = args[1],
                      .port = atoi(args[2]),
                      .metadata = args[3],
                      .role = join ? "learner" : "follower",
                      .up = join,
                      .voter = !join,
                      .priority = 1};
    qc_hook_event ev = {.hook = hook, .peer = &p};
    if (qc_lua_fire(h, &ev) != QC_OK) fprintf(stderr, "cannot queue %s\n", hook);
}

static void fire_kv(qc_lua *h, const char *key, const char *value, const char *rev)
{
    qc_hook_event ev = {.hook = "on_kv_change",
                        .key = (const uint8_t *)key,
                        .klen = strlen(key),
                        .value = (const uint8_t *)value,
                        .vlen = value ? strlen(value) : 0,
                        .has_value = value != NULL,
                        .revision = strtoull(rev, NULL, 10)};
    if (qc_lua_fire(h, &ev) != QC_OK) fprintf(stderr, "cannot queue on_kv_change\n");
}

static const char *const hook_names[] = {
    "on_start",     "on_elected", "on_demoted",   "on_leader_change", "on_peer_up",
    "on_peer_down", "on_stop",    "on_kv_change", "on_member_join",   "on_member_leave",
    "exec",         "after",      "kv",           "kv_watch",         "set_metadata",
    NULL,
};

static int fire(qc_lua *h, const fake *f, const char *name)
{
    const qc_config *c = f->cfg;
    qc_peer_info self, other;
    fake_self(f, &self);
    if (c->n_peers)
        peer_info(c, 0, &other);
    else
        other = self;
    qc_hook_event ev = {.hook = name};
    if (strcmp(name, "on_start") == 0) {
        ev.self = &self;
    } else if (strcmp(name, "on_elected") == 0) {
        ev.term = 7, ev.self = &self, ev.previous_leader = c->n_peers ? &other : NULL;
    } else if (strcmp(name, "on_demoted") == 0) {
        ev.term = 8, ev.reason = "higher_term", ev.leader = &other;
    } else if (strcmp(name, "on_leader_change") == 0) {
        ev.term = 7, ev.leader = &self, ev.previous_leader = c->n_peers ? &other : NULL;
    } else if (strcmp(name, "on_stop") == 0) {
        ev.reason = "shutdown";
    } else if (strncmp(name, "on_peer_", 8) == 0 || strncmp(name, "on_member_", 10) == 0) {
        ev.peer = &other;
    }
    return qc_lua_fire(h, &ev);
}

static void print_counters(qc_lua *h, qc_metrics *m)
{
    printf("pending=%zu\n", qc_lua_pending(h));
    for (int i = 0; hook_names[i]; i++) {
        double runs = qc_metrics_get(m, "qcluster_hook_runs_total", "hook", hook_names[i]);
        double errs = qc_metrics_get(m, "qcluster_hook_errors_total", "hook", hook_names[i]);
        double over = qc_metrics_get(m, "qcluster_hook_overruns_total", "hook", hook_names[i]);
        if (runs > 0 || errs > 0)
            printf("counter %s runs=%.0f errors=%.0f overruns=%.0f\n", hook_names[i], runs, errs,
                   over);
    }
}

static void on_wait(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

static int run_hooks(struct ev_loop *loop, int argc, char **argv)
{
    qc_metrics *m = qc_metrics_new();
    fake f = {.loop = loop};
    f.ops_tail = &f.ops;
    ev_timer_init(&f.apply, on_fkv_timer, 0.005, 0.);
    f.apply.data = &f;
    f.metas_tail = &f.metas;
    ev_timer_init(&f.meta_timer, on_fmeta_timer, 0.005, 0.);
    f.meta_timer.data = &f;
    qc_view view = {.ud = &f,
                    .is_leader = v_is_leader,
                    .term = v_term,
                    .role = v_role,
                    .commit_index = v_commit,
                    .leader = v_leader,
                    .self = v_self,
                    .peers = v_peers,
                    .kv_put = v_kv_put,
                    .kv_delete = v_kv_delete,
                    .kv_get = v_kv_get,
                    .kv_list = v_kv_list,
                    .set_metadata = v_set_metadata};
    qc_lua *h = NULL;
    qc_config cfg;
    char err[1024];
    if (!m || qc_lua_new(loop, &view, m, &h) != QC_OK) {
        fprintf(stderr, "out of memory\n");
        qc_metrics_free(m);
        return 1;
    }
    f.h = h;
    if (qc_lua_load(h, argv[2], &cfg, err, sizeof err) != QC_OK) {
        fprintf(stderr, "%s\n", err);
        qc_lua_free(h);
        f.h = NULL;
        fkv_finish(&f);
        fmeta_finish(&f);
        qc_metrics_free(m);
        return 2;
    }
    qc_log_set_level(cfg.log_level);
    qc_log_set_format(cfg.log_format); /* as the agent does when it starts */
    qc_log_set_node(cfg.identifier);
    f.cfg = &cfg;
    int rc = 0, stop = 0;
    for (int i = 3; i < argc && rc == 0; i++) {
        if (strcmp(argv[i], "reload") == 0) {
            ev_run(loop, 0);
            int r = qc_lua_reload_hooks(h, err, sizeof err);
            printf("reload: %s\n", r == QC_OK ? "ok" : err);
            fflush(stdout);
        } else if (strcmp(argv[i], "drain") == 0) {
            qc_lua_drain(h);
        } else if (strcmp(argv[i], "run") == 0) {
            ev_run(loop, 0);
        } else if (strncmp(argv[i], "wait:", 5) == 0) {
            ev_timer t;
            ev_timer_init(&t, on_wait, atoi(argv[i] + 5) / 1000.0, 0.);
            ev_timer_start(loop, &t);
            ev_run(loop, 0);
            ev_timer_stop(loop, &t);
        } else if (strcmp(argv[i], "stop") == 0) {
            stop = 1; /* free the host with whatever is still running */
            break;
        } else if (strcmp(argv[i], "nokv") == 0) {
            view.kv_put = NULL, view.kv_delete = NULL, view.kv_get = NULL, view.kv_list = NULL;
        } else if (strcmp(argv[i], "kvlate") == 0) {
            f.late_reads = 1;
        } else if (strcmp(argv[i], "kvchange") == 0 && i + 3 < argc) {
            fire_kv(h, argv[i + 1], argv[i + 2], argv[i + 3]);
            i += 3;
        } else if (strcmp(argv[i], "kvdelete") == 0 && i + 2 < argc) {
            fire_kv(h, argv[i + 1], NULL, argv[i + 2]);
            i += 2;
        } else if (strcmp(argv[i], "nomember") == 0) {
            view.set_metadata = NULL;
        } else if (strcmp(argv[i], "metafail") == 0) {
            f.meta_mode = FMETA_FAIL;
        } else if (strcmp(argv[i], "metanow") == 0) {
            f.meta_mode = FMETA_NOW;
        } else if (strcmp(argv[i], "metaok") == 0) {
            f.meta_mode = FMETA_OK;
        } else if ((strcmp(argv[i], "memberjoin") == 0 || strcmp(argv[i], "memberleave") == 0) &&
                   i + 4 < argc) {
            fire_member(h, argv[i][6] == 'j' ? "on_member_join" : "on_member_leave", argv + i + 1);
            i += 4;
        } else if (fire(h, &f, argv[i]) != QC_OK) {
            fprintf(stderr, "cannot queue %s\n", argv[i]);
            rc = 1;
        }
    }
    if (!stop) ev_run(loop, 0);
    print_counters(h, m);
    qc_lua_free(h);
    f.h = NULL;
    fkv_finish(&f); /* writes still in flight are answered after the host */
    fmeta_finish(&f);
    qc_config_free(&cfg);
    qc_metrics_free(m);
    return rc;
}

/* ---- check ------------------------------------------------------------- */

static void set_json(lua_State *L, const char *k, const char *text)
{
    char err[128];
    if (qc_luajson_decode(L, text, strlen(text), NULL, err, sizeof err) != QC_OK)
        lua_pushstring(L, err);
    lua_setfield(L, -2, k);
}

/* Runs under lua_pcall: builds the output table from the C struct plus the
 * later-issue keys that only live in the resolved Lua table. */
static int build_output(lua_State *L)
{
    const qc_config *c = lua_touserdata(L, 1);
    lua_newtable(L);
    set_str(L, "identifier", c->identifier);
    set_str(L, "listen_host", c->listen_host);
    set_int(L, "listen_port", c->listen_port);
    set_json(L, "metadata", c->metadata);
    set_str(L, "api_host", c->api_host);
    set_int(L, "api_port", c->api_port);
    set_str(L, "data_dir", c->data_dir);
    set_int(L, "heartbeat_ms", c->heartbeat_ms);
    set_int(L, "election_timeout_ms", c->election_timeout_ms);
    set_int(L, "hook_timeout_ms", c->hook_timeout_ms);
    set_int(L, "exec_max", c->exec_max);
    set_int(L, "hook_stuck_ms", c->hook_stuck_ms);
    set_str(L, "hooks", c->hooks_path);
    set_str(L, "log_level", qc_log_level_name(c->log_level));
    set_str(L, "log_format", c->log_format == QC_LOG_JSON ? "json" : "text");
    set_str(L, "secret", c->secret ? "(set)" : NULL);
    set_str(L, "secret_previous", c->secret_previous ? "(set)" : NULL);
    set_str(L, "api_token", c->api_token ? "(set)" : NULL);
    set_str(L, "dir", c->dir);
    lua_createtable(L, (int)c->n_peers, 0);
    for (size_t i = 0; i < c->n_peers; i++) {
        lua_newtable(L);
        set_str(L, "identifier", c->peers[i].identifier);
        set_str(L, "host", c->peers[i].host);
        set_int(L, "port", c->peers[i].port);
        set_json(L, "metadata", c->peers[i].metadata);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "peers");
    static const char *const later[] = {"role",          "priority",         "join",
                                        "preempt",       "preempt_delay_ms", "max_voters",
                                        "leave_on_stop", "reap_after",       NULL};
    lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.config");
    for (int i = 0; later[i]; i++) {
        lua_getfield(L, -1, later[i]);
        lua_setfield(L, -3, later[i]);
    }
    lua_pop(L, 1);
    return 1;
}

static int check(struct ev_loop *loop, const char *path)
{
    char err[1024];
    qc_config cfg;
    qc_lua *h = NULL;
    fake f = {0};
    qc_view view = {.ud = &f,
                    .is_leader = v_is_leader,
                    .term = v_term,
                    .leader = v_leader,
                    .self = v_self,
                    .peers = v_peers};
    /* The full load (with the hooks file) decides validity... */
    if (qc_lua_new(loop, &view, NULL, &h) != QC_OK) return 1;
    int rc = qc_lua_load(h, path, &cfg, err, sizeof err);
    qc_lua_free(h);
    if (rc != QC_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    qc_config_free(&cfg);
    /* ...then a plain state gives us the resolved table to print. */
    lua_State *L = luaL_newstate();
    if (!L) return 1;
    luaL_openlibs(L);
    /* The printed values come from this second load; a config calling
     * qcluster.* gets nil from every function here. */
    if (luaL_dostring(L, "qcluster = setmetatable({}, {__index = function() "
                         "return function() end end})") != LUA_OK) {
        lua_close(L);
        return 1;
    }
    if (qc_config_load(L, path, &cfg, err, sizeof err) != QC_OK) {
        fprintf(stderr, "%s\n", err);
        lua_close(L);
        return 2;
    }
    char *json = NULL;
    size_t len;
    lua_pushcfunction(L, build_output);
    lua_pushlightuserdata(L, &cfg);
    rc = lua_pcall(L, 1, 1, 0) == LUA_OK ? qc_luajson_encode(L, -1, &json, &len, err, sizeof err)
                                         : QC_EINVAL;
    if (rc == QC_OK)
        printf("%s\n", json);
    else
        fprintf(stderr, "cannot print: %s\n", lua_tostring(L, -1));
    free(json);
    qc_config_free(&cfg);
    lua_close(L);
    return rc == QC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "hooks") != 0)) {
        fprintf(stderr, "usage: %s check CONFIG | hooks CONFIG EVENT...\n", argv[0]);
        return 2;
    }
    struct ev_loop *loop = ev_default_loop(0);
    if (!loop) {
        fprintf(stderr, "cannot start libev\n");
        return 1;
    }
    int rc = strcmp(argv[1], "check") == 0 ? check(loop, argv[2]) : run_hooks(loop, argc, argv);
    fflush(stdout);
    ev_loop_destroy(loop);
    return rc;
}
