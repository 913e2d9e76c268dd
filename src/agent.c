/* The agent: one libev loop carrying the consensus core's outputs out in
 * the order raft.h demands (persist, then send, then hooks and metrics),
 * answering the API and the Lua host through qc_view. Glue, not logic: it
 * never decides anything about leadership itself. */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "api.h"
#include "common.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "luahost.h"
#include "members.h"
#include "metrics.h"
#include "net.h"
#include "raft.h"
#include "replica.h"
#include "store.h"
#include "wire.h"

/* A peer: from the config's peers until the replicated member list rules. */
typedef struct member {
    char *identifier; /* owned, as every string here */
    char *host;
    int port;
    uint64_t id;
    char *conf_metadata; /* what the config or the replicated list says */
    char *metadata;      /* announced merged over conf_metadata */
    int up;
    int role;     /* QC_MROLE_... */
    int priority; /* 0 never leads */
    int voting;
    uint64_t down_since; /* ms; 0 while up (reap_after) */
    int told_removed;    /* a leader told it it was removed */
    int tell_tries;
} member;

typedef struct qc_agent qc_agent;

/* A membership request of this node's API or Lua, answered once the
 * applied member list shows it done, or at its deadline. */
typedef struct member_wait {
    struct member_wait *next;
    qc_agent *agent;
    int op;           /* QC_MEMBER_OP_... */
    char *identifier; /* whom it is about */
    char *metadata;   /* update: the wanted metadata */
    qc_member_done_fn *done;
    void *arg;
    ev_timer timer;
} member_wait;

typedef struct pending_transfer {
    struct pending_transfer *next;
    qc_agent *agent;
    uint64_t target; /* 0: whoever wins */
    qc_transfer_done_fn *done;
    void *arg;
    ev_timer timer;
} pending_transfer;

struct qc_agent {
    struct ev_loop *loop;
    qc_config cfg;
    int cfg_loaded;
    qc_metrics *metrics;
    qc_lua *lua;
    qc_store *store;
    qc_raft *raft;
    qc_net *net;
    qc_api *api;
    member *members;
    size_t n_members;
    uint64_t self_id;
    qc_view view;
    ev_timer raft_timer;
    ev_prepare batch; /* runs process() once all of a loop turn's input is in */
    ev_signal sig_term, sig_int, sig_hup;
    pending_transfer *transfers;
    qc_replica *replica;
    /* Membership: the list of the newest applied CONFIG entry, this node's
     * own metadata as it wants it known, requests waiting on the list. */
    qc_members applied;
    uint64_t quiet_until; /* no member hooks for entries replayed at start */
    char *self_metadata;
    member_wait *member_waits;
    ev_timer member_timer;
    int joining;              /* a join request is in flight */
    size_t join_next;         /* the next join address to try */
    char *join_leader;        /* "host:port" a member said leads */
    char join_asked[300];     /* the address of the join in flight */
    uint64_t join_wait_until; /* accepted: wait for the log before asking again */
    int leave_done;
    int relaying; /* leading only as a relay (no hooks) */
    uint64_t preempt_since;
    int exit_code; /* non-zero: stopping after a failure */
    const char *stop_reason;
    qc_agent_stop_fn *stop_fn; /* who stops it when it wants to stop */
    void *stop_ud;
    qc_agent_turn_fn *turn_fn; /* told after each processing turn */
    void *turn_ud;
    int started, running, stopping, closed;
};

/* The agent wants to stop (a signal, a disk failure, removal from the
 * cluster): its owner is told, and stops it from outside this turn. While
 * it stops, a second request cuts the hand-over short. */
static void want_stop(qc_agent *a, const char *reason)
{
    a->stop_reason = reason;
    if (a->stopping) {
        ev_break(a->loop, EVBREAK_ONE);
        return;
    }
    if (a->stop_fn)
        a->stop_fn(a->stop_ud);
    else
        ev_break(a->loop, EVBREAK_ALL);
}

/* ---- members and peers ------------------------------------------------ */

static member *member_by_id(qc_agent *a, uint64_t id)
{
    for (size_t i = 0; i < a->n_members; i++)
        if (a->members[i].id == id) return &a->members[i];
    return NULL;
}

static member *member_by_name(qc_agent *a, const char *identifier)
{
    for (size_t i = 0; i < a->n_members; i++)
        if (strcmp(a->members[i].identifier, identifier) == 0) return &a->members[i];
    return NULL;
}

static void member_clear(member *m)
{
    free(m->identifier);
    free(m->host);
    free(m->conf_metadata);
    free(m->metadata);
    memset(m, 0, sizeof *m);
}

static uint64_t leader_id(const qc_agent *a) { return a->raft ? qc_raft_leader(a->raft) : 0; }

static void self_info(qc_agent *a, qc_peer_info *out);

/* The role name of a member that does not lead now. */
static const char *rest_role(int role, int voting)
{
    if (!voting || role == QC_MROLE_LEARNER) return "learner";
    return role == QC_MROLE_WITNESS ? "witness" : "follower";
}

static void member_info(qc_agent *a, const member *m, qc_peer_info *out)
{
    *out = (qc_peer_info){
        .identifier = m->identifier,
        .host = m->host,
        .port = m->port,
        .metadata = m->metadata ? m->metadata : m->conf_metadata,
        .role = leader_id(a) == m->id ? "leader" : rest_role(m->role, m->voting),
        .up = m->up,
        .voter = m->voting,
        .priority = m->priority,
    };
}

/* Fills out for id; returns NULL when id is nobody we know. */
static const qc_peer_info *peer_info(qc_agent *a, uint64_t id, qc_peer_info *out)
{
    if (!id) return NULL;
    if (id == a->self_id) {
        self_info(a, out);
        return out;
    }
    member *m = member_by_id(a, id);
    if (!m) return NULL;
    member_info(a, m, out);
    return out;
}

/* base's keys overridden by over's: "A peer's metadata is what the peer
 * announces for itself, merged over what this node's peers entry says." */
static char *merge_metadata(const char *base, const char *over)
{
    yajl_val b = yajl_tree_parse(base, NULL, 0);
    yajl_val o = yajl_tree_parse(over, NULL, 0);
    char *out = NULL;
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g || !YAJL_IS_OBJECT(o)) goto done;
    /* Any failure (too deep, out of memory) refuses the whole text. */
    int err = yajl_gen_map_open(g) != yajl_gen_status_ok;
    if (YAJL_IS_OBJECT(b)) {
        for (size_t i = 0; i < b->u.object.len; i++) {
            const char *k = b->u.object.keys[i];
            if (qc_json_get(o, k)) continue;
            err |= qc_json_key(g, k) != 0;
            err |= qc_json_val(g, b->u.object.values[i]) != 0;
        }
    }
    for (size_t i = 0; i < o->u.object.len; i++) {
        err |= qc_json_key(g, o->u.object.keys[i]) != 0;
        err |= qc_json_val(g, o->u.object.values[i]) != 0;
    }
    err |= yajl_gen_map_close(g) != yajl_gen_status_ok;
    const unsigned char *buf;
    size_t len;
    if (!err && yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok) {
        out = malloc(len + 1);
        if (out) {
            memcpy(out, buf, len);
            out[len] = 0;
        }
    }
done:
    if (g) yajl_gen_free(g);
    yajl_tree_free(b);
    yajl_tree_free(o);
    return out;
}

/* ---- the view (API and Lua) ------------------------------------------- */

static int view_is_leader(void *ud)
{
    qc_agent *a = ud;
    return a->raft && qc_raft_is_leader(a->raft, qc_now_ms());
}

static uint64_t view_term(void *ud)
{
    qc_agent *a = ud;
    return a->raft ? qc_raft_term(a->raft) : 0;
}

/* Whether this node votes in the membership in effect. */
static int self_voting(const qc_agent *a)
{
    if (!a->raft) return a->cfg.role != QC_MROLE_LEARNER;
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n = qc_raft_members(a->raft, m);
    for (size_t i = 0; i < n; i++)
        if (m[i].id == a->self_id) return (m[i].flags & QC_MEMBER_VOTER) != 0;
    return 0;
}

static const char *view_role(void *ud)
{
    qc_agent *a = ud;
    if (view_is_leader(a)) return "leader";
    qc_role r = a->raft ? qc_raft_role(a->raft) : QC_ROLE_FOLLOWER;
    if ((r == QC_ROLE_CANDIDATE || r == QC_ROLE_PRECANDIDATE) && !a->relaying) return "candidate";
    return rest_role(a->cfg.role, self_voting(a));
}

static uint64_t view_commit(void *ud)
{
    qc_agent *a = ud;
    return a->raft ? qc_raft_commit(a->raft) : 0;
}

static void self_info(qc_agent *a, qc_peer_info *out)
{
    *out = (qc_peer_info){
        .identifier = a->cfg.identifier ? a->cfg.identifier : "",
        .host = a->cfg.listen_host ? a->cfg.listen_host : "",
        .port = a->cfg.listen_port,
        .metadata = a->self_metadata  ? a->self_metadata
                    : a->cfg.metadata ? a->cfg.metadata
                                      : "{}",
        .role = view_role(a),
        .up = 1,
        .voter = self_voting(a),
        .is_self = 1,
        .priority = a->cfg.priority,
    };
}

static void view_self(void *ud, qc_peer_info *out) { self_info(ud, out); }

static int view_leader(void *ud, qc_peer_info *out)
{
    qc_agent *a = ud;
    /* A leader whose lease lapsed must not name itself. */
    uint64_t id = leader_id(a);
    if (id == a->self_id && !view_is_leader(a)) return QC_ENOLEADER;
    return peer_info(a, id, out) ? QC_OK : QC_ENOLEADER;
}

static size_t view_peers(void *ud, qc_peer_info *out, size_t max)
{
    qc_agent *a = ud;
    for (size_t i = 0; i < a->n_members && i < max; i++) member_info(a, &a->members[i], &out[i]);
    return a->n_members;
}

static void refresh_metrics(void *ud)
{
    qc_agent *a = ud;
    qc_metrics_set(a->metrics, "qcluster_is_leader", NULL, NULL, view_is_leader(a));
    qc_metrics_set(a->metrics, "qcluster_term", NULL, NULL, (double)view_term(a));
    qc_metrics_set(a->metrics, "qcluster_commit_index", NULL, NULL, (double)view_commit(a));
    qc_metrics_set(a->metrics, "qcluster_applied_index", NULL, NULL,
                   a->replica ? (double)qc_replica_applied(a->replica) : 0);
    for (size_t i = 0; i < a->n_members; i++)
        qc_metrics_set(a->metrics, "qcluster_peer_up", "peer", a->members[i].identifier,
                       a->members[i].up);
}

static void process(qc_agent *a);
static void kick(qc_agent *a);
static void sync_members(qc_agent *a);
static void apply_list(qc_agent *a, const qc_entry *e);
static const char *name_of(qc_agent *a, uint64_t id);

static void transfer_finish(qc_agent *a, pending_transfer *t, int rc)
{
    for (pending_transfer **p = &a->transfers; *p; p = &(*p)->next) {
        if (*p != t) continue;
        *p = t->next;
        break;
    }
    ev_timer_stop(a->loop, &t->timer);
    t->done(t->arg, rc);
    free(t);
}

static void on_transfer_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    pending_transfer *t = w->data;
    transfer_finish(t->agent, t, QC_EBUSY);
}

/* A new leader is known: transfers waiting for it are settled. */
static void settle_transfers(qc_agent *a, uint64_t leader)
{
    while (a->transfers) {
        pending_transfer *t = a->transfers;
        int ok = leader != a->self_id && (!t->target || t->target == leader);
        transfer_finish(a, t, ok ? QC_OK : QC_EBUSY);
    }
}

/* Hands over to target (0: the best peer); done(arg, rc) runs once the new
 * leader is known or after two election timeouts. Returns non-zero (and
 * never calls done) when the core refused. */
static int start_transfer(qc_agent *a, uint64_t target, int reason, qc_transfer_done_fn *done,
                          void *arg)
{
    pending_transfer *t = calloc(1, sizeof *t);
    if (!t) return QC_ENOMEM;
    int rc = qc_raft_transfer(a->raft, target, qc_now_ms(), reason);
    if (rc) {
        free(t);
        return rc;
    }
    qc_log(QC_LOG_INFO, "agent", "handing leadership over to %s",
           target ? name_of(a, target) : "the best peer");
    *t = (pending_transfer){
        .next = a->transfers, .agent = a, .target = target, .done = done, .arg = arg};
    ev_timer_init(&t->timer, on_transfer_timeout, 2.0 * a->cfg.election_timeout_ms / 1000.0, 0);
    t->timer.data = t;
    ev_timer_start(a->loop, &t->timer);
    a->transfers = t;
    kick(a);
    return QC_OK;
}

static void view_transfer(void *ud, const char *to, qc_transfer_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    uint64_t target = 0;
    if (to && *to) {
        if (a->cfg.identifier && strcmp(to, a->cfg.identifier) == 0) {
            done(arg, view_is_leader(a) ? QC_OK : QC_ENOTLEADER);
            return;
        }
        member *m = member_by_name(a, to);
        if (!m) {
            done(arg, QC_ENOTFOUND);
            return;
        }
        target = m->id;
    }
    if (!a->raft) {
        done(arg, QC_ENOTLEADER);
        return;
    }
    int rc = start_transfer(a, target, QC_DEMOTE_TRANSFER, done, arg);
    if (rc) done(arg, rc == QC_ENOTFOUND && target ? QC_EBUSY : rc);
}

/* Before the agent started (qcluster check) there is no store to ask. */
static int kv_unavailable(qc_agent *a, qc_kv_done_fn *done, void *arg)
{
    if (a->replica && a->raft) return 0;
    qc_kv_answer none = {.status = QC_ENOLEADER};
    done(arg, &none);
    return 1;
}

static void view_kv_put(void *ud, const uint8_t *key, size_t klen, const uint8_t *value,
                        size_t vlen, int64_t cas, qc_kv_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (kv_unavailable(a, done, arg)) return;
    qc_replica_write(a->replica, a->raft, QC_KV_OP_PUT, key, klen, value, vlen, cas, qc_now_ms(),
                     done, arg);
    kick(a);
}

static void view_kv_delete(void *ud, const uint8_t *key, size_t klen, int64_t cas,
                           qc_kv_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (kv_unavailable(a, done, arg)) return;
    qc_replica_write(a->replica, a->raft, QC_KV_OP_DELETE, key, klen, NULL, 0, cas, qc_now_ms(),
                     done, arg);
    kick(a);
}

static void view_kv_get(void *ud, const uint8_t *key, size_t klen, int stale, qc_kv_done_fn *done,
                        void *arg)
{
    qc_agent *a = ud;
    if (kv_unavailable(a, done, arg)) return;
    qc_replica_get(a->replica, a->raft, key, klen, stale, qc_now_ms(), done, arg);
}

static void view_kv_list(void *ud, const uint8_t *prefix, size_t plen, int stale,
                         qc_kv_each_fn *each, qc_kv_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (kv_unavailable(a, done, arg)) return;
    qc_replica_list(a->replica, a->raft, prefix, plen, stale, qc_now_ms(), each, done, arg);
}

/* ---- carrying out the core's outputs ---------------------------------- */

static void fire(qc_agent *a, const qc_hook_event *ev)
{
    if (a->lua && qc_lua_fire(a->lua, ev) != QC_OK)
        qc_log(QC_LOG_ERROR, "agent", "cannot queue hook %s: out of memory", ev->hook);
}

static const char *name_of(qc_agent *a, uint64_t id)
{
    if (!id) return "none";
    if (id == a->self_id) return a->cfg.identifier;
    member *m = member_by_id(a, id);
    return m ? m->identifier : "?";
}

static void handle_event(qc_agent *a, const qc_raft_event *e)
{
    qc_peer_info self, leader, prev;
    self_info(a, &self);
    const qc_peer_info *lp = peer_info(a, e->leader, &leader);
    const qc_peer_info *pp = peer_info(a, e->prev_leader, &prev);
    switch (e->type) {
    case QC_EVENT_CAMPAIGN:
        qc_metrics_add(a->metrics, "qcluster_elections_total", NULL, NULL, 1);
        qc_log(QC_LOG_INFO, "raft", "starting an election for term %llu",
               (unsigned long long)e->term);
        return;
    case QC_EVENT_CONFIG: sync_members(a); return;
    case QC_EVENT_ELECTED:
        if (e->reason) { /* a relay: passes entries on and hands over, no hooks */
            a->relaying = 1;
            qc_log(QC_LOG_INFO, "raft", "relaying the log in term %llu, then handing over",
                   (unsigned long long)e->term);
            return;
        }
        qc_log(QC_LOG_INFO, "raft", "elected leader for term %llu", (unsigned long long)e->term);
        fire(a, &(qc_hook_event){
                    .hook = "on_elected", .term = e->term, .self = &self, .previous_leader = pp});
        return;
    case QC_EVENT_DEMOTED:
        if (a->relaying) {
            a->relaying = 0;
            return;
        }
        qc_log(QC_LOG_INFO, "raft", "no longer leader in term %llu (%s)",
               (unsigned long long)e->term, qc_raft_reason_name(e->reason));
        fire(a, &(qc_hook_event){.hook = "on_demoted",
                                 .term = e->term,
                                 .reason = qc_raft_reason_name(e->reason),
                                 .leader = lp});
        return;
    case QC_EVENT_LEADER:
        qc_metrics_add(a->metrics, "qcluster_leader_changes_total", NULL, NULL, 1);
        qc_log(QC_LOG_INFO, "raft", "leader is %s (term %llu)", name_of(a, e->leader),
               (unsigned long long)e->term);
        fire(a,
             &(qc_hook_event){
                 .hook = "on_leader_change", .term = e->term, .leader = lp, .previous_leader = pp});
        if (e->leader) settle_transfers(a, e->leader);
        if (a->api) qc_api_notify(a->api);
        return;
    }
}

/* The hard state must be on disk before any message that depends on it
 * leaves. 0 when it could not be written. */
static int persist_hard_state(qc_agent *a, const qc_ready *rd)
{
    if (!rd->hard_state_changed) return 1;
    qc_hard_state hs = rd->hs;
    return qc_store_save(a->store, &hs) == QC_OK;
}

static void arm_timer(qc_agent *a)
{
    uint64_t deadline = qc_raft_next_deadline(a->raft);
    uint64_t now = qc_now_ms();
    double delay = deadline > now ? (double)(deadline - now) / 1000.0 : 0;
    ev_timer_stop(a->loop, &a->raft_timer);
    ev_timer_set(&a->raft_timer, delay, 0);
    ev_timer_start(a->loop, &a->raft_timer);
}

/* A write or fsync of the log or the state failed: what was acknowledged
 * is on disk, but this node can promise nothing more (a failed fsync cannot
 * be retried safely), so it stops; the others carry on without it. */
static void disk_failed(qc_agent *a)
{
    qc_log(QC_LOG_ERROR, "store", "cannot write to %s: %s; stopping this node", a->cfg.data_dir,
           strerror(errno));
    qc_metrics_add(a->metrics, "qcluster_store_errors_total", NULL, NULL, 1);
    a->exit_code = 1;
    want_stop(a, "disk failure");
}

static void send_all(qc_agent *a, const qc_ready *rd)
{
    for (size_t i = 0; i < rd->n_msgs; i++) qc_net_send(a->net, &rd->msgs[i]);
}

static void process(qc_agent *a)
{
    if (a->exit_code) return;
    while (qc_raft_has_ready(a->raft)) {
        qc_ready rd;
        qc_raft_ready(a->raft, &rd);
        /* A leader may send its new entries while it writes them (it counts
         * itself only once they are on disk); everything else, votes above
         * all, leaves only after the write. */
        int early =
            qc_raft_role(a->raft) == QC_ROLE_LEADER && !rd.hard_state_changed && !rd.has_snapshot;
        qc_replica_prepare(a->replica, &rd);
        if (early) send_all(a, &rd);
        if (qc_replica_persist(a->replica, &rd) == QC_EIO || !persist_hard_state(a, &rd)) {
            disk_failed(a);
            return;
        }
        if (rd.n_entries)
            qc_metrics_observe(a->metrics, "qcluster_fsync_duration_seconds",
                               qc_replica_last_sync(a->replica));
        if (!early) send_all(a, &rd);
        qc_replica_apply(a->replica, a->raft, &rd, qc_now_ms());
        if (rd.has_snapshot) apply_list(a, rd.snapshot_conf);
        for (size_t i = 0; i < rd.n_committed; i++)
            if (rd.committed[i].type == QC_ENTRY_CONFIG) apply_list(a, &rd.committed[i]);
        /* Events refer to state the core holds now: copy them out first,
         * since hooks never run inline but transfers may settle inline. */
        size_t n = rd.n_events;
        qc_raft_event few[16];
        qc_raft_event *events = n <= 16 ? few : malloc(n * sizeof *events);
        if (!events) {
            qc_log(QC_LOG_ERROR, "agent", "out of memory: %zu events not handled", n);
            n = 0;
        }
        if (n) memcpy(events, rd.events, n * sizeof *events);
        qc_raft_advance(a->raft);
        qc_replica_maybe_snapshot(a->replica, a->raft);
        for (size_t i = 0; i < n; i++) handle_event(a, &events[i]);
        if (events != few) free(events);
        qc_replica_deliver(a->replica);
    }
    arm_timer(a);
    if (a->turn_fn) a->turn_fn(a->turn_ud);
}

static void on_batch(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    ev_prepare_stop(loop, w);
    process(w->data);
}

/* Input reached the core: carry its outputs out at the end of this loop
 * turn, so that every message and request of the turn shares one fsync
 * (group commit) and one batch of messages. */
static void kick(qc_agent *a)
{
    if (!ev_is_active(&a->batch)) ev_prepare_start(a->loop, &a->batch);
}

static void on_raft_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_agent *a = w->data;
    qc_raft_tick(a->raft, qc_now_ms());
    process(a);
}

/* ---- membership --------------------------------------------------------- */

static void member_wait_finish(qc_agent *a, member_wait *w, int rc, const char *message);

static const char *self_meta(const qc_agent *a)
{
    if (a->self_metadata) return a->self_metadata;
    return a->cfg.metadata ? a->cfg.metadata : "{}";
}

/* This node's record as it wants it known (strings borrowed). */
static qc_member_rec self_rec(const qc_agent *a, int voting)
{
    return (qc_member_rec){.identifier = a->cfg.identifier,
                           .host = a->cfg.listen_host,
                           .port = a->cfg.listen_port,
                           .role = a->cfg.role,
                           .priority = a->cfg.priority,
                           .metadata = (char *)self_meta(a),
                           .voting = voting && a->cfg.role != QC_MROLE_LEARNER};
}

/* The member list in effect. The first start's membership (the config's
 * peers) has no list in the log yet: it is built as the core counts it,
 * every member a voter with priority 1; each node then asks for its own
 * role, priority and metadata through the log, one change at a time. */
static int list_in_effect(qc_agent *a, qc_members *out)
{
    qc_entry e;
    qc_raft_conf(a->raft, &e);
    memset(out, 0, sizeof *out);
    if (e.index) return qc_members_decode(e.data, e.len, out);
    qc_member core[QC_RAFT_MAX_MEMBERS];
    size_t n = qc_raft_members(a->raft, core);
    for (size_t i = 0; i < n; i++) {
        qc_member_rec rec = self_rec(a, 1);
        const member *m = member_by_id(a, core[i].id);
        if (core[i].id != a->self_id && !m) continue;
        if (m)
            rec = (qc_member_rec){.identifier = m->identifier,
                                  .host = m->host,
                                  .port = m->port,
                                  .metadata = m->conf_metadata};
        rec.role = QC_MROLE_VOTER;
        rec.priority = 1;
        rec.voting = 1;
        int rc = qc_members_put(out, &rec);
        if (rc) {
            qc_members_free(out);
            return rc;
        }
    }
    return QC_OK;
}

/* Proposes ms as the new membership (leader only). */
static int propose_list(qc_agent *a, const qc_members *ms)
{
    qc_buf buf = {0};
    int rc = qc_members_encode(ms, &buf);
    if (rc == QC_OK) rc = qc_raft_propose_config(a->raft, buf.data, buf.len, qc_now_ms(), NULL);
    qc_buf_free(&buf);
    if (rc == QC_OK) kick(a);
    return rc;
}

static int is_wildcard(const char *host)
{
    return !strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !strcmp(host, "*") ||
           !strcmp(host, "[::]");
}

/* Whether the list's record has is all that want asks for (a wildcard
 * host asks for none in particular). */
static int rec_same(const qc_member_rec *has, const qc_member_rec *want)
{
    return has->role == want->role && has->priority == want->priority && has->port == want->port &&
           has->voting == want->voting &&
           (is_wildcard(want->host) || strcmp(has->host, want->host) == 0) &&
           strcmp(has->metadata, want->metadata) == 0;
}

/* The leader applies one request to the list in effect and proposes it.
 * QC_OK (proposed, or nothing to change), QC_EBUSY (another change is in
 * flight: ask again), QC_EINVAL with *why (refused), QC_ENOTFOUND. */
static int leader_change(qc_agent *a, int op, const qc_member_rec *rec, const char **why)
{
    qc_members ms;
    int rc = list_in_effect(a, &ms);
    if (rc) return rc;
    int at = qc_members_find(&ms, rec->identifier);
    if (op == QC_MEMBER_OP_LEAVE) {
        rc = at < 0 ? QC_ENOTFOUND : qc_members_remove(&ms, rec->identifier);
    } else if (op == QC_MEMBER_OP_JOIN && at >= 0) {
        const member *m = member_by_id(a, qc_hash_id(rec->identifier));
        int same = strcmp(ms.v[at].host, rec->host) == 0 && ms.v[at].port == rec->port;
        if (same && !ms.v[at].voting) {
            rc = QC_OK; /* it is in already (asking again): it catches up as itself */
        } else if ((m && m->up && !same) || qc_hash_id(rec->identifier) == a->self_id) {
            *why = "identifier in use by a live member";
            rc = QC_EINVAL;
        } else {
            /* A member of that name is down, or a voter asks to join again
             * (its data is gone: it must not vote as what it was): it goes
             * first, then comes back as a learner; ask again. */
            rc = qc_members_remove(&ms, rec->identifier);
            if (rc == QC_OK) rc = propose_list(a, &ms);
            if (rc == QC_OK) rc = QC_EBUSY;
            *why = "replacing a member of that name that is down";
        }
        qc_members_free(&ms);
        return rc;
    } else if (op == QC_MEMBER_OP_UPDATE && at < 0) {
        rc = QC_ENOTFOUND; /* not a member (any more): an update adds nobody */
    } else {
        qc_member_rec r = *rec;
        /* A node listening on a wildcard address is reached where the list
         * (or its join) says. */
        if (is_wildcard(r.host) && at >= 0) r.host = ms.v[at].host;
        /* Voting is the leader's to decide: a newcomer starts as a learner,
         * an update keeps what the list says (a learner never votes). */
        r.voting = at >= 0 && ms.v[at].voting && rec->role != QC_MROLE_LEARNER;
        if (at >= 0 && op == QC_MEMBER_OP_UPDATE && rec_same(&ms.v[at], &r)) {
            qc_members_free(&ms);
            return QC_OK;
        }
        rc = qc_members_put(&ms, &r);
        if (rc == QC_ETOOBIG) *why = "the cluster is full";
        if (rc == QC_ETOOBIG) rc = QC_EINVAL;
    }
    if (rc == QC_OK) rc = propose_list(a, &ms);
    qc_members_free(&ms);
    if (rc == QC_EINVAL && !*why) *why = "not a valid member";
    return rc;
}

/* A follower asks the leader; the outcome shows in the applied list. */
static int ask_leader(qc_agent *a, int op, const qc_member_rec *rec)
{
    uint64_t leader = leader_id(a);
    if (!leader) return QC_ENOLEADER;
    if (leader == a->self_id) {
        const char *why = NULL;
        return leader_change(a, op, rec, &why);
    }
    qc_buf buf = {0};
    qc_member_request req = {.op = op, .rec = *rec};
    int rc = qc_member_request_encode(&req, &buf);
    if (rc == QC_OK) rc = qc_net_send_frame(a->net, leader, QC_FRAME_MEMBER, buf.data, buf.len);
    qc_buf_free(&buf);
    return rc;
}

/* A MEMBER frame: a member asks us (the leader) for a change; or, op leave
 * naming us, the leader tells us we were removed. */
static void on_member_frame(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len)
{
    qc_member_request req;
    if (qc_member_request_decode(data, len, &req) != QC_OK) {
        qc_log(QC_LOG_WARN, "member", "dropped a malformed request from %s", name_of(a, peer));
        return;
    }
    if (req.op == QC_MEMBER_OP_LEAVE && qc_hash_id(req.rec.identifier) == a->self_id) {
        qc_log(QC_LOG_INFO, "member", "the leader removed this node from the cluster");
        for (member_wait *w = a->member_waits, *next; w; w = next) {
            next = w->next;
            if (w->op == QC_MEMBER_OP_LEAVE && strcmp(w->identifier, a->cfg.identifier) == 0)
                member_wait_finish(a, w, QC_OK, NULL);
        }
        want_stop(a, "left the cluster");
    } else if (req.op != QC_MEMBER_OP_LEAVE && qc_hash_id(req.rec.identifier) != peer) {
        qc_log(QC_LOG_WARN, "member", "%s asked to change %s: refused, only its own record",
               name_of(a, peer), req.rec.identifier);
    } else if (qc_raft_role(a->raft) == QC_ROLE_LEADER) {
        const char *why = NULL;
        int rc = leader_change(a, req.op, &req.rec, &why);
        if (rc && rc != QC_EBUSY)
            qc_log(QC_LOG_WARN, "member", "request of %s about %s refused: %s", name_of(a, peer),
                   req.rec.identifier, why ? why : qc_strerror(rc));
    }
    qc_member_request_free(&req);
}

/* A node that is not a member asks to join (net's on_join). */
static void on_join(void *ud, const char *identifier, const char *host_seen, const uint8_t *payload,
                    size_t len, qc_buf *answer)
{
    qc_agent *a = ud;
    qc_join_answer ans = {0};
    qc_member_rec rec;
    const char *why = NULL;
    char leader_addr[300];
    int rc = qc_member_rec_decode(payload, len, &rec);
    if (rc == QC_OK && identifier && strcmp(rec.identifier, identifier) != 0) rc = QC_EINVAL;
    char *seen = NULL;
    if (rc == QC_OK && is_wildcard(rec.host) && (seen = strdup(host_seen))) {
        free(rec.host); /* it listens everywhere: reach it where it came from */
        rec.host = seen;
    }
    identifier = rc == QC_OK ? rec.identifier : identifier ? identifier : "?";
    if (rc) {
        ans.error = "malformed join request";
    } else if (!view_is_leader(a)) {
        member *l = member_by_id(a, leader_id(a));
        if (l) {
            snprintf(leader_addr, sizeof leader_addr, "%s:%d", l->host, l->port);
            ans.leader = leader_addr;
        }
        ans.error = l ? "not the leader" : "no leader yet";
        ans.retry = 1;
    } else {
        rc = leader_change(a, QC_MEMBER_OP_JOIN, &rec, &why);
        ans.ok = rc == QC_OK;
        ans.retry = rc == QC_EBUSY;
        ans.error = rc == QC_OK ? NULL : why ? (char *)why : (char *)qc_strerror(rc);
        if (ans.ok) list_in_effect(a, &ans.members);
    }
    qc_log(ans.ok ? QC_LOG_INFO : QC_LOG_WARN, "member", "join request of %s (from %s): %s",
           identifier, host_seen, ans.ok ? "accepted" : ans.error);
    if (qc_join_answer_encode(&ans, answer) != QC_OK) answer->len = 0;
    qc_members_free(&ans.members);
    qc_member_rec_free(&rec); /* zeroed when decoding failed */
}

/* A new peer from a list record, dialled at once; NULL (logged) when the
 * table is full or memory ran out. */
static member *member_add(qc_agent *a, const qc_member_rec *r)
{
    if (a->n_members >= QC_RAFT_MAX_MEMBERS) return NULL;
    member *m = &a->members[a->n_members];
    *m = (member){.identifier = strdup(r->identifier),
                  .host = strdup(r->host),
                  .port = r->port,
                  .id = qc_hash_id(r->identifier),
                  .conf_metadata = strdup(r->metadata),
                  .role = r->role,
                  .priority = r->priority,
                  .voting = r->voting};
    if (!m->identifier || !m->host || !m->conf_metadata ||
        qc_net_add_peer(a->net, r->identifier, r->host, r->port) != QC_OK) {
        member_clear(m);
        qc_log(QC_LOG_ERROR, "member", "out of memory adding %s", r->identifier);
        return NULL;
    }
    a->n_members++;
    return m;
}

/* Peers follow the membership: whoever the list in effect or the applied
 * one names (a removed member stays until the leader told it). */
static void sync_members(qc_agent *a)
{
    qc_members ms;
    qc_entry e;
    qc_raft_conf(a->raft, &e);
    if (!e.index || qc_members_decode(e.data, e.len, &ms) != QC_OK) return;
    for (size_t i = 0; i < ms.n; i++) {
        const qc_member_rec *r = &ms.v[i];
        uint64_t id = qc_hash_id(r->identifier);
        if (id == a->self_id) continue;
        member *m = member_by_id(a, id);
        char *moved =
            m && (m->port != r->port || strcmp(m->host, r->host) != 0) ? strdup(r->host) : NULL;
        if (moved) {
            /* It moved: its old link is down as of now; dial the new address. */
            qc_net_remove_peer(a->net, m->id);
            qc_raft_link(a->raft, m->id, QC_LINK_DOWN, qc_now_ms());
            m->up = 0;
            free(m->host);
            m->host = moved;
            m->port = r->port;
            if (qc_net_add_peer(a->net, r->identifier, r->host, r->port) != QC_OK)
                qc_log(QC_LOG_ERROR, "member", "out of memory following %s", r->identifier);
        }
        if (!m && (m = member_add(a, r)))
            qc_log(QC_LOG_INFO, "member", "%s (%s:%d) is a member", r->identifier, r->host,
                   r->port);
        if (!m) continue;
        /* What the member says of itself (the list), merged over what our
         * own config's peers entry says of it. */
        const char *ours = "{}";
        for (size_t k = 0; k < a->cfg.n_peers; k++)
            if (strcmp(a->cfg.peers[k].identifier, r->identifier) == 0 && a->cfg.peers[k].metadata)
                ours = a->cfg.peers[k].metadata;
        char *meta = merge_metadata(ours, r->metadata);
        if (meta) {
            free(m->metadata);
            m->metadata = meta;
        }
        m->role = r->role;
        m->priority = r->priority;
        m->voting = r->voting;
    }
    qc_members_free(&ms);
    /* The core starts new peers with no link: tell it which are up. */
    uint64_t now = qc_now_ms();
    for (size_t i = 0; i < a->n_members; i++)
        if (qc_net_link_up(a->net, a->members[i].id))
            qc_raft_link(a->raft, a->members[i].id, QC_LINK_UP, now);
}

/* Drops peers neither list names any more; a leader first tells each that
 * it was removed (it may never learn it from the log). */
static void forget_members(qc_agent *a)
{
    qc_members ms;
    if (list_in_effect(a, &ms) != QC_OK) return;
    int leader = qc_raft_role(a->raft) == QC_ROLE_LEADER;
    for (size_t i = 0; i < a->n_members;) {
        member *m = &a->members[i];
        if (qc_members_find_id(&ms, m->id) >= 0 || qc_members_find_id(&a->applied, m->id) >= 0 ||
            !a->applied.n) {
            i++;
            continue;
        }
        if (leader && !m->told_removed) {
            qc_buf buf = {0};
            qc_member_request req = {.op = QC_MEMBER_OP_LEAVE,
                                     .rec = {.identifier = m->identifier, .metadata = "{}"}};
            if (qc_member_request_encode(&req, &buf) == QC_OK &&
                qc_net_send_frame(a->net, m->id, QC_FRAME_MEMBER, buf.data, buf.len) == QC_OK)
                m->told_removed = 1;
            else if (++m->tell_tries >= 50) /* unreachable for a while: give up on it */
                m->told_removed = 1;
            qc_buf_free(&buf);
            i++;
            continue;
        }
        qc_log(QC_LOG_INFO, "member", "%s is no longer a member", m->identifier);
        qc_net_remove_peer(a->net, m->id);
        member_clear(m);
        a->members[i] = a->members[--a->n_members];
    }
    qc_members_free(&ms);
}

static void fire_member(qc_agent *a, const char *hook, const qc_member_rec *r)
{
    qc_peer_info p = {.identifier = r->identifier,
                      .host = r->host,
                      .port = r->port,
                      .metadata = r->metadata,
                      .role = rest_role(r->role, r->voting),
                      .up = qc_hash_id(r->identifier) == a->self_id ||
                            qc_net_link_up(a->net, qc_hash_id(r->identifier)),
                      .voter = r->voting,
                      .is_self = qc_hash_id(r->identifier) == a->self_id,
                      .priority = r->priority};
    fire(a, &(qc_hook_event){.hook = hook, .peer = &p});
}

static void settle_member_waits(qc_agent *a);
static int is_member(const qc_agent *a);

/* A CONFIG entry (or a snapshot's membership) was applied: hooks for who
 * came and went, and this node stops if it was removed. */
static void apply_list(qc_agent *a, const qc_entry *e)
{
    qc_members ms;
    if (!e->index || qc_members_decode(e->data, e->len, &ms) != QC_OK) return;
    qc_log(QC_LOG_DEBUG, "member", "applied a list of %zu members at %llu", ms.n,
           (unsigned long long)e->index);
    if (e->index > a->quiet_until && a->applied.n) {
        for (size_t i = 0; i < ms.n; i++)
            if (qc_members_find(&a->applied, ms.v[i].identifier) < 0)
                fire_member(a, "on_member_join", &ms.v[i]);
        for (size_t i = 0; i < a->applied.n; i++)
            if (qc_members_find(&ms, a->applied.v[i].identifier) < 0)
                fire_member(a, "on_member_leave", &a->applied.v[i]);
    }
    int was = qc_members_find(&a->applied, a->cfg.identifier) >= 0;
    int is = qc_members_find(&ms, a->cfg.identifier) >= 0;
    qc_members_free(&a->applied);
    a->applied = ms;
    settle_member_waits(a);
    /* Removed, and not added back later in the log (a node that rejoined
     * under its name replays its own earlier leave). */
    if (was && !is && !is_member(a)) {
        qc_log(QC_LOG_INFO, "member", "this node was removed from the cluster; stopping");
        want_stop(a, "left the cluster");
    }
}

/* ---- membership requests of this node (API, Lua) ------------------------ */

static void member_wait_finish(qc_agent *a, member_wait *w, int rc, const char *message)
{
    for (member_wait **p = &a->member_waits; *p; p = &(*p)->next) {
        if (*p != w) continue;
        *p = w->next;
        break;
    }
    ev_timer_stop(a->loop, &w->timer);
    w->done(w->arg, rc, message);
    free(w->identifier);
    free(w->metadata);
    free(w);
}

static void on_member_wait_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    member_wait *mw = w->data;
    member_wait_finish(mw->agent, mw, QC_EBUSY, "timed out waiting for the change to commit");
}

/* Whether the applied list shows w done. */
static int member_wait_met(const qc_agent *a, const member_wait *w)
{
    int at = qc_members_find(&a->applied, w->identifier);
    if (!a->applied.n) return 0; /* no list yet: nothing to tell by */
    switch (w->op) {
    case QC_MEMBER_OP_LEAVE: return at < 0;
    case QC_MEMBER_OP_UPDATE: return at >= 0 && strcmp(a->applied.v[at].metadata, w->metadata) == 0;
    default: return at >= 0;
    }
}

static void settle_member_waits(qc_agent *a)
{
    member_wait *w = a->member_waits;
    while (w) {
        member_wait *next = w->next;
        if (member_wait_met(a, w)) member_wait_finish(a, w, QC_OK, NULL);
        w = next;
    }
}

/* Waits (timeout_s) until the applied list shows op on identifier done. */
static void member_wait_add(qc_agent *a, int op, const char *identifier, const char *metadata,
                            double timeout_s, qc_member_done_fn *done, void *arg)
{
    member_wait *w = calloc(1, sizeof *w);
    if (w) {
        w->identifier = strdup(identifier);
        w->metadata = metadata ? strdup(metadata) : NULL;
    }
    if (!w || !w->identifier || (metadata && !w->metadata)) {
        if (w) free(w->identifier);
        free(w);
        done(arg, QC_ENOMEM, "out of memory");
        return;
    }
    *w = (member_wait){.next = a->member_waits,
                       .agent = a,
                       .op = op,
                       .identifier = w->identifier,
                       .metadata = w->metadata,
                       .done = done,
                       .arg = arg};
    ev_timer_init(&w->timer, on_member_wait_timeout, timeout_s, 0);
    w->timer.data = w;
    ev_timer_start(a->loop, &w->timer);
    a->member_waits = w;
    if (member_wait_met(a, w)) member_wait_finish(a, w, QC_OK, NULL);
}

/* The time a membership change may take: a few election timeouts. */
static double change_timeout(const qc_agent *a)
{
    return 10.0 * a->cfg.election_timeout_ms / 1000.0 + 2;
}

static void view_set_metadata(void *ud, const char *json, qc_member_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    char *copy = strdup(json);
    if (!copy) {
        done(arg, QC_ENOMEM, "out of memory");
        return;
    }
    free(a->self_metadata);
    a->self_metadata = copy;
    if (!a->raft) {
        done(arg, QC_ENOLEADER, "the agent has not started");
        return;
    }
    qc_member_rec rec = self_rec(a, self_voting(a));
    int rc = ask_leader(a, QC_MEMBER_OP_UPDATE, &rec);
    if (rc && rc != QC_EBUSY) {
        done(arg, rc, rc == QC_ENOLEADER ? "no leader to commit it" : qc_strerror(rc));
        return;
    }
    /* A busy leader: the member timer asks again until it is in. */
    member_wait_add(a, QC_MEMBER_OP_UPDATE, a->cfg.identifier, copy, change_timeout(a), done, arg);
}

typedef struct leave_after_transfer {
    qc_agent *agent;
    qc_member_done_fn *done;
    void *arg;
} leave_after_transfer;

static void start_leave(qc_agent *a, const char *identifier, qc_member_done_fn *done, void *arg);

static void on_leave_transfer_done(void *arg, int rc)
{
    leave_after_transfer *t = arg;
    if (rc)
        t->done(t->arg, rc, "could not hand leadership over before leaving");
    else
        start_leave(t->agent, t->agent->cfg.identifier, t->done, t->arg);
    free(t);
}

/* Removes identifier through the leader; a leader leaving hands over first. */
static void start_leave(qc_agent *a, const char *identifier, qc_member_done_fn *done, void *arg)
{
    int self = strcmp(identifier, a->cfg.identifier) == 0;
    if (qc_members_find(&a->applied, identifier) < 0 && !member_by_name(a, identifier) && !self) {
        done(arg, QC_ENOTFOUND, NULL);
        return;
    }
    if (self && qc_raft_role(a->raft) == QC_ROLE_LEADER && a->n_members) {
        leave_after_transfer *t = malloc(sizeof *t);
        if (!t) {
            done(arg, QC_ENOMEM, "out of memory");
            return;
        }
        *t = (leave_after_transfer){a, done, arg};
        int rc = start_transfer(a, 0, QC_DEMOTE_SHUTDOWN, on_leave_transfer_done, t);
        if (rc) {
            free(t);
            done(arg, rc, "could not hand leadership over before leaving");
        }
        return;
    }
    qc_member_rec rec = {.identifier = (char *)identifier, .metadata = "{}"};
    int rc = ask_leader(a, QC_MEMBER_OP_LEAVE, &rec);
    /* Busy, or no leader known yet: the member timer asks again. */
    if (rc && rc != QC_EBUSY && rc != QC_ENOLEADER) {
        done(arg, rc, rc == QC_ENOLEADER ? "no leader to commit it" : NULL);
        return;
    }
    member_wait_add(a, QC_MEMBER_OP_LEAVE, identifier, NULL, change_timeout(a), done, arg);
}

static void view_leave(void *ud, const char *identifier, qc_member_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (!a->raft) {
        done(arg, QC_ENOLEADER, "the agent has not started");
        return;
    }
    start_leave(a, identifier && *identifier ? identifier : a->cfg.identifier, done, arg);
}

/* ---- joining ------------------------------------------------------------ */

static int is_member(const qc_agent *a)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n = qc_raft_members(a->raft, m);
    for (size_t i = 0; i < n; i++)
        if (m[i].id == a->self_id) return 1;
    return 0;
}

static void join_next(qc_agent *a);

static void on_join_answer(void *arg, int rc, const uint8_t *answer, size_t len)
{
    qc_agent *a = arg;
    a->joining = 0;
    qc_join_answer ans;
    const char *addr = a->join_asked;
    if (rc == QC_OK) rc = qc_join_answer_decode(answer, len, &ans);
    if (rc) {
        qc_log(QC_LOG_WARN, "member", "join through %s: %s", addr,
               rc == QC_EBUSY ? "no answer"
               : rc == QC_EIO ? "cannot connect"
                              : "bad answer");
        free(a->join_leader);
        a->join_leader = NULL;
        a->join_wait_until = qc_now_ms() + 1000; /* next address in a second */
        return;
    }
    free(a->join_leader);
    a->join_leader = ans.leader && !ans.ok ? strdup(ans.leader) : NULL;
    if (ans.ok) {
        qc_log(QC_LOG_INFO, "member", "join accepted; catching up as a learner");
        a->join_wait_until = qc_now_ms() + 5ull * (uint64_t)a->cfg.election_timeout_ms;
        /* Know who will send us the log before it comes. */
        for (size_t i = 0; i < ans.members.n; i++) {
            const qc_member_rec *r = &ans.members.v[i];
            uint64_t id = qc_hash_id(r->identifier);
            if (id != a->self_id && !member_by_id(a, id)) member_add(a, r);
        }
    } else if (ans.leader) {
        join_next(a); /* straight to the leader */
    } else {
        qc_log(ans.retry ? QC_LOG_INFO : QC_LOG_ERROR, "member", "join through %s refused: %s",
               addr, ans.error ? ans.error : "no reason given");
        a->join_wait_until = qc_now_ms() + 1000;
    }
    qc_join_answer_free(&ans);
}

/* Asks the next member on the join list (or the leader one named). */
static void join_next(qc_agent *a)
{
    if (a->joining || !a->cfg.n_join) return;
    const char *addr =
        a->join_leader ? a->join_leader : a->cfg.join[a->join_next++ % a->cfg.n_join];
    char host[256];
    int port;
    qc_buf req = {0};
    qc_member_rec rec = self_rec(a, 0);
    if (qc_member_split_addr(addr, host, sizeof host, &port) != QC_OK ||
        qc_member_rec_encode(&rec, &req) != QC_OK) {
        qc_log(QC_LOG_ERROR, "member", "cannot ask %s to join", addr);
        qc_buf_free(&req);
        return;
    }
    qc_log(QC_LOG_INFO, "member", "asking %s to join the cluster", addr);
    snprintf(a->join_asked, sizeof a->join_asked, "%s", addr);
    int timeout = 2 * a->cfg.election_timeout_ms + 500;
    if (qc_net_join(a->net, host, port, req.data, req.len, timeout, on_join_answer, a) == QC_OK)
        a->joining = 1;
    qc_buf_free(&req);
}

static void view_join(void *ud, const char *const *addresses, size_t n, qc_member_done_fn *done,
                      void *arg)
{
    qc_agent *a = ud;
    if (!a->raft) {
        done(arg, QC_ENOLEADER, "the agent has not started");
        return;
    }
    int joined = qc_members_find(&a->applied, a->cfg.identifier) >= 0;
    if (joined && !a->n_members) {
        done(arg, QC_EINVAL,
             "this node forms a cluster of its own: start it with join = {} "
             "(or with join addresses) to join another");
        return;
    }
    if (joined) {
        done(arg, QC_OK, "already a member");
        return;
    }
    char **list = calloc(n ? n : 1, sizeof *list);
    for (size_t i = 0; list && i < n; i++)
        if (!(list[i] = strdup(addresses[i]))) n = i;
    if (!list) {
        done(arg, QC_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < a->cfg.n_join; i++) free(a->cfg.join[i]);
    free(a->cfg.join);
    a->cfg.join = list;
    a->cfg.n_join = n;
    a->cfg.join_set = 1;
    a->join_next = 0;
    join_next(a);
    member_wait_add(a, QC_MEMBER_OP_JOIN, a->cfg.identifier, NULL, change_timeout(a), done, arg);
}

/* ---- the member timer: what this node does for the membership ----------- */

static void leader_duties(qc_agent *a, uint64_t now)
{
    qc_entry e;
    qc_raft_conf(a->raft, &e);
    qc_members ms;
    if (list_in_effect(a, &ms) != QC_OK) return;
    /* The first leader writes the config's peers down as the list. */
    if (!e.index) {
        if (propose_list(a, &ms) == QC_OK) qc_log(QC_LOG_INFO, "member", "member list written");
        qc_members_free(&ms);
        return;
    }
    size_t voting = 0;
    for (size_t i = 0; i < ms.n; i++) voting += ms.v[i].voting != 0;
    for (size_t i = 0; i < ms.n; i++) {
        qc_member_rec *r = &ms.v[i];
        uint64_t id = qc_hash_id(r->identifier);
        member *m = member_by_id(a, id);
        /* A learner that asked to vote and has caught up is promoted. */
        if (!r->voting && r->role != QC_MROLE_LEARNER && id != a->self_id &&
            voting < (size_t)a->cfg.max_voters &&
            qc_raft_match(a->raft, id) >= qc_raft_commit(a->raft) && qc_raft_commit(a->raft)) {
            r->voting = 1;
            if (propose_list(a, &ms) == QC_OK)
                qc_log(QC_LOG_INFO, "member", "%s caught up: now a voter", r->identifier);
            break;
        }
        /* A member down longer than reap_after is removed. */
        if (m && a->cfg.reap_after_ms > 0 && m->down_since &&
            now - m->down_since >= (uint64_t)a->cfg.reap_after_ms) {
            char *who = strdup(r->identifier);
            if (who && qc_members_remove(&ms, who) == QC_OK && propose_list(a, &ms) == QC_OK)
                qc_log(QC_LOG_WARN, "member", "%s was down for %.0f s: removed", who,
                       a->cfg.reap_after_ms / 1000.0);
            free(who);
            break;
        }
    }
    qc_members_free(&ms);
}

static void transfer_ignore(void *arg, int rc)
{
    (void)arg;
    (void)rc;
}

/* A caught-up member of higher priority takes over (preempt). */
static void maybe_preempt(qc_agent *a, uint64_t now)
{
    member *best = NULL;
    for (size_t i = 0; i < a->n_members; i++) {
        member *m = &a->members[i];
        if (!m->up || !m->voting || m->role != QC_MROLE_VOTER || m->priority <= a->cfg.priority ||
            qc_raft_match(a->raft, m->id) < qc_raft_last_index(a->raft))
            continue;
        if (!best || m->priority > best->priority) best = m;
    }
    if (!best) {
        a->preempt_since = 0;
        return;
    }
    if (!a->preempt_since) a->preempt_since = now;
    if (now - a->preempt_since < (uint64_t)a->cfg.preempt_delay_ms || a->transfers) return;
    qc_log(QC_LOG_INFO, "member", "%s has a higher priority (%d): handing leadership over",
           best->identifier, best->priority);
    if (start_transfer(a, best->id, QC_DEMOTE_TRANSFER, transfer_ignore, NULL) == QC_OK)
        a->preempt_since = 0;
}

/* This node's own record in the list: ask for a change when it differs
 * from what this node wants (role, priority, metadata, address). */
static void self_duties(qc_agent *a)
{
    int at = qc_members_find(&a->applied, a->cfg.identifier);
    if (at < 0) return;
    const qc_member_rec *r = &a->applied.v[at];
    qc_member_rec want = self_rec(a, r->voting);
    if (rec_same(r, &want)) return;
    ask_leader(a, QC_MEMBER_OP_UPDATE, &want);
}

static void on_member_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_agent *a = w->data;
    uint64_t now = qc_now_ms();
    for (size_t i = 0; i < a->n_members; i++) {
        member *m = &a->members[i];
        if (m->up)
            m->down_since = 0;
        else if (!m->down_since)
            m->down_since = now;
    }
    /* Joined once the applied list names us (an appended entry may yet be
     * undone by a new leader). */
    if (qc_members_find(&a->applied, a->cfg.identifier) < 0) {
        if (now >= a->join_wait_until) join_next(a);
        if (!is_member(a)) return;
    }
    forget_members(a);
    if (view_is_leader(a)) {
        leader_duties(a, now);
        if (a->cfg.preempt) maybe_preempt(a, now);
    } else {
        a->preempt_since = 0;
    }
    self_duties(a);
    /* Leaves still waiting: ask again (the leader may have been busy). */
    for (member_wait *mw = a->member_waits; mw; mw = mw->next) {
        if (mw->op != QC_MEMBER_OP_LEAVE) continue;
        qc_member_rec rec = {.identifier = mw->identifier, .metadata = "{}"};
        ask_leader(a, QC_MEMBER_OP_LEAVE, &rec);
    }
    process(a);
}

/* ---- transport callbacks ---------------------------------------------- */

static void on_msg(void *ud, const qc_msg *m)
{
    qc_agent *a = ud;
    int rc = qc_raft_step(a->raft, m, qc_now_ms());
    if (rc && rc != QC_ENOMEM)
        qc_log(QC_LOG_DEBUG, "raft", "dropped %s from %s: %s", qc_raft_msg_name(m->type),
               name_of(a, m->from), qc_strerror(rc));
    kick(a);
}

static void on_hello(void *ud, uint64_t peer, const char *metadata)
{
    qc_agent *a = ud;
    member *m = member_by_id(a, peer);
    qc_entry conf;
    qc_raft_conf(a->raft, &conf);
    if (!m || conf.index) return; /* the replicated list says what it announced */
    char *merged = merge_metadata(m->conf_metadata, metadata);
    if (!merged) {
        qc_log(QC_LOG_WARN, "agent", "ignoring metadata announced by %s: not a JSON object",
               m->identifier);
        return;
    }
    free(m->metadata);
    m->metadata = merged;
}

/* Proof the peer left (its process died or it closed on us): the fast path. */
static void on_peer_closed(void *ud, uint64_t peer)
{
    qc_agent *a = ud;
    qc_raft_link(a->raft, peer, QC_LINK_GONE, qc_now_ms());
    kick(a);
}

static void on_link(void *ud, uint64_t peer, int up)
{
    qc_agent *a = ud;
    member *m = member_by_id(a, peer);
    if (!m) return;
    m->up = up;
    qc_log(up ? QC_LOG_INFO : QC_LOG_WARN, "net", "peer %s is %s", m->identifier,
           up ? "reachable" : "unreachable");
    qc_metrics_set(a->metrics, "qcluster_peer_up", "peer", m->identifier, up);
    qc_raft_link(a->raft, peer, up ? QC_LINK_UP : QC_LINK_DOWN, qc_now_ms());
    qc_peer_info p;
    member_info(a, m, &p);
    fire(a, &(qc_hook_event){.hook = up ? "on_peer_up" : "on_peer_down", .peer = &p});
    kick(a);
}

/* ---- signals and life cycle ------------------------------------------- */

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    (void)loop;
    qc_agent *a = w->data;
    want_stop(a, w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_agent *a = w->data;
    char err[512];
    if (qc_lua_reload_hooks(a->lua, err, sizeof err) == QC_OK)
        qc_log(QC_LOG_INFO, "agent", "hooks reloaded");
    else
        qc_log(QC_LOG_ERROR, "agent", "hooks not reloaded, the old ones stay: %s", err);
}

static void declare_metrics(qc_metrics *m)
{
    qc_metrics_declare(m, "qcluster_is_leader", QC_METRIC_GAUGE,
                       "1 when this node is the leader and its lease holds");
    qc_metrics_declare(m, "qcluster_term", QC_METRIC_GAUGE, "Current raft term");
    qc_metrics_declare(m, "qcluster_leader_changes_total", QC_METRIC_COUNTER,
                       "Changes of the leader this node knows (also to none)");
    qc_metrics_declare(m, "qcluster_elections_total", QC_METRIC_COUNTER,
                       "Elections this node started as a candidate");
    qc_metrics_declare(m, "qcluster_peer_up", QC_METRIC_GAUGE, "1 when the peer is reachable");
    qc_metrics_declare(m, "qcluster_store_errors_total", QC_METRIC_COUNTER,
                       "Failed writes of the durable state");
    qc_metrics_declare(m, "qcluster_commit_index", QC_METRIC_GAUGE,
                       "Highest log index known committed");
    qc_metrics_declare(m, "qcluster_applied_index", QC_METRIC_GAUGE,
                       "Highest log index applied to the key-value store");
    qc_metrics_declare(m, "qcluster_fsync_duration_seconds", QC_METRIC_HISTOGRAM,
                       "Time of one fsync of the log (a batch of entries)");
    qc_metrics_add(m, "qcluster_leader_changes_total", NULL, NULL, 0);
    qc_metrics_add(m, "qcluster_elections_total", NULL, NULL, 0);
    qc_metrics_add(m, "qcluster_store_errors_total", NULL, NULL, 0);
}

static int setup_members(qc_agent *a)
{
    a->self_id = qc_hash_id(a->cfg.identifier);
    a->members = calloc(QC_RAFT_MAX_MEMBERS, sizeof *a->members);
    if (!a->members) return QC_ENOMEM;
    /* A node that joins learns its peers from the cluster, not the config. */
    for (size_t i = 0; i < a->cfg.n_peers && !a->cfg.join_set; i++) {
        const qc_peer_conf *pc = &a->cfg.peers[i];
        member *m = &a->members[a->n_members++];
        m->identifier = strdup(pc->identifier);
        m->host = strdup(pc->host);
        m->port = pc->port;
        m->conf_metadata = strdup(pc->metadata ? pc->metadata : "{}");
        m->role = pc->role;
        m->priority = pc->priority;
        m->voting = 1; /* the first start's membership: every peer votes */
        m->id = qc_hash_id(pc->identifier);
        if (!m->identifier || !m->host || !m->conf_metadata) return QC_ENOMEM;
        if (m->id == a->self_id || member_by_id(a, m->id) != m) {
            qc_log(QC_LOG_ERROR, "agent", "identifier %s collides with another: rename it",
                   pc->identifier);
            return QC_EINVAL;
        }
    }
    return QC_OK;
}

static int start_raft(qc_agent *a)
{
    qc_hard_state hs;
    int rc = qc_store_load(a->store, &hs);
    if (rc == QC_ECORRUPT) {
        qc_log(QC_LOG_ERROR, "store",
               "%s/state is corrupt; refusing to start (restore it or "
               "remove the node's data_dir to rejoin as new)",
               qc_store_dir(a->store));
        return rc;
    }
    if (rc != QC_OK && rc != QC_ENOTFOUND) {
        qc_log(QC_LOG_ERROR, "store", "cannot read %s/state: %s", qc_store_dir(a->store),
               strerror(errno));
        return rc;
    }
    uint64_t ids[a->n_members + 1];
    ids[0] = a->self_id;
    for (size_t i = 0; i < a->n_members; i++) ids[i + 1] = a->members[i].id;
    qc_raft_config rc_cfg = {
        .id = a->self_id,
        .peers = ids,
        .n_peers = a->cfg.join_set ? 0 : a->n_members + 1,
        .no_lead = a->cfg.role != QC_MROLE_VOTER || a->cfg.priority == 0,
        .heartbeat_ms = (uint32_t)a->cfg.heartbeat_ms,
        .election_ms = (uint32_t)a->cfg.election_timeout_ms,
        .seed = qc_now_ms() ^ ((uint64_t)getpid() << 32),
    };
    if (rc == QC_OK)
        qc_log(QC_LOG_INFO, "store", "resuming at term %llu", (unsigned long long)hs.term);
    rc = qc_raft_new(&rc_cfg, rc == QC_OK ? &hs : NULL, qc_now_ms(), &a->raft);
    return rc ? rc : qc_replica_restore(a->replica, a->raft);
}

static void on_kv_change(void *ud, const uint8_t *key, size_t klen, const uint8_t *value,
                         size_t vlen, int has_value, uint64_t revision)
{
    qc_agent *a = ud;
    fire(a, &(qc_hook_event){.hook = "on_kv_change",
                             .key = key,
                             .klen = klen,
                             .value = value,
                             .vlen = vlen,
                             .has_value = has_value,
                             .revision = revision});
}

/* A follower's write: through the leader's link (it proposes it). */
static int forward_to_leader(void *ud, const uint8_t *cmd, size_t len)
{
    qc_agent *a = ud;
    uint64_t leader = leader_id(a);
    if (!leader || leader == a->self_id) return -1;
    return qc_net_send_frame(a->net, leader, QC_FRAME_FORWARD, cmd, len) == QC_OK ? 0 : -1;
}

static int send_read_frame(qc_agent *a, uint64_t to, const qc_read_index *ri)
{
    uint8_t msg[QC_WIRE_READ_INDEX_LEN];
    qc_wire_pack_read_index(ri, msg);
    return qc_net_send_frame(a->net, to, QC_FRAME_READ_INDEX, msg, sizeof msg);
}

/* A follower's linearizable read: the leader names the index to wait for. */
static int ask_read_point(void *ud, uint64_t id)
{
    qc_agent *a = ud;
    uint64_t leader = leader_id(a);
    if (!leader || leader == a->self_id) return -1;
    return send_read_frame(a, leader, &(qc_read_index){.id = id}) == QC_OK ? 0 : -1;
}

static void on_read_index(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len)
{
    qc_read_index ri;
    if (qc_wire_unpack_read_index(data, len, &ri) != QC_OK) {
        qc_log(QC_LOG_WARN, "kv", "dropped a malformed read-index frame from %s", name_of(a, peer));
        return;
    }
    if (ri.answer) {
        qc_replica_read_point(a->replica, ri.id, ri.ok, ri.index);
        return;
    }
    ri.answer = 1;
    ri.ok = qc_raft_read_index(a->raft, qc_now_ms(), &ri.index) == QC_OK;
    send_read_frame(a, peer, &ri);
}

/* The leader takes a follower's write: a valid command is proposed as is. */
static void on_forward(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len)
{
    qc_kv_cmd cmd;
    if (qc_kv_decode(data, len, &cmd) != QC_OK || cmd.origin != peer) {
        qc_log(QC_LOG_WARN, "kv", "dropped a malformed write forwarded by %s", name_of(a, peer));
        return;
    }
    int rc = qc_raft_propose(a->raft, data, len, qc_now_ms(), NULL);
    if (rc) /* the follower times out and its client may retry */
        qc_log(QC_LOG_DEBUG, "kv", "write forwarded by %s not taken: %s", name_of(a, peer),
               qc_strerror(rc));
    kick(a);
}

static void on_frame(void *ud, uint64_t peer, int type, const uint8_t *data, size_t len)
{
    if (type == QC_FRAME_FORWARD) on_forward(ud, peer, data, len);
    if (type == QC_FRAME_READ_INDEX) on_read_index(ud, peer, data, len);
    if (type == QC_FRAME_MEMBER) on_member_frame(ud, peer, data, len);
}

static int open_replica(qc_agent *a)
{
    char err[512];
    qc_replica_config rc = {.dir = a->cfg.data_dir,
                            .self_id = a->self_id,
                            .request_timeout_s = 5,
                            .snapshot_every = (uint64_t)a->cfg.snapshot_entries,
                            .max_key = (size_t)a->cfg.kv_max_key,
                            .max_value = (size_t)a->cfg.kv_max_value,
                            .on_change = on_kv_change,
                            .forward = forward_to_leader,
                            .ask_read_point = ask_read_point,
                            .ud = a};
    int code = qc_replica_open(a->loop, &rc, &a->replica, err, sizeof err);
    if (code != QC_OK)
        qc_log(QC_LOG_ERROR, "store",
               "%s: %s; refusing to start (restore the data_dir from a "
               "backup, or remove it to rejoin as a new node)",
               a->cfg.data_dir, err);
    return code;
}

static int start_services(qc_agent *a)
{
    qc_net_config nc = {
        .identifier = a->cfg.identifier,
        .metadata = a->cfg.metadata,
        .listen_host = a->cfg.listen_host,
        .listen_port = a->cfg.listen_port,
        .secret = a->cfg.secret, /* net keeps only a key derived from it */
    };
    qc_net_callbacks cb = {.ud = a,
                           .on_msg = on_msg,
                           .on_hello = on_hello,
                           .on_link = on_link,
                           .on_peer_closed = on_peer_closed,
                           .on_frame = on_frame,
                           .on_join = on_join};
    /* net and api log why they cannot listen themselves. */
    if (qc_net_new(a->loop, &nc, &cb, a->metrics, &a->net) != QC_OK) return QC_EIO;
    for (size_t i = 0; i < a->n_members; i++) {
        member *m = &a->members[i];
        if (qc_net_add_peer(a->net, m->identifier, m->host, m->port) != QC_OK) return QC_ENOMEM;
    }
    if (a->cfg.api_port == 0) return QC_OK;
    if (qc_api_new(a->loop, a->cfg.api_host, a->cfg.api_port, &a->view, a->metrics,
                   a->cfg.api_token, &a->api) != QC_OK)
        return QC_EIO;
    qc_api_set_max_value(a->api, (size_t)a->cfg.kv_max_value);
    return QC_OK;
}

static void start_signals(qc_agent *a)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_start(a->loop, &a->sig_term);
    ev_signal_start(a->loop, &a->sig_int);
    ev_signal_start(a->loop, &a->sig_hup);
}

/* A stopping leader hands over first (fast fail-over), then the hooks run. */
static void on_handover_done(void *arg, int rc)
{
    qc_agent *a = arg;
    if (rc) qc_log(QC_LOG_WARN, "agent", "hand-over at stop did not complete: %s", qc_strerror(rc));
    ev_break(a->loop, EVBREAK_ONE); /* only the stop's own ev_run: maybe a program's loop */
}

/* A stopping leader hands over and stays until the successor is known (two
 * election timeouts at most; a second signal cuts it short), so that its
 * closing links do not start a competing fast election. */
static void on_leave_at_stop(void *arg, int rc, const char *message)
{
    qc_agent *a = arg;
    if (rc)
        qc_log(QC_LOG_WARN, "member", "leaving at stop did not complete: %s",
               message ? message : qc_strerror(rc));
    a->leave_done = 1;
    ev_break(a->loop, EVBREAK_ONE);
}

static void shutdown_agent(qc_agent *a)
{
    a->stopping = 1;
    /* leave_on_stop: out of the cluster first (a leader hands over). */
    if (a->cfg.leave_on_stop && !a->exit_code && is_member(a) && a->n_members &&
        strcmp(a->stop_reason ? a->stop_reason : "", "left the cluster") != 0) {
        start_leave(a, a->cfg.identifier, on_leave_at_stop, a);
        if (!a->leave_done) ev_run(a->loop, 0);
    }
    while (a->member_waits) member_wait_finish(a, a->member_waits, QC_EBUSY, "the agent stopped");
    if (qc_raft_role(a->raft) == QC_ROLE_LEADER) {
        if (start_transfer(a, 0, QC_DEMOTE_SHUTDOWN, on_handover_done, a) == QC_OK)
            ev_run(a->loop, 0);
        else
            qc_raft_step_down(a->raft, qc_now_ms(), QC_DEMOTE_SHUTDOWN);
    }
    process(a);
    qc_net_flush(a->net, 200);
    while (a->transfers) transfer_finish(a, a->transfers, QC_EBUSY);
    fire(a, &(qc_hook_event){.hook = "on_stop", .reason = a->stop_reason});
    qc_lua_drain(a->lua);
}

/* Frees everything the agent runs on and stops its watchers; idempotent,
 * so that a stopped agent is inert on a loop that goes on. */
static void close_agent(qc_agent *a)
{
    if (a->closed) return;
    qc_replica_close(a->replica); /* answers whoever still waits */
    if (a->api) qc_api_free(a->api);
    if (a->net) qc_net_free(a->net);
    if (a->loop) {
        ev_timer_stop(a->loop, &a->raft_timer);
        ev_timer_stop(a->loop, &a->member_timer);
        ev_prepare_stop(a->loop, &a->batch);
        ev_signal_stop(a->loop, &a->sig_term);
        ev_signal_stop(a->loop, &a->sig_int);
        ev_signal_stop(a->loop, &a->sig_hup);
    }
    if (a->lua) qc_lua_free(a->lua);
    qc_raft_free(a->raft);
    qc_store_close(a->store);
    for (size_t i = 0; i < a->n_members; i++) member_clear(&a->members[i]);
    free(a->members);
    qc_members_free(&a->applied);
    free(a->self_metadata);
    free(a->join_leader);
    if (a->cfg_loaded) qc_config_free(&a->cfg);
    qc_metrics_free(a->metrics);
    /* Only what a closed agent still answers with stays (watchers are off). */
    *a = (qc_agent){.loop = a->loop,
                    .exit_code = a->exit_code,
                    .stop_reason = a->stop_reason,
                    .started = a->started,
                    .closed = 1};
}

static int init_agent(qc_agent *a, struct ev_loop *loop)
{
    a->loop = loop; /* NULL: bound when it starts */
    a->view = (qc_view){
        .ud = a,
        .is_leader = view_is_leader,
        .term = view_term,
        .role = view_role,
        .commit_index = view_commit,
        .leader = view_leader,
        .self = view_self,
        .peers = view_peers,
        .transfer = view_transfer,
        .refresh_metrics = refresh_metrics,
        .kv_put = view_kv_put,
        .kv_delete = view_kv_delete,
        .kv_get = view_kv_get,
        .kv_list = view_kv_list,
        .join = view_join,
        .leave = view_leave,
        .set_metadata = view_set_metadata,
    };
    a->metrics = qc_metrics_new();
    if (!a->metrics) return QC_ENOMEM;
    declare_metrics(a->metrics);
    ev_init(&a->raft_timer, on_raft_timer);
    a->raft_timer.data = a;
    ev_prepare_init(&a->batch, on_batch);
    a->batch.data = a;
    ev_init(&a->member_timer, on_member_timer);
    a->member_timer.data = a;
    /* Never started unless asked, but close_agent stops them all. */
    ev_signal_init(&a->sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&a->sig_int, on_stop_signal, SIGINT);
    ev_signal_init(&a->sig_hup, on_hup, SIGHUP);
    a->sig_term.data = a->sig_int.data = a->sig_hup.data = a;
    return qc_lua_new(a->loop, &a->view, a->metrics, &a->lua);
}

int qc_agent_new(struct ev_loop *loop, qc_agent **out)
{
    *out = NULL;
    qc_agent *a = calloc(1, sizeof *a);
    if (!a) return QC_ENOMEM;
    int rc = init_agent(a, loop);
    if (rc != QC_OK) {
        qc_agent_free(a);
        return rc;
    }
    *out = a;
    return QC_OK;
}

void qc_agent_free(qc_agent *a)
{
    if (!a) return;
    close_agent(a);
    free(a);
}

void qc_agent_set_stop_fn(qc_agent *a, qc_agent_stop_fn *fn, void *ud)
{
    a->stop_fn = fn;
    a->stop_ud = ud;
}

void qc_agent_set_turn_fn(qc_agent *a, qc_agent_turn_fn *fn, void *ud)
{
    a->turn_fn = fn;
    a->turn_ud = ud;
}

void qc_agent_set_observer(qc_agent *a, qc_lua_observer_fn *fn, void *ud)
{
    if (a->lua) qc_lua_set_observer(a->lua, fn, ud);
}

int qc_agent_load(qc_agent *a, const char *path, char *err, size_t errlen)
{
    if (a->cfg_loaded || a->closed) return QC_EBUSY;
    int rc = qc_lua_load(a->lua, path, &a->cfg, err, errlen);
    a->cfg_loaded = rc == QC_OK;
    return rc;
}

int qc_agent_load_json(qc_agent *a, const char *name, const char *dir, const char *json, size_t len,
                       char *err, size_t errlen)
{
    if (a->cfg_loaded || a->closed) return QC_EBUSY;
    int rc = qc_lua_load_json(a->lua, name, dir, json, len, &a->cfg, err, errlen);
    a->cfg_loaded = rc == QC_OK;
    return rc;
}

static void log_secret(const qc_agent *a)
{
    if (!a->cfg.secret)
        qc_log(QC_LOG_WARN, "agent",
               "no secret set: cluster traffic is not authenticated, and any node that "
               "reaches the cluster port can take part; set secret or secret_file");
    else if (strlen(a->cfg.secret) < 16)
        qc_log(QC_LOG_WARN, "agent",
               "the secret is shorter than 16 characters: anyone who sees cluster traffic can "
               "test guesses of it offline; use a long random one");
    else
        qc_log(QC_LOG_INFO, "agent", "cluster frames are authenticated with the secret");
}

static int open_store(qc_agent *a)
{
    int rc = qc_store_open(a->cfg.data_dir, &a->store);
    if (rc != QC_OK)
        qc_log(QC_LOG_ERROR, "store", "cannot use data_dir %s: %s", a->cfg.data_dir,
               rc == QC_EBUSY ? "another agent holds its lock" : strerror(errno));
    return rc;
}

int qc_agent_start(qc_agent *a, struct ev_loop *loop, int signals)
{
    if (!a->cfg_loaded || a->started || a->closed) return QC_EINVAL;
    if (!a->loop && !(a->loop = loop ? loop : ev_default_loop(0))) return QC_EIO;
    if (loop && loop != a->loop) return QC_EINVAL;
    qc_lua_attach(a->lua, a->loop);
    a->started = 1;
    qc_log_set_level(a->cfg.log_level);
    log_secret(a);
    int rc = open_store(a);
    if (rc == QC_OK) rc = setup_members(a);
    if (rc == QC_OK) rc = open_replica(a);
    if (rc == QC_OK) rc = start_raft(a);
    if (rc == QC_OK) rc = start_services(a);
    if (rc != QC_OK) return rc;
    if (signals) start_signals(a);
    a->quiet_until = qc_raft_commit(a->raft); /* replayed changes fire no hooks again */
    /* What was applied before the restart: the membership at the applied
     * index (the config's peers when no list is in the log yet). */
    qc_entry conf;
    int at_applied = qc_raft_conf_at(a->raft, qc_raft_applied(a->raft), &conf) == QC_OK;
    if (at_applied && conf.index)
        qc_members_decode(conf.data, conf.len, &a->applied);
    else if (at_applied)
        list_in_effect(a, &a->applied);
    double every = a->cfg.election_timeout_ms / 3000.0;
    ev_timer_set(&a->member_timer, 0., every); /* a joining node asks at once */
    ev_timer_start(a->loop, &a->member_timer);
    qc_log(QC_LOG_INFO, "agent", "%s listening on %s:%d (api %s:%d), %zu peers", a->cfg.identifier,
           a->cfg.listen_host, a->cfg.listen_port, a->cfg.api_host, a->cfg.api_port, a->n_members);
    qc_peer_info self;
    self_info(a, &self);
    fire(a, &(qc_hook_event){.hook = "on_start", .self = &self});
    arm_timer(a);
    a->running = 1;
    return QC_OK;
}

int qc_agent_stop(qc_agent *a, const char *reason)
{
    if (a->closed) return a->exit_code;
    if (a->stopping) return QC_EBUSY; /* from inside its own stop */
    if (a->running) {
        if (!a->stop_reason) a->stop_reason = reason;
        qc_log(QC_LOG_INFO, "agent", "stopping (%s)", a->stop_reason ? a->stop_reason : "?");
        shutdown_agent(a);
    }
    close_agent(a);
    return a->exit_code;
}

int qc_agent_is_leader(qc_agent *a) { return !a->closed && view_is_leader(a); }

int qc_agent_leader(qc_agent *a, qc_peer_info *out)
{
    return a->closed ? QC_ENOLEADER : view_leader(a, out);
}

int qc_agent_stopped(const qc_agent *a) { return a->closed; }

/* Lua configs may call the qcluster module: answer as a node that has not
 * started (no leader, term 0). */
int qc_agent_check(const char *path)
{
    qc_agent *a;
    char err[1024];
    struct ev_loop *loop = ev_default_loop(0); /* a Lua config may call after() */
    if (!loop || qc_agent_new(loop, &a) != QC_OK) {
        qc_log(QC_LOG_ERROR, "agent", "cannot check: out of memory");
        return 1;
    }
    int code = qc_agent_load(a, path, err, sizeof err) == QC_OK ? 0 : 2;
    if (code == 0)
        printf("%s: valid (%s, %zu peers)\n", path, a->cfg.identifier, a->cfg.n_peers);
    else
        fprintf(stderr, "%s\n", err);
    qc_agent_free(a);
    return code;
}
