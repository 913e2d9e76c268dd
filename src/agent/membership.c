/* The agent's membership glue: keeps the member table in step with the
 * replicated list, fires the member hooks, answers join, leave and metadata
 * requests, and runs the member timer (joining, reaping, promotion, preempt).
 * No loop or I/O of its own: frames leave through net, changes through the
 * core's log, and agent.c carries the outputs out. */
#include "agent/agent_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "base/log.h"
#include "core/members.h"
#include "net/net.h"
#include "core/raft.h"
#include "core/wire.h"

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
int qc_membership_list_in_effect(qc_agent *a, qc_members *out)
{
    qc_entry e;
    qc_raft_conf(a->raft, &e);
    memset(out, 0, sizeof *out);
    if (e.index) return qc_members_decode(e.data, e.len, out);
    qc_member core[QC_RAFT_MAX_MEMBERS];
    size_t n = qc_raft_members(a->raft, core);
    for (size_t i = 0; i < n; i++) {
        qc_member_rec rec = self_rec(a, 1);
        const member *m = qc_agent_member_by_id(a, core[i].id);
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
    if (rc == QC_OK) qc_agent_kick(a);
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
    int rc = qc_membership_list_in_effect(a, &ms);
    if (rc) return rc;
    int at = qc_members_find(&ms, rec->identifier);
    if (op == QC_MEMBER_OP_LEAVE) {
        rc = at < 0 ? QC_ENOTFOUND : qc_members_remove(&ms, rec->identifier);
    } else if (op == QC_MEMBER_OP_JOIN && at >= 0) {
        const member *m = qc_agent_member_by_id(a, qc_hash_id(rec->identifier));
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
    uint64_t leader = qc_agent_leader_id(a);
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
void qc_membership_on_frame(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len)
{
    qc_member_request req;
    if (qc_member_request_decode(data, len, &req) != QC_OK) {
        qc_log(QC_LOG_WARN, "member", "dropped a malformed request from %s",
               qc_agent_name_of(a, peer));
        return;
    }
    if (req.op == QC_MEMBER_OP_LEAVE && qc_hash_id(req.rec.identifier) == a->self_id) {
        qc_log(QC_LOG_INFO, "member", "the leader removed this node from the cluster");
        for (member_wait *w = a->member_waits, *next; w; w = next) {
            next = w->next;
            if (w->op == QC_MEMBER_OP_LEAVE && strcmp(w->identifier, a->cfg.identifier) == 0)
                qc_membership_wait_finish(a, w, QC_OK, NULL);
        }
        qc_agent_want_stop(a, "left the cluster");
    } else if (req.op != QC_MEMBER_OP_LEAVE && qc_hash_id(req.rec.identifier) != peer) {
        qc_log(QC_LOG_WARN, "member", "%s asked to change %s: refused, only its own record",
               qc_agent_name_of(a, peer), req.rec.identifier);
    } else if (qc_raft_role(a->raft) == QC_ROLE_LEADER) {
        const char *why = NULL;
        int rc = leader_change(a, req.op, &req.rec, &why);
        if (rc && rc != QC_EBUSY)
            qc_log(QC_LOG_WARN, "member", "request of %s about %s refused: %s",
                   qc_agent_name_of(a, peer), req.rec.identifier, why ? why : qc_strerror(rc));
    }
    qc_member_request_free(&req);
}

/* A node that is not a member asks to join (net's on_join). */
void qc_membership_on_join(void *ud, const char *identifier, const char *host_seen,
                           const uint8_t *payload, size_t len, qc_buf *answer)
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
    } else if (!qc_agent_view_is_leader(a)) {
        member *l = qc_agent_member_by_id(a, qc_agent_leader_id(a));
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
        if (ans.ok) qc_membership_list_in_effect(a, &ans.members);
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
        qc_agent_member_clear(m);
        qc_log(QC_LOG_ERROR, "member", "out of memory adding %s", r->identifier);
        return NULL;
    }
    a->n_members++;
    return m;
}

/* Peers follow the membership: whoever the list in effect or the applied
 * one names (a removed member stays until the leader told it). */
void qc_membership_sync(qc_agent *a)
{
    qc_members ms;
    qc_entry e;
    qc_raft_conf(a->raft, &e);
    if (!e.index || qc_members_decode(e.data, e.len, &ms) != QC_OK) return;
    for (size_t i = 0; i < ms.n; i++) {
        const qc_member_rec *r = &ms.v[i];
        uint64_t id = qc_hash_id(r->identifier);
        if (id == a->self_id) continue;
        member *m = qc_agent_member_by_id(a, id);
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
        m->removed = 0; /* named (again) */
        /* What the member says of itself (the list), merged over what our
         * own config's peers entry says of it. */
        const char *ours = "{}";
        for (size_t k = 0; k < a->cfg.n_peers; k++)
            if (strcmp(a->cfg.peers[k].identifier, r->identifier) == 0 && a->cfg.peers[k].metadata)
                ours = a->cfg.peers[k].metadata;
        char *meta = qc_agent_merge_metadata(ours, r->metadata);
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

/* Whether the member list follows the lists yet: the applied one names this
 * node, or the core counts it (a joining node may replay older lists). */
static int follows_lists(const qc_agent *a)
{
    return qc_members_find(&a->applied, a->cfg.identifier) >= 0 || qc_membership_is_member(a);
}

/* Whether the list in effect (in_effect) or the applied one names m; with
 * no applied list yet, everyone counts. */
static int named(const qc_agent *a, const qc_members *in_effect, const member *m)
{
    return qc_members_find_id(in_effect, m->id) >= 0 ||
           qc_members_find_id(&a->applied, m->id) >= 0 || !a->applied.n;
}

/* Marks the peers neither list names as removed, at once: reads stop
 * showing them as soon as their removal applies (its requester is answered
 * then), while forget_members keeps them until told. */
static void mark_removed(qc_agent *a)
{
    qc_members ms;
    if (!follows_lists(a) || qc_membership_list_in_effect(a, &ms) != QC_OK) return;
    for (size_t i = 0; i < a->n_members; i++)
        a->members[i].removed = !named(a, &ms, &a->members[i]);
    qc_members_free(&ms);
}

/* Drops peers neither list names any more; a leader first tells each that
 * it was removed (it may never learn it from the log), and drops it a timer
 * tick later, once the frame had time to leave. */
static void forget_members(qc_agent *a)
{
    qc_members ms;
    if (qc_membership_list_in_effect(a, &ms) != QC_OK) return;
    int leader = qc_raft_role(a->raft) == QC_ROLE_LEADER;
    for (size_t i = 0; i < a->n_members;) {
        member *m = &a->members[i];
        m->removed = !named(a, &ms, m);
        if (!m->removed) {
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
        qc_agent_member_clear(m);
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
                      .role = qc_agent_rest_role(r->role, r->voting),
                      .up = qc_hash_id(r->identifier) == a->self_id ||
                            qc_net_link_up(a->net, qc_hash_id(r->identifier)),
                      .voter = r->voting,
                      .is_self = qc_hash_id(r->identifier) == a->self_id,
                      .priority = r->priority};
    qc_agent_fire(a, &(qc_hook_event){.hook = hook, .peer = &p});
}

static void settle_member_waits(qc_agent *a);

/* A CONFIG entry (or a snapshot's membership) was applied: hooks for who
 * came and went, and this node stops if it was removed. */
void qc_membership_apply_list(qc_agent *a, const qc_entry *e)
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
    mark_removed(a); /* before the waits settle: an answered leave shows */
    settle_member_waits(a);
    /* Removed, and not added back later in the log (a node that rejoined
     * under its name replays its own earlier leave). */
    if (was && !is && !qc_membership_is_member(a)) {
        qc_log(QC_LOG_INFO, "member", "this node was removed from the cluster; stopping");
        qc_agent_want_stop(a, "left the cluster");
    }
}

/* ---- membership requests of this node (API, Lua) ------------------------ */

void qc_membership_wait_finish(qc_agent *a, member_wait *w, int rc, const char *message)
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
    qc_membership_wait_finish(mw->agent, mw, QC_EBUSY,
                              "timed out waiting for the change to commit");
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
        if (member_wait_met(a, w)) qc_membership_wait_finish(a, w, QC_OK, NULL);
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
    if (member_wait_met(a, w)) qc_membership_wait_finish(a, w, QC_OK, NULL);
}

/* The time a membership change may take: a few election timeouts. */
static double change_timeout(const qc_agent *a)
{
    return 10.0 * a->cfg.election_timeout_ms / 1000.0 + 2;
}

void qc_membership_view_set_metadata(void *ud, const char *json, qc_member_done_fn *done, void *arg)
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
    qc_member_rec rec = self_rec(a, qc_agent_self_voting(a));
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

static void on_leave_transfer_done(void *arg, int rc)
{
    leave_after_transfer *t = arg;
    if (rc)
        t->done(t->arg, rc, "could not hand leadership over before leaving");
    else
        qc_membership_start_leave(t->agent, t->agent->cfg.identifier, t->done, t->arg);
    free(t);
}

/* Removes identifier through the leader; a leader leaving hands over first. */
void qc_membership_start_leave(qc_agent *a, const char *identifier, qc_member_done_fn *done,
                               void *arg)
{
    int self = strcmp(identifier, a->cfg.identifier) == 0;
    if (qc_members_find(&a->applied, identifier) < 0 && !qc_agent_member_by_name(a, identifier) &&
        !self) {
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
        int rc = qc_agent_start_transfer(a, 0, QC_DEMOTE_SHUTDOWN, on_leave_transfer_done, t);
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

void qc_membership_view_leave(void *ud, const char *identifier, qc_member_done_fn *done, void *arg)
{
    qc_agent *a = ud;
    if (!a->raft) {
        done(arg, QC_ENOLEADER, "the agent has not started");
        return;
    }
    qc_membership_start_leave(a, identifier && *identifier ? identifier : a->cfg.identifier, done,
                              arg);
}

/* ---- joining ------------------------------------------------------------ */

int qc_membership_is_member(const qc_agent *a)
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
            if (id != a->self_id && !qc_agent_member_by_id(a, id)) member_add(a, r);
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

void qc_membership_view_join(void *ud, const char *const *addresses, size_t n,
                             qc_member_done_fn *done, void *arg)
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
    if (qc_membership_list_in_effect(a, &ms) != QC_OK) return;
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
        member *m = qc_agent_member_by_id(a, id);
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
        /* Only to a healthy member: an unhealthy one would hand back at
         * once, and leadership would bounce between the two. */
        if (!m->up || m->removed || !m->voting || m->role != QC_MROLE_VOTER ||
            m->priority <= a->cfg.priority || qc_raft_peer_healthy(a->raft, m->id) != 1 ||
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
    if (qc_agent_start_transfer(a, best->id, QC_DEMOTE_TRANSFER, transfer_ignore, NULL) == QC_OK) {
        a->preempt_since = 0;
        a->history.preempt_term = qc_raft_term(a->raft); /* the history says "preempt" */
    }
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

void qc_membership_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
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
    if (qc_members_find(&a->applied, a->cfg.identifier) < 0 && now >= a->join_wait_until)
        join_next(a);
    if (!follows_lists(a)) return;
    forget_members(a);
    if (qc_agent_view_is_leader(a)) {
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
    qc_agent_process(a);
}
