/* The agent: one libev loop carrying the consensus core's outputs out in
 * the order raft.h demands (persist, then send, then hooks and metrics),
 * answering the API and the Lua host through qc_view. Glue, not logic: it
 * never decides anything about leadership itself, and leaves the member list
 * to membership.c, which it drives as that module's host (membership.h). */
#include "agent/agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agenthistory.h"
#include "agent/health.h"
#include "agent/membership.h"
#include "agent/peerhealth.h"
#include "api/api.h"
#include "base/common.h"
#include "base/log.h"
#include "base/metrics.h"
#include "core/members.h"
#include "core/raft.h"
#include "core/wire.h"
#include "lua/config.h"
#include "lua/luahost.h"
#include "net/net.h"
#include "store/replica.h"
#include "store/store.h"
#include "store/wal.h"

typedef struct pending_transfer pending_transfer;

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
    uint64_t api_term;  /* the term long-polls were last told of (qc_api_notify) */
    uint64_t api_lead;  /* and the leader the view named then (0: none) */
    qc_tls *api_tls;    /* made at load (the files checked), handed to api at start */
    qc_health *health;  /* this node's checks (NULL before the start) */
    int healthy;        /* every check passes (always with none) and no hook is stuck */
    int checks_healthy; /* the checks' verdict alone */
    int hook_stuck;     /* a hook has run past hook_stuck_ms (luahost.c) */
    /* The last APPEND from the leader (scripts/bench/hooks reads the gaps
     * between them from the debug log). */
    uint64_t append_from, append_us;
    qc_peerhealth peerhealth; /* every member's health, spread to the peers */
    qc_membership *members;   /* the member table and list, driven as its host */
    uint64_t self_id;
    qc_view view;
    ev_timer raft_timer;
    ev_timer member_timer; /* qc_membership_tick */
    ev_prepare batch;      /* runs qc_agent_process() once a loop turn's input is all in */
    ev_signal sig_term, sig_int, sig_hup;
    pending_transfer *transfers;
    qc_replica *replica;
    /* Writes handed to the writer thread (walq.h): the newest one's number
     * and the newest durable; the newest write that messages must wait for
     * (a ready's not allowed early), and those waiting, oldest first. */
    uint64_t write_seq, durable_seq, barrier_seq;
    struct held_msgs *held, *held_tail;
    /* Raft events of readies whose new term or vote was not durable at
     * once (an install ahead of it), and those after them, oldest first. */
    struct held_events *held_ev, *held_ev_tail;
    int leave_done;    /* the leave at stop is answered */
    int handover_done; /* the hand-over at stop is answered */
    int in_stop_run;   /* inside the stop's own ev_run: only it may be broken */
    int relaying;      /* leading only as a relay (no hooks) */
    int exit_code;     /* non-zero: stopping after a failure */
    const char *stop_reason;
    qc_agent_stop_fn *stop_fn; /* who stops it when it wants to stop */
    void *stop_ud;
    qc_agent_turn_fn *turn_fn; /* told after each processing turn */
    void *turn_ud;
    int wal_threadless; /* no WAL writer thread (qc_agent_set_wal_thread) */
    int started, running, stopping, closed;
    qc_agenthistory history;
};

/* Used before their definitions (the file reads top-down by concern). */
static void qc_agent_process(qc_agent *a);
static void qc_agent_kick(qc_agent *a);
static void qc_agent_fire(qc_agent *a, const qc_hook_event *ev);
static const char *qc_agent_name_of(qc_agent *a, uint64_t id);
static int qc_agent_start_transfer(qc_agent *a, uint64_t target, int reason,
                                   qc_transfer_done_fn *done, void *arg);

struct pending_transfer {
    struct pending_transfer *next;
    qc_agent *agent;
    uint64_t target; /* 0: whoever wins */
    qc_transfer_done_fn *done;
    void *arg;
    ev_timer timer;
};

/* The agent wants to stop (a signal, a disk failure, removal from the
 * cluster): its owner is told, and stops it from outside this turn. While
 * it stops, a second request cuts the hand-over short. */
/* Breaks the stop's own ev_run, never another: the loop may be a
 * program's, whose ev_run must go on. */
static void stop_break(qc_agent *a)
{
    if (a->in_stop_run) ev_break(a->loop, EVBREAK_ONE);
}

/* Runs the loop until *done (an answer that may already have come). */
static void stop_run(qc_agent *a, const int *done)
{
    if (*done) return;
    a->in_stop_run = 1;
    ev_run(a->loop, 0);
    a->in_stop_run = 0;
}

static void qc_agent_want_stop(qc_agent *a, const char *reason)
{
    a->stop_reason = reason;
    if (a->stopping) {
        stop_break(a);
        return;
    }
    if (a->stop_fn)
        a->stop_fn(a->stop_ud);
    else
        ev_break(a->loop, EVBREAK_ALL);
}

/* ---- members and peers ------------------------------------------------ */

static uint64_t qc_agent_leader_id(const qc_agent *a)
{
    return a->raft ? qc_raft_leader(a->raft) : 0;
}

static void self_info(qc_agent *a, qc_peer_info *out);

static void member_info(qc_agent *a, const qc_peer *m, qc_peer_info *out)
{
    *out = (qc_peer_info){
        .identifier = m->identifier,
        .host = m->host,
        .port = m->port,
        .metadata = m->metadata ? m->metadata : m->conf_metadata,
        .role =
            qc_agent_leader_id(a) == m->id ? "leader" : qc_membership_rest_role(m->role, m->voting),
        .up = m->up,
        .voter = m->voting,
        .priority = m->priority,
    };
    qc_peerhealth_info(&a->peerhealth, m, out);
}

/* Fills out for id; returns NULL when id is nobody we know. */
static const qc_peer_info *peer_info(qc_agent *a, uint64_t id, qc_peer_info *out)
{
    if (!id) return NULL;
    if (id == a->self_id) {
        self_info(a, out);
        return out;
    }
    const qc_peer *m = qc_membership_by_id(a->members, id);
    if (!m) return NULL;
    member_info(a, m, out);
    return out;
}

/* ---- the view (API and Lua) ------------------------------------------- */

static int qc_agent_view_is_leader(void *ud)
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
static int qc_agent_self_voting(const qc_agent *a)
{
    if (!a->raft) return a->cfg.role != QC_MROLE_LEARNER;
    return qc_membership_self_voting(a->members);
}

static const char *view_role(void *ud)
{
    qc_agent *a = ud;
    if (qc_agent_view_is_leader(a)) return "leader";
    qc_role r = a->raft ? qc_raft_role(a->raft) : QC_ROLE_FOLLOWER;
    if ((r == QC_ROLE_CANDIDATE || r == QC_ROLE_PRECANDIDATE) && !a->relaying) return "candidate";
    return qc_membership_rest_role(a->cfg.role, qc_agent_self_voting(a));
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
        .metadata = a->members ? qc_membership_self_metadata(a->members) : "{}",
        .role = view_role(a),
        .up = 1,
        .voter = qc_agent_self_voting(a),
        .is_self = 1,
        .priority = a->cfg.priority,
    };
    qc_peerhealth_self(&a->peerhealth, out);
}

static void view_self(void *ud, qc_peer_info *out) { self_info(ud, out); }

/* The leader readers are told of, 0 for none: a leader whose lease lapsed,
 * or a new one yet to gather it, must not name itself. */
static uint64_t view_leader_id(qc_agent *a)
{
    uint64_t id = qc_agent_leader_id(a);
    return id == a->self_id && !qc_agent_view_is_leader(a) ? 0 : id;
}

static int view_leader(void *ud, qc_peer_info *out)
{
    return peer_info(ud, view_leader_id(ud), out) ? QC_OK : QC_ENOLEADER;
}

/* The members the lists name: one removed is gone for readers at once, even
 * while the table keeps it to tell it so (a leave answered 200 shows). */
static size_t view_peers(void *ud, qc_peer_info *out, size_t max)
{
    qc_agent *a = ud;
    size_t n = 0;
    for (size_t i = 0; a->members && i < qc_membership_count(a->members); i++) {
        const qc_peer *m = qc_membership_at(a->members, i);
        if (m->removed) continue;
        if (n < max) member_info(a, m, &out[n]);
        n++;
    }
    return n;
}

static void refresh_metrics(void *ud)
{
    qc_agent *a = ud;
    qc_metrics_set(a->metrics, "qcluster_is_leader", NULL, NULL, qc_agent_view_is_leader(a));
    qc_metrics_set(a->metrics, "qcluster_term", NULL, NULL, (double)view_term(a));
    qc_metrics_set(a->metrics, "qcluster_commit_index", NULL, NULL, (double)view_commit(a));
    qc_metrics_set(a->metrics, "qcluster_applied_index", NULL, NULL,
                   a->replica ? (double)qc_replica_applied(a->replica) : 0);
    for (size_t i = 0; a->members && i < qc_membership_count(a->members); i++) {
        const qc_peer *m = qc_membership_at(a->members, i);
        qc_metrics_set(a->metrics, "qcluster_peer_up", "peer", m->identifier, m->up);
    }
}

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
static int qc_agent_start_transfer(qc_agent *a, uint64_t target, int reason,
                                   qc_transfer_done_fn *done, void *arg)
{
    pending_transfer *t = calloc(1, sizeof *t);
    if (!t) return QC_ENOMEM;
    int rc = qc_raft_transfer(a->raft, target, qc_now_ms(), reason);
    if (rc) {
        free(t);
        return rc;
    }
    qc_log(QC_LOG_INFO, "agent", "handing leadership over to %s",
           target ? qc_agent_name_of(a, target) : "the best peer");
    *t = (pending_transfer){
        .next = a->transfers, .agent = a, .target = target, .done = done, .arg = arg};
    ev_timer_init(&t->timer, on_transfer_timeout, 2.0 * a->cfg.election_timeout_ms / 1000.0, 0);
    t->timer.data = t;
    ev_timer_start(a->loop, &t->timer);
    a->transfers = t;
    qc_agent_kick(a);
    return QC_OK;
}

static void view_transfer(void *ud, const char *to, qc_transfer_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    uint64_t target = 0;
    if (to && *to) {
        if (a->cfg.identifier && strcmp(to, a->cfg.identifier) == 0) {
            done(arg, qc_agent_view_is_leader(a) ? QC_OK : QC_ENOTLEADER);
            return;
        }
        const qc_peer *m = qc_membership_by_name(a->members, to);
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
    int rc = qc_agent_start_transfer(a, target, QC_DEMOTE_TRANSFER, done, arg);
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
    qc_agent_kick(a);
}

static void view_kv_delete(void *ud, const uint8_t *key, size_t klen, int64_t cas,
                           qc_kv_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (kv_unavailable(a, done, arg)) return;
    qc_replica_write(a->replica, a->raft, QC_KV_OP_DELETE, key, klen, NULL, 0, cas, qc_now_ms(),
                     done, arg);
    qc_agent_kick(a);
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

/* ---- health ------------------------------------------------------------ */

/* The node's health is its checks' verdict and no stuck hook: applies a
 * change of it (check: what changed it, for on_health_change). */
static void apply_health(qc_agent *a, const qc_check_info *check)
{
    int healthy = a->checks_healthy && !a->hook_stuck;
    if (healthy == a->healthy) return;
    a->healthy = healthy;
    qc_metrics_set(a->metrics, "qcluster_healthy", NULL, NULL, healthy);
    qc_agenthistory_note(&a->history, healthy ? "healthy" : "unhealthy", a->cfg.identifier,
                         a->hook_stuck ? "hook_stuck" : "checks");
    /* An unhealthy node stops standing for election; a leader hands over. */
    qc_raft_set_healthy(a->raft, healthy, qc_now_ms());
    qc_agent_kick(a);
    qc_peerhealth_changed(&a->peerhealth);
    qc_agent_fire(a, &(qc_hook_event){.hook = "on_health_change",
                                      .has_health = 1,
                                      .healthy = healthy,
                                      .check = check->name,
                                      .status = check->passing ? "passing" : "failing",
                                      .output = check->output});
}

static void qc_agent_health_changed(qc_agent *a, int healthy, const qc_check_info *check)
{
    a->checks_healthy = healthy;
    apply_health(a, check);
}

/* A hook stuck past hook_stuck_ms makes the node unhealthy until it
 * returns (README "Hooks"): a leader whose fail-over routine hangs hands
 * leadership over like one whose check fails. */
static void on_hook_stuck(void *ud, int stuck, const char *hook)
{
    qc_agent *a = ud;
    char out[96];
    snprintf(out, sizeof out, "%s %s", hook, stuck ? "is stuck" : "returned");
    qc_check_info c = {.name = "hook", .kind = "hook", .passing = !stuck, .output = out};
    a->hook_stuck = stuck;
    apply_health(a, &c);
}

static void on_health_change(void *ud, int healthy, const qc_check_info *check)
{
    qc_agent_health_changed(ud, healthy, check);
}

/* A check's status changed, the node's health maybe not: peers see it. */
static void on_check_change(void *ud)
{
    qc_agent *a = ud;
    qc_peerhealth_changed(&a->peerhealth);
}

/* A lua check's run goes through the Lua host's queue. */
static int run_lua_check(void *ud, size_t index, uint64_t run)
{
    qc_agent *a = ud;
    return a->lua ? qc_lua_run_check(a->lua, index, run) : QC_EINVAL;
}

static void on_lua_check_done(void *ud, size_t index, uint64_t run, int ok, const char *output,
                              size_t len)
{
    qc_agent *a = ud;
    qc_health_lua_done(a->health, index, run, ok, output, len);
}

static int start_health(qc_agent *a)
{
    qc_health_callbacks cb = {.ud = a,
                              .on_change = on_health_change,
                              .on_check = on_check_change,
                              .run_lua = run_lua_check};
    int rc = qc_health_new(a->loop, a->cfg.checks, a->cfg.n_checks, &cb, a->metrics, &a->health);
    if (rc != QC_OK) return rc;
    qc_lua_set_check_done(a->lua, on_lua_check_done, a);
    qc_lua_set_stuck(a->lua, on_hook_stuck, a);
    a->checks_healthy = qc_health_healthy(a->health);
    a->healthy = a->checks_healthy && !a->hook_stuck;
    qc_metrics_set(a->metrics, "qcluster_healthy", NULL, NULL, a->healthy);
    /* Checks start failing: the core must not stand this node for election
     * before the first verdicts come in. */
    qc_raft_set_healthy(a->raft, a->healthy, qc_now_ms());
    qc_health_start(a->health);
    return QC_OK;
}

static int view_healthy(void *ud)
{
    qc_agent *a = ud;
    return a->health ? a->healthy : a->cfg.n_checks == 0;
}

static size_t view_checks(void *ud, qc_check_info *out, size_t max)
{
    qc_agent *a = ud;
    return qc_health_list(a->health, out, max);
}

static int view_check_report(void *ud, const char *name, int pass, const char *output, size_t len)
{
    qc_agent *a = ud;
    return qc_health_report(a->health, name, pass, output, len);
}

/* ---- carrying out the core's outputs ---------------------------------- */

void qc_agent_fire(qc_agent *a, const qc_hook_event *ev)
{
    if (a->lua && qc_lua_fire(a->lua, ev) != QC_OK)
        qc_log(QC_LOG_ERROR, "agent", "cannot queue hook %s: out of memory", ev->hook);
}

static const char *qc_agent_name_of(qc_agent *a, uint64_t id)
{
    return qc_membership_name_of(a->members, id);
}

static void handle_event(qc_agent *a, const qc_raft_event *e)
{
    qc_peer_info self, leader, prev;
    self_info(a, &self);
    const qc_peer_info *lp = peer_info(a, e->leader, &leader);
    const qc_peer_info *pp = peer_info(a, e->prev_leader, &prev);
    const qc_log_fields lf = {.has_term = 1, .term = e->term, .leader = lp ? lp->identifier : ""};
    qc_agenthistory_raft(&a->history, e, a->relaying);
    switch (e->type) {
    case QC_EVENT_CAMPAIGN:
        qc_metrics_add(a->metrics, "qcluster_elections_total", NULL, NULL, 1);
        qc_logf(QC_LOG_INFO, "raft", &lf, "starting an election for term %llu",
                (unsigned long long)e->term);
        return;
    case QC_EVENT_CONFIG: qc_membership_sync(a->members); return;
    case QC_EVENT_ELECTED:
        if (e->reason) { /* a relay: passes entries on and hands over, no hooks */
            a->relaying = 1;
            qc_logf(QC_LOG_INFO, "raft", &lf, "relaying the log in term %llu, then handing over",
                    (unsigned long long)e->term);
            return;
        }
        qc_logf(QC_LOG_INFO, "raft", &lf, "elected leader for term %llu",
                (unsigned long long)e->term);
        qc_agent_fire(
            a, &(qc_hook_event){
                   .hook = "on_elected", .term = e->term, .self = &self, .previous_leader = pp});
        return;
    case QC_EVENT_DEMOTED:
        if (a->relaying) {
            a->relaying = 0;
            return;
        }
        qc_logf(QC_LOG_INFO, "raft", &lf, "no longer leader in term %llu (%s)",
                (unsigned long long)e->term, qc_raft_reason_name(e->reason));
        qc_agent_fire(a, &(qc_hook_event){.hook = "on_demoted",
                                          .term = e->term,
                                          .reason = qc_raft_reason_name(e->reason),
                                          .leader = lp});
        return;
    case QC_EVENT_LEADER:
        qc_metrics_add(a->metrics, "qcluster_leader_changes_total", NULL, NULL, 1);
        qc_logf(QC_LOG_INFO, "raft", &lf, "leader is %s (term %llu)",
                qc_agent_name_of(a, e->leader), (unsigned long long)e->term);
        qc_agent_fire(a, &(qc_hook_event){.hook = "on_leader_change",
                                          .term = e->term,
                                          .leader = lp,
                                          .previous_leader = pp});
        if (e->leader) settle_transfers(a, e->leader);
        if (a->api) qc_api_notify(a->api);
        return;
    }
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
    qc_agent_want_stop(a, "disk failure");
}

/* Messages of one ready that wait for the writes handed out up to seq
 * (deep copies: the core's memory moves on meanwhile). */
typedef struct held_msgs {
    struct held_msgs *next;
    uint64_t seq;
    size_t n;
    qc_msg *msgs; /* one block with their entries and data */
} held_msgs;

/* Keeps rd's messages until write seq is durable. Out of memory they are
 * dropped, as a lossy network would: raft sends again. */
static void hold_msgs(qc_agent *a, const qc_ready *rd, uint64_t seq)
{
    size_t bytes = sizeof(held_msgs) + rd->n_msgs * sizeof(qc_msg);
    for (size_t i = 0; i < rd->n_msgs; i++)
        for (uint32_t k = 0; k < rd->msgs[i].n_entries; k++)
            bytes += sizeof(qc_entry) + rd->msgs[i].entries[k].len;
    held_msgs *h = malloc(bytes);
    if (!h) {
        qc_log(QC_LOG_ERROR, "agent", "out of memory: %zu messages dropped", rd->n_msgs);
        return;
    }
    *h = (held_msgs){.seq = seq, .n = rd->n_msgs, .msgs = (qc_msg *)(h + 1)};
    uint8_t *p = (uint8_t *)(h->msgs + rd->n_msgs);
    for (size_t i = 0; i < rd->n_msgs; i++) {
        const qc_msg *m = &rd->msgs[i];
        h->msgs[i] = *m;
        if (!m->n_entries) continue;
        qc_entry *e = (qc_entry *)p;
        p += m->n_entries * sizeof *e;
        for (uint32_t k = 0; k < m->n_entries; k++) {
            e[k] = m->entries[k];
            e[k].data = p;
            if (e[k].len) memcpy(p, m->entries[k].data, e[k].len);
            p += e[k].len;
        }
        h->msgs[i].entries = e;
    }
    if (a->held_tail)
        a->held_tail->next = h;
    else
        a->held = h;
    a->held_tail = h;
}

static void send_all(qc_agent *a, const qc_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) qc_net_send(a->net, &msgs[i]);
}

/* Frees the held messages, sending those whose writes are durable (all:
 * none sent, at close). */
static void release_held(qc_agent *a, int send)
{
    while (a->held && (!send || a->held->seq <= a->durable_seq)) {
        held_msgs *h = a->held;
        if (send) send_all(a, h->msgs, h->n);
        a->held = h->next;
        if (!a->held) a->held_tail = NULL;
        free(h);
    }
}

/* Events of one ready that wait for write seq: hooks see only durable
 * transitions. */
typedef struct held_events {
    struct held_events *next;
    uint64_t seq;
    size_t n;
    qc_raft_event ev[];
} held_events;

/* Keeps n events until write seq is durable; 0, or -1 out of memory
 * (logged: they are not handled, as when they could not be copied). */
static int hold_events(qc_agent *a, const qc_raft_event *ev, size_t n, uint64_t seq)
{
    held_events *h = malloc(sizeof *h + n * sizeof *ev);
    if (!h) {
        qc_log(QC_LOG_ERROR, "agent", "out of memory: %zu events not handled", n);
        return -1;
    }
    h->next = NULL;
    h->seq = seq;
    h->n = n;
    memcpy(h->ev, ev, n * sizeof *ev);
    if (a->held_ev_tail)
        a->held_ev_tail->next = h;
    else
        a->held_ev = h;
    a->held_ev_tail = h;
    return 0;
}

/* Frees the held events, handling those whose writes are durable (none,
 * at close). */
static void release_events(qc_agent *a, int handle)
{
    while (a->held_ev && (!handle || a->held_ev->seq <= a->durable_seq)) {
        held_events *h = a->held_ev;
        a->held_ev = h->next;
        if (!a->held_ev) a->held_ev_tail = NULL;
        for (size_t i = 0; handle && i < h->n; i++) handle_event(a, &h->ev[i]);
        free(h);
    }
}

/* Takes the writer's progress: fsync times to the histogram, the leader's
 * snapshots installed meanwhile into the state machine, then the messages
 * that waited leave. *index, *term: the newest durable entry for
 * qc_raft_persisted. -1 when a write failed (errno set), -2 when an
 * install did (logged). Outside a ready only. */
static int writes_done(qc_agent *a, uint64_t *index, uint64_t *term)
{
    qc_walq_progress p;
    qc_replica_progress(a->replica, &p);
    for (size_t i = 0; i < p.n_syncs; i++)
        qc_metrics_observe(a->metrics, "qcluster_fsync_duration_seconds", p.syncs[i]);
    if (p.failed) {
        errno = p.err;
        return -1;
    }
    if (qc_replica_installed(a->replica, a->raft, p.seq, qc_now_ms()) != QC_OK) return -2;
    a->durable_seq = p.seq;
    release_held(a, 1);
    release_events(a, 1);
    *index = p.index;
    *term = p.term;
    return 0;
}

/* The writer thread's ev_async: writes became durable (or failed). */
/* Takes the writer's progress into the core (outside a ready); -1 when the
 * node stops for a failed write or install. */
static int take_writes(qc_agent *a)
{
    uint64_t index = 0, term = 0;
    int rc = writes_done(a, &index, &term);
    if (rc == -2) {
        a->exit_code = 1;
        qc_agent_want_stop(a, "snapshot install failed");
        return -1;
    }
    if (rc != 0) {
        disk_failed(a);
        return -1;
    }
    if (index) qc_raft_persisted(a->raft, index, term);
    return 0;
}

static void on_durable(void *ud)
{
    qc_agent *a = ud;
    if (a->exit_code || take_writes(a) != 0) return;
    qc_replica_deliver(a->replica); /* reads the installs settled */
    qc_agent_process(a);
}

/* Hands rd's writes to the writer thread, a snapshot's install first, and
 * sends its messages: at once when the core allows it (appends, and a
 * follower's answers: they claim only what is durable), else once the
 * writes so far are durable; never before messages held earlier nor
 * before the writes of a ready that was not allowed early. A new term or
 * vote is made durable on the loop before this returns when the writer
 * is idle (*drained set; the caller takes the progress once outside the
 * ready): one fsync per election, not per write. Behind an install or a
 * busy writer it is not waited for (the loop must not stall behind a
 * 20 MB install or a slow disk): the messages are held as those of any
 * ready not allowed early, and the caller holds the events (hooks see
 * only durable transitions) until the writer reports it durable. */
static int carry_out(qc_agent *a, const qc_ready *rd, int *drained)
{
    uint64_t seq;
    if (qc_replica_persist(a->replica, a->raft, rd, &seq) != QC_OK) return -1;
    if (seq) a->write_seq = seq;
    if (qc_replica_submit(a->replica, rd, &seq) != QC_OK) return -1;
    if (seq) a->write_seq = seq;
    if (rd->hard_state_changed) *drained = qc_replica_drain(a->replica);
    /* Even with no message to hold, what a ready not allowed early wrote
     * (a snapshot installed) is what every later message may rely on. */
    if (!rd->msgs_early) a->barrier_seq = a->write_seq;
    /* At least, not equal: the replica's compactions take numbers of the
     * writer's sequence too, so the newest durable one may pass ours. */
    if (!a->held && a->durable_seq >= a->barrier_seq)
        send_all(a, rd->msgs, rd->n_msgs);
    else if (rd->n_msgs)
        hold_msgs(a, rd, a->barrier_seq);
    return 0;
}

static void qc_agent_process(qc_agent *a)
{
    if (a->exit_code) return;
    while (qc_raft_has_ready(a->raft)) {
        qc_ready rd;
        qc_raft_ready(a->raft, &rd);
        qc_replica_prepare(a->replica, &rd);
        int drained = 0;
        if (carry_out(a, &rd, &drained) != 0) {
            disk_failed(a);
            return;
        }
        qc_replica_apply(a->replica, a->raft, &rd, qc_now_ms());
        if (rd.has_snapshot) qc_membership_apply_list(a->members, rd.snapshot_conf);
        for (size_t i = 0; i < rd.n_committed; i++)
            if (rd.committed[i].type == QC_ENTRY_CONFIG)
                qc_membership_apply_list(a->members, &rd.committed[i]);
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
        if (drained && take_writes(a) != 0) {
            if (events != few) free(events);
            return;
        }
        qc_replica_maybe_snapshot(a->replica, a->raft);
        /* After the events held before, in order: behind a term or vote
         * not durable yet (barrier_seq covers its write). */
        if (n && ((rd.hard_state_changed && !drained) || a->held_ev)) {
            hold_events(a, events, n, a->barrier_seq);
            n = 0;
        }
        for (size_t i = 0; i < n; i++) handle_event(a, &events[i]);
        if (events != few) free(events);
        qc_replica_deliver(a->replica);
    }
    /* Long-polls are held on the term and the leader the view names, and
     * either can change with no leader event: the term with a vote granted
     * or a campaign of this node, the leader when this node, elected, gathers
     * its lease (or it lapses). Untold, polls parked on "no leader" in
     * between waited out their wait on the new leader itself. */
    uint64_t vl = view_leader_id(a);
    if (a->api && (qc_raft_term(a->raft) != a->api_term || vl != a->api_lead)) {
        a->api_term = qc_raft_term(a->raft);
        a->api_lead = vl;
        qc_api_notify(a->api);
    }
    arm_timer(a);
    if (a->turn_fn) a->turn_fn(a->turn_ud);
}

static void on_batch(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    ev_prepare_stop(loop, w);
    qc_agent_process(w->data);
}

/* Input reached the core: carry its outputs out at the end of this loop
 * turn, so that every message and request of the turn shares one fsync
 * (group commit) and one batch of messages. */
static void qc_agent_kick(qc_agent *a)
{
    if (!ev_is_active(&a->batch)) ev_prepare_start(a->loop, &a->batch);
}

static void on_raft_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_agent *a = w->data;
    qc_raft_tick(a->raft, qc_now_ms());
    qc_agent_process(a);
}

/* ---- transport callbacks ---------------------------------------------- */

/* A follower's view of the leader's heartbeats: the gap since its last
 * APPEND, at debug level (scripts/bench/hooks measures jitter from it). */
static void note_append(qc_agent *a, const qc_msg *m)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (a->append_from == m->from)
        qc_log(QC_LOG_DEBUG, "raft", "append from %s %.3f ms after the last",
               qc_agent_name_of(a, m->from), (double)(us - a->append_us) / 1000.0);
    a->append_from = m->from;
    a->append_us = us;
}

static void on_msg(void *ud, const qc_msg *m)
{
    qc_agent *a = ud;
    if (m->type == QC_MSG_APPEND) note_append(a, m);
    qc_agenthistory_msg(&a->history, m);
    int rc = qc_raft_step(a->raft, m, qc_now_ms());
    if (rc && rc != QC_ENOMEM)
        qc_log(QC_LOG_DEBUG, "raft", "dropped %s from %s: %s", qc_raft_msg_name(m->type),
               qc_agent_name_of(a, m->from), qc_strerror(rc));
    qc_agent_kick(a);
}

static void on_hello(void *ud, uint64_t peer, const char *metadata)
{
    qc_agent *a = ud;
    qc_membership_on_hello(a->members, peer, metadata);
}

/* Proof the peer left (its process died or it closed on us): the fast path. */
static void on_peer_closed(void *ud, uint64_t peer)
{
    qc_agent *a = ud;
    qc_agenthistory_closed(&a->history, peer);
    qc_raft_link(a->raft, peer, QC_LINK_GONE, qc_now_ms());
    qc_agent_kick(a);
}

static void on_link(void *ud, uint64_t peer, int up)
{
    qc_agent *a = ud;
    qc_peer *m = qc_membership_link(a->members, peer, up);
    if (!m) return;
    qc_logf(up ? QC_LOG_INFO : QC_LOG_WARN, "net", &(qc_log_fields){.peer = m->identifier},
            "peer %s is %s", m->identifier, up ? "reachable" : "unreachable");
    qc_agenthistory_note(&a->history, up ? "peer_up" : "peer_down", m->identifier,
                         up ? "reachable" : "unreachable");
    qc_metrics_set(a->metrics, "qcluster_peer_up", "peer", m->identifier, up);
    qc_peerhealth_link(&a->peerhealth, m, up);
    qc_raft_link(a->raft, peer, up ? QC_LINK_UP : QC_LINK_DOWN, qc_now_ms());
    qc_peer_info p;
    member_info(a, m, &p);
    qc_agent_fire(a, &(qc_hook_event){.hook = up ? "on_peer_up" : "on_peer_down", .peer = &p});
    qc_agent_kick(a);
}

/* ---- signals and life cycle ------------------------------------------- */

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    (void)loop;
    qc_agent *a = w->data;
    qc_agent_want_stop(a, w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* The API's certificate, key and client CA read again from the same files
 * (a renewed certificate): new connections get them, open ones keep theirs. */
static void reload_api_tls(qc_agent *a)
{
    const qc_config *c = &a->cfg;
    qc_tls *t;
    char err[512];
    if (!a->api || !c->api_tls_cert) return;
    if (qc_tls_server_new(c->api_tls_cert, c->api_tls_key, c->api_tls_client_ca, &t, err,
                          sizeof err) != QC_OK) {
        qc_log(QC_LOG_ERROR, "agent", "API certificates not reloaded, the old ones stay: %s", err);
        return;
    }
    qc_api_set_tls(a->api, t);
    qc_log(QC_LOG_INFO, "agent", "API certificates reloaded");
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
    reload_api_tls(a);
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
    /* The node's verdict (checks and stuck hooks), not the checks' alone:
     * the same as /v1/status says, which is what alerts watch. */
    qc_metrics_declare(
        m, "qcluster_healthy", QC_METRIC_GAUGE,
        "1 when the node is healthy: every health check passes and no hook is stuck");
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

/* ---- membership's host (membership.h) ----------------------------------- */

static uint64_t mh_now(void *ud)
{
    (void)ud;
    return qc_now_ms();
}

static void mh_conf(void *ud, qc_entry *out) { qc_raft_conf(((qc_agent *)ud)->raft, out); }

static size_t mh_core_members(void *ud, qc_member *out)
{
    return qc_raft_members(((qc_agent *)ud)->raft, out);
}

static int mh_raft_leader(void *ud)
{
    return qc_raft_role(((qc_agent *)ud)->raft) == QC_ROLE_LEADER;
}

static uint64_t mh_leader(void *ud) { return qc_agent_leader_id(ud); }

static uint64_t mh_commit(void *ud) { return qc_raft_commit(((qc_agent *)ud)->raft); }

static uint64_t mh_last_index(void *ud) { return qc_raft_last_index(((qc_agent *)ud)->raft); }

static uint64_t mh_match(void *ud, uint64_t peer)
{
    return qc_raft_match(((qc_agent *)ud)->raft, peer);
}

static int mh_peer_healthy(void *ud, uint64_t peer)
{
    return qc_raft_peer_healthy(((qc_agent *)ud)->raft, peer);
}

static int mh_propose(void *ud, const uint8_t *data, size_t len)
{
    qc_agent *a = ud;
    int rc = qc_raft_propose_config(a->raft, data, len, qc_now_ms(), NULL);
    if (rc == QC_OK) qc_agent_kick(a);
    return rc;
}

static void mh_link(void *ud, uint64_t peer, int up)
{
    qc_agent *a = ud;
    qc_raft_link(a->raft, peer, up ? QC_LINK_UP : QC_LINK_DOWN, qc_now_ms());
}

static int mh_send(void *ud, uint64_t peer, const uint8_t *data, size_t len)
{
    return qc_net_send_frame(((qc_agent *)ud)->net, peer, QC_FRAME_MEMBER, data, len);
}

static int mh_add_peer(void *ud, const char *identifier, const char *host, int port)
{
    return qc_net_add_peer(((qc_agent *)ud)->net, identifier, host, port);
}

static void mh_remove_peer(void *ud, uint64_t peer)
{
    qc_net_remove_peer(((qc_agent *)ud)->net, peer);
}

static int mh_link_up(void *ud, uint64_t peer)
{
    return qc_net_link_up(((qc_agent *)ud)->net, peer);
}

static int mh_join(void *ud, const char *host, int port, const uint8_t *payload, size_t len,
                   int timeout_ms, qc_net_join_fn *done, void *arg)
{
    return qc_net_join(((qc_agent *)ud)->net, host, port, payload, len, timeout_ms, done, arg);
}

static void mh_fire(void *ud, const qc_hook_event *ev) { qc_agent_fire(ud, ev); }

static void mh_want_stop(void *ud, const char *reason) { qc_agent_want_stop(ud, reason); }

static int mh_transfer(void *ud, uint64_t target, int reason, qc_transfer_done_fn *done, void *arg)
{
    return qc_agent_start_transfer(ud, target, reason, done, arg);
}

static int mh_transferring(void *ud) { return ((qc_agent *)ud)->transfers != NULL; }

static void mh_preempting(void *ud) { qc_agenthistory_preempting(&((qc_agent *)ud)->history); }

static const qc_membership_host membership_host = {
    .now = mh_now,
    .conf = mh_conf,
    .core_members = mh_core_members,
    .raft_leader = mh_raft_leader,
    .lease_leader = qc_agent_view_is_leader,
    .leader = mh_leader,
    .commit = mh_commit,
    .last_index = mh_last_index,
    .match = mh_match,
    .peer_healthy = mh_peer_healthy,
    .propose = mh_propose,
    .link = mh_link,
    .send = mh_send,
    .add_peer = mh_add_peer,
    .remove_peer = mh_remove_peer,
    .link_up = mh_link_up,
    .join = mh_join,
    .fire = mh_fire,
    .want_stop = mh_want_stop,
    .transfer = mh_transfer,
    .transferring = mh_transferring,
    .preempting = mh_preempting,
};

static void on_member_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_agent *a = w->data;
    qc_membership_tick(a->members);
    qc_agent_process(a);
}

static void view_join(void *ud, const char *const *addresses, size_t n, qc_member_done_fn *done,
                      void *arg)
{
    qc_agent *a = ud;
    if (a->members)
        qc_membership_join(a->members, addresses, n, done, arg);
    else
        done(arg, QC_ENOLEADER, "the agent has not started");
}

static void view_leave(void *ud, const char *identifier, qc_member_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (a->members)
        qc_membership_leave(a->members, identifier, done, arg);
    else
        done(arg, QC_ENOLEADER, "the agent has not started");
}

static void view_set_metadata(void *ud, const char *json, qc_member_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (a->members)
        qc_membership_set_metadata(a->members, json, done, arg);
    else
        done(arg, QC_ENOLEADER, "the agent has not started");
}

static size_t view_history(void *ud, int with_events, qc_history_entry *out, size_t max)
{
    qc_agent *a = ud;
    return qc_agenthistory_list(&a->history, with_events, out, max);
}

static int setup_members(qc_agent *a)
{
    a->self_id = qc_hash_id(a->cfg.identifier);
    return qc_membership_setup(a->members, a->loop);
}

/* A missing state file is a fresh start only in a data_dir where no agent
 * got past its first state write: a fresh node writes its state (term 0)
 * first, before qc_replica_open() creates wal/ and snap/, so wal/ or snap/
 * without a state file mean the state was lost. Such a node may have
 * voted, even with an empty log (in a new cluster's first elections),
 * and started afresh it could vote twice in a term: it refuses. A first
 * start killed before its state write leaves only the lock (and maybe
 * state.tmp): that starts afresh. Writing the state first also closes a
 * window: the core's first ready writes entries before the state
 * (qc_agent_process), which would leave a log without a state file. */
static int fresh_hard_state(qc_agent *a, qc_hard_state *hs)
{
    const char *dir = qc_store_dir(a->store);
    int used = qc_wal_present(dir);
    if (used == 1)
        qc_log(QC_LOG_ERROR, "store",
               "%s/state is missing but %s holds a log: this node ran before and, "
               "started afresh, could vote twice in a term it took part in; refusing to start "
               "(restore the state file, or remove the node's data_dir and start it with "
               "join to rejoin as a new member)",
               dir, dir);
    else if (used < 0)
        qc_log(QC_LOG_ERROR, "store", "cannot look into %s: %s", dir,
               used == QC_EIO ? strerror(errno) : qc_strerror(used));
    if (used) return used == 1 ? QC_ECORRUPT : used;
    *hs = (qc_hard_state){0};
    int rc = qc_store_save(a->store, hs);
    if (rc != QC_OK)
        qc_log(QC_LOG_ERROR, "store", "cannot write %s/state: %s", dir, strerror(errno));
    return rc;
}

static int load_hard_state(qc_agent *a, qc_hard_state *hs)
{
    int rc = qc_store_load(a->store, hs);
    if (rc == QC_OK) {
        qc_log(QC_LOG_INFO, "store", "resuming at term %llu", (unsigned long long)hs->term);
        return QC_OK;
    }
    if (rc == QC_ENOTFOUND) return fresh_hard_state(a, hs);
    if (rc == QC_ECORRUPT)
        qc_log(QC_LOG_ERROR, "store",
               "%s/state is corrupt; refusing to start (restore it or "
               "remove the node's data_dir to rejoin as new)",
               qc_store_dir(a->store));
    else
        qc_log(QC_LOG_ERROR, "store", "cannot read or sync %s/state: %s", qc_store_dir(a->store),
               strerror(errno));
    return rc;
}

static int start_raft(qc_agent *a, const qc_hard_state *hs)
{
    size_t n = qc_membership_count(a->members);
    uint64_t ids[n + 1];
    ids[0] = a->self_id;
    for (size_t i = 0; i < n; i++) ids[i + 1] = qc_membership_at(a->members, i)->id;
    qc_raft_config rc_cfg = {
        .id = a->self_id,
        .peers = ids,
        .n_peers = a->cfg.join_set ? 0 : n + 1,
        .no_lead = a->cfg.role != QC_MROLE_VOTER || a->cfg.priority == 0,
        .heartbeat_ms = (uint32_t)a->cfg.heartbeat_ms,
        .election_ms = (uint32_t)a->cfg.election_timeout_ms,
        .seed = qc_now_ms() ^ ((uint64_t)getpid() << 32),
    };
    int rc = qc_raft_new(&rc_cfg, hs, qc_now_ms(), &a->raft);
    a->history.raft = a->raft;
    return rc ? rc : qc_replica_restore(a->replica, a->raft);
}

static void on_kv_change(void *ud, const uint8_t *key, size_t klen, const uint8_t *value,
                         size_t vlen, int has_value, uint64_t revision)
{
    qc_agent *a = ud;
    qc_agent_fire(a, &(qc_hook_event){.hook = "on_kv_change",
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
    uint64_t leader = qc_agent_leader_id(a);
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
    uint64_t leader = qc_agent_leader_id(a);
    if (!leader || leader == a->self_id) return -1;
    return send_read_frame(a, leader, &(qc_read_index){.id = id}) == QC_OK ? 0 : -1;
}

static void on_read_index(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len)
{
    qc_read_index ri;
    if (qc_wire_unpack_read_index(data, len, &ri) != QC_OK) {
        qc_log(QC_LOG_WARN, "kv", "dropped a malformed read-index frame from %s",
               qc_agent_name_of(a, peer));
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
        qc_log(QC_LOG_WARN, "kv", "dropped a malformed write forwarded by %s",
               qc_agent_name_of(a, peer));
        return;
    }
    int rc = qc_raft_propose(a->raft, data, len, qc_now_ms(), NULL);
    if (rc) /* the follower times out and its client may retry */
        qc_log(QC_LOG_DEBUG, "kv", "write forwarded by %s not taken: %s", qc_agent_name_of(a, peer),
               qc_strerror(rc));
    qc_agent_kick(a);
}

static void on_frame(void *ud, uint64_t peer, int type, const uint8_t *data, size_t len)
{
    qc_agent *a = ud;
    if (type == QC_FRAME_FORWARD) on_forward(a, peer, data, len);
    if (type == QC_FRAME_READ_INDEX) on_read_index(a, peer, data, len);
    if (type == QC_FRAME_MEMBER) qc_membership_on_frame(a->members, peer, data, len);
    if (type == QC_FRAME_HEALTH) qc_peerhealth_on_frame(&a->peerhealth, peer, data, len);
}

/* A node that is not a member asks to join. */
static void on_join(void *ud, const char *identifier, const char *host_seen, const uint8_t *payload,
                    size_t len, qc_buf *answer)
{
    qc_agent *a = ud;
    qc_membership_on_join(a->members, identifier, host_seen, payload, len, answer);
}

static int open_replica(qc_agent *a)
{
    char err[512];
    qc_replica_config rc = {.dir = a->cfg.data_dir,
                            .store = a->store,
                            .on_durable = on_durable,
                            .threadless = a->wal_threadless,
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
        .secret = a->cfg.secret, /* net keeps only keys derived from them */
        .secret_previous = a->cfg.secret_previous,
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
    for (size_t i = 0; i < qc_membership_count(a->members); i++) {
        const qc_peer *m = qc_membership_at(a->members, i);
        if (qc_net_add_peer(a->net, m->identifier, m->host, m->port) != QC_OK) return QC_ENOMEM;
    }
    if (a->cfg.api_port == 0) return QC_OK;
    if (qc_api_new(a->loop, a->cfg.api_host, a->cfg.api_port, &a->view, a->metrics,
                   a->cfg.api_token, &a->api) != QC_OK)
        return QC_EIO;
    qc_api_set_max_value(a->api, (size_t)a->cfg.kv_max_value);
    if (a->api_tls) qc_api_set_tls(a->api, a->api_tls);
    a->api_tls = NULL;
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
    a->handover_done = 1;
    stop_break(a);
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
    stop_break(a);
}

static void shutdown_agent(qc_agent *a)
{
    a->stopping = 1;
    /* leave_on_stop: out of the cluster first (a leader hands over). */
    if (a->cfg.leave_on_stop && !a->exit_code && qc_membership_is_member(a->members) &&
        qc_membership_count(a->members) &&
        strcmp(a->stop_reason ? a->stop_reason : "", "left the cluster") != 0) {
        qc_membership_leave(a->members, NULL, on_leave_at_stop, a);
        stop_run(a, &a->leave_done);
    }
    qc_membership_cancel_waits(a->members, QC_EBUSY, "the agent stopped");
    if (qc_raft_role(a->raft) == QC_ROLE_LEADER) {
        if (qc_agent_start_transfer(a, 0, QC_DEMOTE_SHUTDOWN, on_handover_done, a) == QC_OK)
            stop_run(a, &a->handover_done);
        else
            qc_raft_step_down(a->raft, qc_now_ms(), QC_DEMOTE_SHUTDOWN);
    }
    qc_agent_process(a);
    qc_net_flush(a->net, 200);
    while (a->transfers) transfer_finish(a, a->transfers, QC_EBUSY);
    qc_agent_fire(a, &(qc_hook_event){.hook = "on_stop", .reason = a->stop_reason});
    qc_lua_drain(a->lua);
}

/* Frees everything the agent runs on and stops its watchers; idempotent,
 * so that a stopped agent is inert on a loop that goes on. */
static void close_agent(qc_agent *a)
{
    if (a->closed) return;
    qc_replica_close(a->replica); /* answers whoever still waits */
    release_held(a, 0);
    release_events(a, 0);
    if (a->api) qc_api_free(a->api);
    qc_tls_free(a->api_tls);
    qc_health_free(a->health); /* before the Lua host: lua checks answer into it */
    a->health = NULL;
    if (a->lua) qc_lua_set_check_done(a->lua, NULL, NULL);
    if (a->lua) qc_lua_set_stuck(a->lua, NULL, NULL);
    if (a->net) qc_net_free(a->net);
    if (a->loop) {
        ev_timer_stop(a->loop, &a->raft_timer);
        ev_timer_stop(a->loop, &a->member_timer);
        qc_peerhealth_stop(&a->peerhealth);
        ev_prepare_stop(a->loop, &a->batch);
        ev_signal_stop(a->loop, &a->sig_term);
        ev_signal_stop(a->loop, &a->sig_int);
        ev_signal_stop(a->loop, &a->sig_hup);
    }
    if (a->lua) qc_lua_free(a->lua);
    qc_raft_free(a->raft);
    qc_store_close(a->store);
    qc_membership_free(a->members);
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
        .is_leader = qc_agent_view_is_leader,
        .term = view_term,
        .role = view_role,
        .commit_index = view_commit,
        .leader = view_leader,
        .self = view_self,
        .peers = view_peers,
        .transfer = view_transfer,
        .refresh_metrics = refresh_metrics,
        .healthy = view_healthy,
        .checks = view_checks,
        .check_report = view_check_report,
        .history = view_history,
        .kv_put = view_kv_put,
        .kv_delete = view_kv_delete,
        .kv_get = view_kv_get,
        .kv_list = view_kv_list,
        .join = view_join,
        .leave = view_leave,
        .set_metadata = view_set_metadata,
    };
    a->peerhealth =
        (qc_peerhealth){.ud = a, .self_healthy = view_healthy, .self_checks = view_checks};
    qc_membership_host host = membership_host;
    host.ud = a;
    if (qc_membership_new(&a->cfg, &host, &a->members) != QC_OK) return QC_ENOMEM;
    a->history.members = a->members;
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

void qc_agent_set_wal_thread(qc_agent *a, int on) { a->wal_threadless = !on; }

void qc_agent_set_observer(qc_agent *a, qc_lua_observer_fn *fn, void *ud)
{
    if (a->lua) qc_lua_set_observer(a->lua, fn, ud);
}

/* The config's log settings, from the load on: what the process logs
 * before the agent starts (the descriptor limit) is in its format too. */
static void apply_log_config(const qc_agent *a)
{
    qc_log_set_level(a->cfg.log_level);
    qc_log_set_format(a->cfg.log_format);
    qc_log_set_node(a->cfg.identifier);
}

/* A loaded config's API certificates, read now so that `qcluster check` and
 * a start refuse bad ones ("FILE: api_tls_key: PATH: why"); the config is
 * dropped then. */
static int load_api_tls(qc_agent *a, int rc, char *err, size_t errlen)
{
    if (rc != QC_OK || !a->cfg.api_tls_cert) return rc;
    char why[448];
    rc = qc_tls_server_new(a->cfg.api_tls_cert, a->cfg.api_tls_key, a->cfg.api_tls_client_ca,
                           &a->api_tls, why, sizeof why);
    if (rc == QC_OK) return QC_OK;
    snprintf(err, errlen, "%s: %s", a->cfg.path, why);
    qc_config_free(&a->cfg);
    return rc;
}

int qc_agent_load(qc_agent *a, const char *path, char *err, size_t errlen)
{
    if (a->cfg_loaded || a->closed) return QC_EBUSY;
    int rc = load_api_tls(a, qc_lua_load(a->lua, path, &a->cfg, err, errlen), err, errlen);
    a->cfg_loaded = rc == QC_OK;
    if (a->cfg_loaded) apply_log_config(a);
    return rc;
}

int qc_agent_load_json(qc_agent *a, const char *name, const char *dir, const char *json, size_t len,
                       char *err, size_t errlen)
{
    if (a->cfg_loaded || a->closed) return QC_EBUSY;
    int rc = qc_lua_load_json(a->lua, name, dir, json, len, &a->cfg, err, errlen);
    rc = load_api_tls(a, rc, err, errlen);
    a->cfg_loaded = rc == QC_OK;
    if (a->cfg_loaded) apply_log_config(a);
    return rc;
}

static void log_secret(const qc_agent *a)
{
    if (!a->cfg.secret)
        qc_log(QC_LOG_WARN, "agent",
               "no secret set: cluster traffic is neither encrypted nor authenticated, and any "
               "node that reaches the cluster port can take part; set secret or secret_file");
    else if (strlen(a->cfg.secret) < 16)
        qc_log(QC_LOG_WARN, "agent",
               "the secret is shorter than 16 characters: anyone who reaches the cluster port "
               "can test guesses of it offline; use a long random one");
    else
        qc_log(QC_LOG_INFO, "agent", "cluster traffic is encrypted and authenticated");
    if (a->cfg.secret_previous && strlen(a->cfg.secret_previous) < 16)
        qc_log(QC_LOG_WARN, "agent",
               "secret_previous is shorter than 16 characters: anyone who reaches the cluster "
               "port can test guesses of it offline; finish the rotation soon");
    else if (a->cfg.secret_previous)
        qc_log(QC_LOG_INFO, "agent",
               "secret rotation: connections under secret_previous are taken too; drop it once "
               "every node has the new secret");
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
    apply_log_config(a); /* on this thread, before the Lua thread starts: it takes it on */
    qc_lua_attach(a->lua, a->loop);
    a->started = 1;
    log_secret(a);
    qc_hard_state hs;
    int rc = open_store(a);
    if (rc == QC_OK) rc = setup_members(a);
    if (rc == QC_OK) rc = load_hard_state(a, &hs); /* before the log: see fresh_hard_state */
    if (rc == QC_OK) rc = open_replica(a);
    if (rc == QC_OK) rc = start_raft(a, &hs);
    if (rc == QC_OK) rc = start_services(a);
    if (rc == QC_OK) rc = start_health(a);
    if (rc != QC_OK) return rc;
    a->peerhealth.loop = a->loop;
    a->peerhealth.net = a->net;
    a->peerhealth.members = a->members;
    a->peerhealth.history = &a->history;
    a->peerhealth.metrics = a->metrics;
    a->peerhealth.period_ms = (uint64_t)a->cfg.election_timeout_ms;
    qc_peerhealth_start(&a->peerhealth);
    if (signals) start_signals(a);
    /* Replayed changes fire no hooks again. What was applied before the
     * restart: the membership at the applied index (the config's peers
     * when no list is in the log yet). */
    qc_entry conf;
    int at_applied = qc_raft_conf_at(a->raft, qc_raft_applied(a->raft), &conf) == QC_OK;
    qc_membership_begin(a->members, qc_raft_commit(a->raft), at_applied ? &conf : NULL);
    double every = a->cfg.election_timeout_ms / 3000.0;
    ev_timer_set(&a->member_timer, 0., every); /* a joining node asks at once */
    ev_timer_start(a->loop, &a->member_timer);
    char api[QC_MEMBER_HOST_MAX + 32];
    if (a->cfg.api_port)
        snprintf(api, sizeof api, "api %s%s:%d", a->cfg.api_tls_cert ? "https://" : "",
                 a->cfg.api_host, a->cfg.api_port);
    else
        snprintf(api, sizeof api, "api off");
    qc_log(QC_LOG_INFO, "agent", "%s listening on %s:%d (%s), %zu peers", a->cfg.identifier,
           a->cfg.listen_host, a->cfg.listen_port, api, qc_membership_count(a->members));
    qc_peer_info self;
    self_info(a, &self);
    qc_agent_fire(a, &(qc_hook_event){.hook = "on_start", .self = &self});
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

int qc_agent_is_leader(qc_agent *a) { return !a->closed && qc_agent_view_is_leader(a); }

int qc_agent_leader(qc_agent *a, qc_peer_info *out)
{
    return a->closed ? QC_ENOLEADER : view_leader(a, out);
}

uint64_t qc_agent_lease_until(qc_agent *a)
{
    return qc_agent_is_leader(a) ? qc_raft_lease_until(a->raft) : 0;
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
