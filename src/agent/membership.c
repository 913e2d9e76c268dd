/* The replicated member list as this node follows it: keeps the member
 * table in step with the list, fires the member hooks, answers join, leave
 * and metadata requests, and decides the member timer's duties (joining,
 * reaping, promotion, preempt). No I/O of its own and no knowledge of the
 * agent: frames, proposals, hooks and the clock go through its host
 * (membership.h), and the host carries the outputs out. */
#include "agent/membership.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "base/common.h"
#include "base/json.h"
#include "base/log.h"
#include "core/members.h"

/* A membership request of this node's API or Lua, answered once the
 * applied member list shows it done, or at its deadline. */
typedef struct request_wait {
    struct request_wait *next;
    qc_membership *mb;
    int op;           /* QC_MEMBER_OP_... */
    char *identifier; /* whom it is about */
    char *metadata;   /* update: the wanted metadata */
    qc_member_done_fn *done;
    void *arg;
    ev_timer timer;
} request_wait;

struct qc_membership {
    qc_config *cfg; /* the agent's */
    qc_membership_host host;
    struct ev_loop *loop; /* for the requests' deadlines */
    qc_peer *members;     /* room for QC_RAFT_MAX_MEMBERS */
    size_t n_members;
    uint64_t self_id;
    int begun; /* the core runs: requests are taken */
    /* The list of the newest applied CONFIG entry, this node's own
     * metadata as it wants it known, requests waiting on the list. */
    qc_members applied;
    uint64_t applied_index; /* the index of that entry; 0: nothing applied yet */
    uint64_t quiet_until;   /* no member hooks for entries replayed at start */
    char *self_metadata;
    request_wait *waits;
    int joining;              /* a join request is in flight */
    size_t join_next;         /* the next join address to try */
    char *join_leader;        /* "host:port" a member said leads */
    char join_asked[300];     /* the address of the join in flight */
    uint64_t join_wait_until; /* accepted: wait for the log before asking again */
    uint64_t preempt_since;
};

static uint64_t now_ms(const qc_membership *mb) { return mb->host.now(mb->host.ud); }

static uint64_t leader_id(const qc_membership *mb) { return mb->host.leader(mb->host.ud); }

static void wait_finish(qc_membership *mb, request_wait *w, int rc, const char *message);

/* ---- the member table --------------------------------------------------- */

/* Frees p's strings and zeroes it (the table slot stays). */
static void peer_clear(qc_peer *p)
{
    free(p->identifier);
    free(p->host);
    free(p->conf_metadata);
    free(p->metadata);
    free(p->checks);
    memset(p, 0, sizeof *p);
}

int qc_membership_new(qc_config *cfg, const qc_membership_host *host, qc_membership **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return QC_ENOMEM;
    (*out)->cfg = cfg;
    (*out)->host = *host;
    return QC_OK;
}

void qc_membership_free(qc_membership *mb)
{
    if (!mb) return;
    while (mb->waits) {
        request_wait *w = mb->waits;
        mb->waits = w->next;
        ev_timer_stop(mb->loop, &w->timer);
        free(w->identifier);
        free(w->metadata);
        free(w);
    }
    for (size_t i = 0; i < mb->n_members; i++) peer_clear(&mb->members[i]);
    free(mb->members);
    qc_members_free(&mb->applied);
    free(mb->self_metadata);
    free(mb->join_leader);
    free(mb);
}

int qc_membership_setup(qc_membership *mb, struct ev_loop *loop)
{
    const qc_config *cfg = mb->cfg;
    mb->loop = loop;
    mb->self_id = qc_hash_id(cfg->identifier);
    mb->members = calloc(QC_RAFT_MAX_MEMBERS, sizeof *mb->members);
    if (!mb->members) return QC_ENOMEM;
    /* A node that joins learns its peers from the cluster, not the config. */
    for (size_t i = 0; i < cfg->n_peers && !cfg->join_set; i++) {
        const qc_peer_conf *pc = &cfg->peers[i];
        qc_peer *m = &mb->members[mb->n_members++];
        m->identifier = strdup(pc->identifier);
        m->host = strdup(pc->host);
        m->port = pc->port;
        m->conf_metadata = strdup(pc->metadata ? pc->metadata : "{}");
        m->role = pc->role;
        m->priority = pc->priority;
        m->voting = 1; /* the first start's membership: every peer votes */
        m->id = qc_hash_id(pc->identifier);
        if (!m->identifier || !m->host || !m->conf_metadata) return QC_ENOMEM;
        if (m->id == mb->self_id || qc_membership_by_id(mb, m->id) != m) {
            qc_log(QC_LOG_ERROR, "agent", "identifier %s collides with another: rename it",
                   pc->identifier);
            return QC_EINVAL;
        }
    }
    return QC_OK;
}

void qc_membership_begin(qc_membership *mb, uint64_t quiet_until, const qc_entry *conf)
{
    mb->quiet_until = quiet_until;
    mb->applied_index = conf ? conf->index : 0;
    if (conf && conf->index)
        qc_members_decode(conf->data, conf->len, &mb->applied);
    else if (conf)
        qc_membership_list_in_effect(mb, &mb->applied);
    mb->begun = 1;
}

size_t qc_membership_count(const qc_membership *mb) { return mb->n_members; }

qc_peer *qc_membership_at(qc_membership *mb, size_t i) { return &mb->members[i]; }

qc_peer *qc_membership_by_id(const qc_membership *mb, uint64_t id)
{
    for (size_t i = 0; mb && i < mb->n_members; i++)
        if (mb->members[i].id == id) return &mb->members[i];
    return NULL;
}

qc_peer *qc_membership_by_name(const qc_membership *mb, const char *identifier)
{
    for (size_t i = 0; mb && i < mb->n_members; i++)
        if (strcmp(mb->members[i].identifier, identifier) == 0) return &mb->members[i];
    return NULL;
}

const char *qc_membership_name_of(const qc_membership *mb, uint64_t id)
{
    if (!id) return "none";
    if (mb && id == mb->self_id) return mb->cfg->identifier;
    const qc_peer *m = qc_membership_by_id(mb, id);
    return m ? m->identifier : "?";
}

uint64_t qc_membership_self_id(const qc_membership *mb) { return mb ? mb->self_id : 0; }

qc_peer *qc_membership_link(qc_membership *mb, uint64_t id, int up)
{
    qc_peer *m = qc_membership_by_id(mb, id);
    if (m) m->up = up;
    return m;
}

const char *qc_membership_rest_role(int role, int voting)
{
    if (!voting || role == QC_MROLE_LEARNER) return "learner";
    return role == QC_MROLE_WITNESS ? "witness" : "follower";
}

/* base's keys overridden by over's (JSON object texts): "A peer's metadata
 * is what the peer announces for itself, merged over what this node's
 * peers entry says." The caller frees the result; NULL when over is not an
 * object or memory ran out. */
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
    if (!err) out = qc_json_gen_text(g, NULL);
done:
    if (g) yajl_gen_free(g);
    yajl_tree_free(b);
    yajl_tree_free(o);
    return out;
}

void qc_membership_on_hello(qc_membership *mb, uint64_t id, const char *metadata)
{
    qc_peer *m = qc_membership_by_id(mb, id);
    qc_entry conf;
    mb->host.conf(mb->host.ud, &conf);
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

/* The core's flags of this node; 0 when the core does not count it. */
static int self_in_core(const qc_membership *mb, uint8_t *flags)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n = mb->host.core_members(mb->host.ud, m);
    for (size_t i = 0; i < n; i++) {
        if (m[i].id != mb->self_id) continue;
        *flags = m[i].flags;
        return 1;
    }
    return 0;
}

int qc_membership_is_member(const qc_membership *mb)
{
    uint8_t flags;
    return self_in_core(mb, &flags);
}

int qc_membership_self_voting(const qc_membership *mb)
{
    uint8_t flags = 0;
    return self_in_core(mb, &flags) && (flags & QC_MEMBER_VOTER) != 0;
}

/* ---- the replicated list ------------------------------------------------ */

const char *qc_membership_self_metadata(const qc_membership *mb)
{
    if (mb->self_metadata) return mb->self_metadata;
    return mb->cfg->metadata ? mb->cfg->metadata : "{}";
}

/* This node's record as it wants it known (strings borrowed). */
static qc_member_rec self_rec(const qc_membership *mb, int voting)
{
    return (qc_member_rec){.identifier = mb->cfg->identifier,
                           .host = mb->cfg->listen_host,
                           .port = mb->cfg->listen_port,
                           .role = mb->cfg->role,
                           .priority = mb->cfg->priority,
                           .metadata = (char *)qc_membership_self_metadata(mb),
                           .voting = voting && mb->cfg->role != QC_MROLE_LEARNER};
}

/* The member list in effect. The first start's membership (the config's
 * peers) has no list in the log yet: it is built as the core counts it,
 * every member a voter with priority 1; each node then asks for its own
 * role, priority and metadata through the log, one change at a time. */
int qc_membership_list_in_effect(const qc_membership *mb, qc_members *out)
{
    qc_entry e;
    mb->host.conf(mb->host.ud, &e);
    memset(out, 0, sizeof *out);
    if (e.index) return qc_members_decode(e.data, e.len, out);
    qc_member core[QC_RAFT_MAX_MEMBERS];
    size_t n = mb->host.core_members(mb->host.ud, core);
    for (size_t i = 0; i < n; i++) {
        qc_member_rec rec = self_rec(mb, 1);
        const qc_peer *m = qc_membership_by_id(mb, core[i].id);
        if (core[i].id != mb->self_id && !m) continue;
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
static int propose_list(qc_membership *mb, const qc_members *ms)
{
    qc_buf buf = {0};
    int rc = qc_members_encode(ms, &buf);
    if (rc == QC_OK) rc = mb->host.propose(mb->host.ud, buf.data, buf.len);
    qc_buf_free(&buf);
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
static int leader_change(qc_membership *mb, int op, const qc_member_rec *rec, const char **why)
{
    qc_members ms;
    int rc = qc_membership_list_in_effect(mb, &ms);
    if (rc) return rc;
    int at = qc_members_find(&ms, rec->identifier);
    if (op == QC_MEMBER_OP_LEAVE) {
        rc = at < 0 ? QC_ENOTFOUND : qc_members_remove(&ms, rec->identifier);
    } else if (op == QC_MEMBER_OP_JOIN && at >= 0) {
        const qc_peer *m = qc_membership_by_id(mb, qc_hash_id(rec->identifier));
        int same = strcmp(ms.v[at].host, rec->host) == 0 && ms.v[at].port == rec->port;
        if (same && !ms.v[at].voting) {
            rc = QC_OK; /* it is in already (asking again): it catches up as itself */
        } else if ((m && m->up && !same) || qc_hash_id(rec->identifier) == mb->self_id) {
            *why = "identifier in use by a live member";
            rc = QC_EINVAL;
        } else {
            /* A member of that name is down, or a voter asks to join again
             * (its data is gone: it must not vote as what it was): it goes
             * first, then comes back as a learner; ask again. */
            rc = qc_members_remove(&ms, rec->identifier);
            if (rc == QC_OK) rc = propose_list(mb, &ms);
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
    if (rc == QC_OK) rc = propose_list(mb, &ms);
    qc_members_free(&ms);
    if (rc == QC_EINVAL && !*why) *why = "not a valid member";
    return rc;
}

/* A follower asks the leader; the outcome shows in the applied list. */
static int ask_leader(qc_membership *mb, int op, const qc_member_rec *rec)
{
    uint64_t leader = leader_id(mb);
    if (!leader) return QC_ENOLEADER;
    if (leader == mb->self_id) {
        const char *why = NULL;
        return leader_change(mb, op, rec, &why);
    }
    qc_buf buf = {0};
    qc_member_request req = {.op = op, .rec = *rec};
    int rc = qc_member_request_encode(&req, &buf);
    if (rc == QC_OK) rc = mb->host.send(mb->host.ud, leader, buf.data, buf.len);
    qc_buf_free(&buf);
    return rc;
}

/* A MEMBER frame: a member asks us (the leader) for a change; or, op leave
 * naming us, the leader tells us we were removed. */
void qc_membership_on_frame(qc_membership *mb, uint64_t peer, const uint8_t *data, size_t len)
{
    qc_member_request req;
    if (qc_member_request_decode(data, len, &req) != QC_OK) {
        qc_log(QC_LOG_WARN, "member", "dropped a malformed request from %s",
               qc_membership_name_of(mb, peer));
        return;
    }
    if (req.op == QC_MEMBER_OP_LEAVE && qc_hash_id(req.rec.identifier) == mb->self_id) {
        qc_log(QC_LOG_INFO, "member", "the leader removed this node from the cluster");
        for (request_wait *w = mb->waits, *next; w; w = next) {
            next = w->next;
            if (w->op == QC_MEMBER_OP_LEAVE && strcmp(w->identifier, mb->cfg->identifier) == 0)
                wait_finish(mb, w, QC_OK, NULL);
        }
        mb->host.want_stop(mb->host.ud, "left the cluster");
    } else if (req.op != QC_MEMBER_OP_LEAVE && qc_hash_id(req.rec.identifier) != peer) {
        qc_log(QC_LOG_WARN, "member", "%s asked to change %s: refused, only its own record",
               qc_membership_name_of(mb, peer), req.rec.identifier);
    } else if (mb->host.raft_leader(mb->host.ud)) {
        const char *why = NULL;
        int rc = leader_change(mb, req.op, &req.rec, &why);
        if (rc && rc != QC_EBUSY)
            qc_log(QC_LOG_WARN, "member", "request of %s about %s refused: %s",
                   qc_membership_name_of(mb, peer), req.rec.identifier,
                   why ? why : qc_strerror(rc));
    }
    qc_member_request_free(&req);
}

void qc_membership_on_join(qc_membership *mb, const char *identifier, const char *host_seen,
                           const uint8_t *payload, size_t len, qc_buf *answer)
{
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
    } else if (!mb->host.lease_leader(mb->host.ud)) {
        qc_peer *l = qc_membership_by_id(mb, leader_id(mb));
        if (l) {
            snprintf(leader_addr, sizeof leader_addr, "%s:%d", l->host, l->port);
            ans.leader = leader_addr;
        }
        ans.error = l ? "not the leader" : "no leader yet";
        ans.retry = 1;
    } else {
        rc = leader_change(mb, QC_MEMBER_OP_JOIN, &rec, &why);
        ans.ok = rc == QC_OK;
        ans.retry = rc == QC_EBUSY;
        ans.error = rc == QC_OK ? NULL : why ? (char *)why : (char *)qc_strerror(rc);
        if (ans.ok) qc_membership_list_in_effect(mb, &ans.members);
    }
    qc_log(ans.ok ? QC_LOG_INFO : QC_LOG_WARN, "member", "join request of %s (from %s): %s",
           identifier, host_seen, ans.ok ? "accepted" : ans.error);
    if (qc_join_answer_encode(&ans, answer) != QC_OK) answer->len = 0;
    qc_members_free(&ans.members);
    qc_member_rec_free(&rec); /* zeroed when decoding failed */
}

/* A new peer from a list record, dialled at once; NULL (logged) when the
 * table is full or memory ran out. */
static qc_peer *member_add(qc_membership *mb, const qc_member_rec *r)
{
    if (mb->n_members >= QC_RAFT_MAX_MEMBERS) return NULL;
    qc_peer *m = &mb->members[mb->n_members];
    *m = (qc_peer){.identifier = strdup(r->identifier),
                   .host = strdup(r->host),
                   .port = r->port,
                   .id = qc_hash_id(r->identifier),
                   .conf_metadata = strdup(r->metadata),
                   .role = r->role,
                   .priority = r->priority,
                   .voting = r->voting};
    if (!m->identifier || !m->host || !m->conf_metadata ||
        mb->host.add_peer(mb->host.ud, r->identifier, r->host, r->port) != QC_OK) {
        peer_clear(m);
        qc_log(QC_LOG_ERROR, "member", "out of memory adding %s", r->identifier);
        return NULL;
    }
    mb->n_members++;
    return m;
}

/* Peers follow the membership: whoever the list in effect or the applied
 * one names (a removed member stays until the leader told it). */
void qc_membership_sync(qc_membership *mb)
{
    qc_members ms;
    qc_entry e;
    mb->host.conf(mb->host.ud, &e);
    if (!e.index || qc_members_decode(e.data, e.len, &ms) != QC_OK) return;
    for (size_t i = 0; i < ms.n; i++) {
        const qc_member_rec *r = &ms.v[i];
        uint64_t id = qc_hash_id(r->identifier);
        if (id == mb->self_id) continue;
        qc_peer *m = qc_membership_by_id(mb, id);
        char *moved =
            m && (m->port != r->port || strcmp(m->host, r->host) != 0) ? strdup(r->host) : NULL;
        if (moved) {
            /* It moved: its old link is down as of now; dial the new address. */
            mb->host.remove_peer(mb->host.ud, m->id);
            mb->host.link(mb->host.ud, m->id, 0);
            m->up = 0;
            free(m->host);
            m->host = moved;
            m->port = r->port;
            if (mb->host.add_peer(mb->host.ud, r->identifier, r->host, r->port) != QC_OK)
                qc_log(QC_LOG_ERROR, "member", "out of memory following %s", r->identifier);
        }
        if (!m && (m = member_add(mb, r)))
            qc_log(QC_LOG_INFO, "member", "%s (%s:%d) is a member", r->identifier, r->host,
                   r->port);
        if (!m) continue;
        m->removed = 0; /* named (again) */
        /* What the member says of itself (the list), merged over what our
         * own config's peers entry says of it. */
        const char *ours = "{}";
        for (size_t k = 0; k < mb->cfg->n_peers; k++)
            if (strcmp(mb->cfg->peers[k].identifier, r->identifier) == 0 &&
                mb->cfg->peers[k].metadata)
                ours = mb->cfg->peers[k].metadata;
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
    for (size_t i = 0; i < mb->n_members; i++)
        if (mb->host.link_up(mb->host.ud, mb->members[i].id))
            mb->host.link(mb->host.ud, mb->members[i].id, 1);
}

/* Whether the member list follows the lists yet: the applied one names this
 * node, or the core counts it (a joining node may replay older lists). */
static int follows_lists(const qc_membership *mb)
{
    return qc_members_find(&mb->applied, mb->cfg->identifier) >= 0 || qc_membership_is_member(mb);
}

/* Whether the list in effect (in_effect) or the applied one names m; with
 * no applied list yet, everyone counts. */
static int named(const qc_membership *mb, const qc_members *in_effect, const qc_peer *m)
{
    return qc_members_find_id(in_effect, m->id) >= 0 ||
           qc_members_find_id(&mb->applied, m->id) >= 0 || !mb->applied.n;
}

/* Marks the peers neither list names as removed, at once: reads stop
 * showing them as soon as their removal applies (its requester is answered
 * then), while forget_members keeps them until told. */
static void mark_removed(qc_membership *mb)
{
    qc_members ms;
    if (!follows_lists(mb) || qc_membership_list_in_effect(mb, &ms) != QC_OK) return;
    for (size_t i = 0; i < mb->n_members; i++)
        mb->members[i].removed = !named(mb, &ms, &mb->members[i]);
    qc_members_free(&ms);
}

/* Drops peers neither list names any more; a leader first tells each that
 * it was removed (it may never learn it from the log), and drops it a timer
 * tick later, once the frame had time to leave. */
static void forget_members(qc_membership *mb)
{
    qc_members ms;
    if (qc_membership_list_in_effect(mb, &ms) != QC_OK) return;
    int leader = mb->host.raft_leader(mb->host.ud);
    for (size_t i = 0; i < mb->n_members;) {
        qc_peer *m = &mb->members[i];
        m->removed = !named(mb, &ms, m);
        if (!m->removed) {
            i++;
            continue;
        }
        if (leader && !m->told_removed) {
            qc_buf buf = {0};
            qc_member_request req = {.op = QC_MEMBER_OP_LEAVE,
                                     .rec = {.identifier = m->identifier, .metadata = "{}"}};
            if (qc_member_request_encode(&req, &buf) == QC_OK &&
                mb->host.send(mb->host.ud, m->id, buf.data, buf.len) == QC_OK)
                m->told_removed = 1;
            else if (++m->tell_tries >= 50) /* unreachable for a while: give up on it */
                m->told_removed = 1;
            qc_buf_free(&buf);
            i++;
            continue;
        }
        qc_log(QC_LOG_INFO, "member", "%s is no longer a member", m->identifier);
        mb->host.remove_peer(mb->host.ud, m->id);
        peer_clear(m);
        mb->members[i] = mb->members[--mb->n_members];
    }
    qc_members_free(&ms);
}

static void fire_member(qc_membership *mb, const char *hook, const qc_member_rec *r)
{
    qc_peer_info p = {.identifier = r->identifier,
                      .host = r->host,
                      .port = r->port,
                      .metadata = r->metadata,
                      .role = qc_membership_rest_role(r->role, r->voting),
                      .up = qc_hash_id(r->identifier) == mb->self_id ||
                            mb->host.link_up(mb->host.ud, qc_hash_id(r->identifier)),
                      .voter = r->voting,
                      .is_self = qc_hash_id(r->identifier) == mb->self_id,
                      .priority = r->priority};
    mb->host.fire(mb->host.ud, &(qc_hook_event){.hook = hook, .peer = &p});
}

static void settle_waits(qc_membership *mb);

/* A CONFIG entry (or a snapshot's membership) was applied: hooks for who
 * came and went, and this node stops if it was removed. */
void qc_membership_apply_list(qc_membership *mb, const qc_entry *e)
{
    qc_members ms;
    if (!e->index || qc_members_decode(e->data, e->len, &ms) != QC_OK) return;
    qc_log(QC_LOG_DEBUG, "member", "applied a list of %zu members at %llu", ms.n,
           (unsigned long long)e->index);
    if (e->index > mb->quiet_until && mb->applied.n) {
        for (size_t i = 0; i < ms.n; i++)
            if (qc_members_find(&mb->applied, ms.v[i].identifier) < 0)
                fire_member(mb, "on_member_join", &ms.v[i]);
        for (size_t i = 0; i < mb->applied.n; i++)
            if (qc_members_find(&ms, mb->applied.v[i].identifier) < 0)
                fire_member(mb, "on_member_leave", &mb->applied.v[i]);
    }
    int was = qc_members_find(&mb->applied, mb->cfg->identifier) >= 0;
    int is = qc_members_find(&ms, mb->cfg->identifier) >= 0;
    qc_members_free(&mb->applied);
    mb->applied = ms;
    mb->applied_index = e->index;
    mark_removed(mb); /* before the waits settle: an answered leave shows */
    settle_waits(mb);
    /* Removed, and not added back later in the log (a node that rejoined
     * under its name replays its own earlier leave). */
    if (was && !is && !qc_membership_is_member(mb)) {
        qc_log(QC_LOG_INFO, "member", "this node was removed from the cluster; stopping");
        mb->host.want_stop(mb->host.ud, "left the cluster");
    }
}

/* ---- membership requests of this node (API, Lua) ------------------------ */

/* Unlinks w, answers done(arg, rc, message) and frees w. */
static void wait_finish(qc_membership *mb, request_wait *w, int rc, const char *message)
{
    for (request_wait **p = &mb->waits; *p; p = &(*p)->next) {
        if (*p != w) continue;
        *p = w->next;
        break;
    }
    ev_timer_stop(mb->loop, &w->timer);
    w->done(w->arg, rc, message);
    free(w->identifier);
    free(w->metadata);
    free(w);
}

static void on_wait_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    request_wait *mw = w->data;
    wait_finish(mw->mb, mw, QC_EBUSY, "timed out waiting for the change to commit");
}

/* Whether the applied list shows w done. Only once it is the newest list
 * in the log: a restarted node replays older lists first, and one from
 * before it joined does not name it, which is no leave. */
static int wait_met(const qc_membership *mb, const request_wait *w)
{
    int at = qc_members_find(&mb->applied, w->identifier);
    qc_entry newest;
    mb->host.conf(mb->host.ud, &newest);
    if (!mb->applied.n) return 0; /* no list yet: nothing to tell by */
    if (mb->applied_index < newest.index) return 0;
    switch (w->op) {
    case QC_MEMBER_OP_LEAVE: return at < 0;
    case QC_MEMBER_OP_UPDATE:
        return at >= 0 && strcmp(mb->applied.v[at].metadata, w->metadata) == 0;
    default: return at >= 0;
    }
}

static void settle_waits(qc_membership *mb)
{
    request_wait *w = mb->waits;
    while (w) {
        request_wait *next = w->next;
        if (wait_met(mb, w)) wait_finish(mb, w, QC_OK, NULL);
        w = next;
    }
}

/* Waits (timeout_s) until the applied list shows op on identifier done. */
static void wait_add(qc_membership *mb, int op, const char *identifier, const char *metadata,
                     double timeout_s, qc_member_done_fn *done, void *arg)
{
    request_wait *w = calloc(1, sizeof *w);
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
    *w = (request_wait){.next = mb->waits,
                        .mb = mb,
                        .op = op,
                        .identifier = w->identifier,
                        .metadata = w->metadata,
                        .done = done,
                        .arg = arg};
    ev_timer_init(&w->timer, on_wait_timeout, timeout_s, 0);
    w->timer.data = w;
    ev_timer_start(mb->loop, &w->timer);
    mb->waits = w;
    if (wait_met(mb, w)) wait_finish(mb, w, QC_OK, NULL);
}

/* The time a membership change may take: a few election timeouts. */
static double change_timeout(const qc_membership *mb)
{
    return 10.0 * mb->cfg->election_timeout_ms / 1000.0 + 2;
}

void qc_membership_set_metadata(qc_membership *mb, const char *json, qc_member_done_fn *done,
                                void *arg)
{
    char *copy = strdup(json);
    if (!copy) {
        done(arg, QC_ENOMEM, "out of memory");
        return;
    }
    free(mb->self_metadata);
    mb->self_metadata = copy;
    if (!mb->begun) {
        done(arg, QC_ENOLEADER, "the agent has not started");
        return;
    }
    qc_member_rec rec = self_rec(mb, qc_membership_self_voting(mb));
    int rc = ask_leader(mb, QC_MEMBER_OP_UPDATE, &rec);
    if (rc && rc != QC_EBUSY) {
        done(arg, rc, rc == QC_ENOLEADER ? "no leader to commit it" : qc_strerror(rc));
        return;
    }
    /* A busy leader: the member timer asks again until it is in. */
    wait_add(mb, QC_MEMBER_OP_UPDATE, mb->cfg->identifier, copy, change_timeout(mb), done, arg);
}

static void start_leave(qc_membership *mb, const char *identifier, qc_member_done_fn *done,
                        void *arg);

typedef struct leave_after_transfer {
    qc_membership *mb;
    qc_member_done_fn *done;
    void *arg;
} leave_after_transfer;

static void on_leave_transfer_done(void *arg, int rc)
{
    leave_after_transfer *t = arg;
    if (rc)
        t->done(t->arg, rc, "could not hand leadership over before leaving");
    else
        start_leave(t->mb, t->mb->cfg->identifier, t->done, t->arg);
    free(t);
}

/* Removes identifier through the leader; a leader leaving hands over first. */
static void start_leave(qc_membership *mb, const char *identifier, qc_member_done_fn *done,
                        void *arg)
{
    int self = strcmp(identifier, mb->cfg->identifier) == 0;
    if (qc_members_find(&mb->applied, identifier) < 0 && !qc_membership_by_name(mb, identifier) &&
        !self) {
        done(arg, QC_ENOTFOUND, NULL);
        return;
    }
    if (self && mb->host.raft_leader(mb->host.ud) && mb->n_members) {
        leave_after_transfer *t = malloc(sizeof *t);
        if (!t) {
            done(arg, QC_ENOMEM, "out of memory");
            return;
        }
        *t = (leave_after_transfer){mb, done, arg};
        int rc = mb->host.transfer(mb->host.ud, 0, QC_DEMOTE_SHUTDOWN, on_leave_transfer_done, t);
        if (rc) {
            free(t);
            done(arg, rc, "could not hand leadership over before leaving");
        }
        return;
    }
    qc_member_rec rec = {.identifier = (char *)identifier, .metadata = "{}"};
    int rc = ask_leader(mb, QC_MEMBER_OP_LEAVE, &rec);
    /* Busy, or no leader known yet: the member timer asks again. */
    if (rc && rc != QC_EBUSY && rc != QC_ENOLEADER) {
        done(arg, rc, rc == QC_ENOLEADER ? "no leader to commit it" : NULL);
        return;
    }
    wait_add(mb, QC_MEMBER_OP_LEAVE, identifier, NULL, change_timeout(mb), done, arg);
}

void qc_membership_leave(qc_membership *mb, const char *identifier, qc_member_done_fn *done,
                         void *arg)
{
    if (!mb->begun) {
        done(arg, QC_ENOLEADER, "the agent has not started");
        return;
    }
    start_leave(mb, identifier && *identifier ? identifier : mb->cfg->identifier, done, arg);
}

/* ---- joining ------------------------------------------------------------ */

static void join_next(qc_membership *mb);

static void on_join_answer(void *arg, int rc, const uint8_t *answer, size_t len)
{
    qc_membership *mb = arg;
    mb->joining = 0;
    qc_join_answer ans;
    const char *addr = mb->join_asked;
    if (rc == QC_OK) rc = qc_join_answer_decode(answer, len, &ans);
    if (rc) {
        qc_log(QC_LOG_WARN, "member", "join through %s: %s", addr,
               rc == QC_EBUSY ? "no answer"
               : rc == QC_EIO ? "cannot connect"
                              : "bad answer");
        free(mb->join_leader);
        mb->join_leader = NULL;
        mb->join_wait_until = now_ms(mb) + 1000; /* next address in a second */
        return;
    }
    free(mb->join_leader);
    mb->join_leader = ans.leader && !ans.ok ? strdup(ans.leader) : NULL;
    if (ans.ok) {
        qc_log(QC_LOG_INFO, "member", "join accepted; catching up as a learner");
        mb->join_wait_until = now_ms(mb) + 5ull * (uint64_t)mb->cfg->election_timeout_ms;
        /* Know who will send us the log before it comes. */
        for (size_t i = 0; i < ans.members.n; i++) {
            const qc_member_rec *r = &ans.members.v[i];
            uint64_t id = qc_hash_id(r->identifier);
            if (id != mb->self_id && !qc_membership_by_id(mb, id)) member_add(mb, r);
        }
    } else if (ans.leader) {
        join_next(mb); /* straight to the leader */
    } else {
        qc_log(ans.retry ? QC_LOG_INFO : QC_LOG_ERROR, "member", "join through %s refused: %s",
               addr, ans.error ? ans.error : "no reason given");
        mb->join_wait_until = now_ms(mb) + 1000;
    }
    qc_join_answer_free(&ans);
}

/* Asks the next member on the join list (or the leader one named). */
static void join_next(qc_membership *mb)
{
    if (mb->joining || !mb->cfg->n_join) return;
    const char *addr =
        mb->join_leader ? mb->join_leader : mb->cfg->join[mb->join_next++ % mb->cfg->n_join];
    char host[256];
    int port;
    qc_buf req = {0};
    qc_member_rec rec = self_rec(mb, 0);
    if (qc_member_split_addr(addr, host, sizeof host, &port) != QC_OK ||
        qc_member_rec_encode(&rec, &req) != QC_OK) {
        qc_log(QC_LOG_ERROR, "member", "cannot ask %s to join", addr);
        qc_buf_free(&req);
        return;
    }
    qc_log(QC_LOG_INFO, "member", "asking %s to join the cluster", addr);
    snprintf(mb->join_asked, sizeof mb->join_asked, "%s", addr);
    int timeout = 2 * mb->cfg->election_timeout_ms + 500;
    if (mb->host.join(mb->host.ud, host, port, req.data, req.len, timeout, on_join_answer, mb) ==
        QC_OK)
        mb->joining = 1;
    qc_buf_free(&req);
}

void qc_membership_join(qc_membership *mb, const char *const *addresses, size_t n,
                        qc_member_done_fn *done, void *arg)
{
    if (!mb->begun) {
        done(arg, QC_ENOLEADER, "the agent has not started");
        return;
    }
    int joined = qc_members_find(&mb->applied, mb->cfg->identifier) >= 0;
    if (joined && !mb->n_members) {
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
    for (size_t i = 0; i < mb->cfg->n_join; i++) free(mb->cfg->join[i]);
    free(mb->cfg->join);
    mb->cfg->join = list;
    mb->cfg->n_join = n;
    mb->cfg->join_set = 1;
    mb->join_next = 0;
    join_next(mb);
    wait_add(mb, QC_MEMBER_OP_JOIN, mb->cfg->identifier, NULL, change_timeout(mb), done, arg);
}

/* ---- the member timer: what this node does for the membership ----------- */

static void leader_duties(qc_membership *mb, uint64_t now)
{
    qc_entry e;
    mb->host.conf(mb->host.ud, &e);
    qc_members ms;
    if (qc_membership_list_in_effect(mb, &ms) != QC_OK) return;
    /* The first leader writes the config's peers down as the list. */
    if (!e.index) {
        if (propose_list(mb, &ms) == QC_OK) qc_log(QC_LOG_INFO, "member", "member list written");
        qc_members_free(&ms);
        return;
    }
    size_t voting = 0;
    for (size_t i = 0; i < ms.n; i++) voting += ms.v[i].voting != 0;
    for (size_t i = 0; i < ms.n; i++) {
        qc_member_rec *r = &ms.v[i];
        uint64_t id = qc_hash_id(r->identifier);
        qc_peer *m = qc_membership_by_id(mb, id);
        /* A learner that asked to vote and has caught up is promoted. */
        if (!r->voting && r->role != QC_MROLE_LEARNER && id != mb->self_id &&
            voting < (size_t)mb->cfg->max_voters &&
            mb->host.match(mb->host.ud, id) >= mb->host.commit(mb->host.ud) &&
            mb->host.commit(mb->host.ud)) {
            r->voting = 1;
            if (propose_list(mb, &ms) == QC_OK)
                qc_log(QC_LOG_INFO, "member", "%s caught up: now a voter", r->identifier);
            break;
        }
        /* A member down longer than reap_after is removed. */
        if (m && mb->cfg->reap_after_ms > 0 && m->down_since &&
            now - m->down_since >= (uint64_t)mb->cfg->reap_after_ms) {
            char *who = strdup(r->identifier);
            if (who && qc_members_remove(&ms, who) == QC_OK && propose_list(mb, &ms) == QC_OK)
                qc_log(QC_LOG_WARN, "member", "%s was down for %.0f s: removed", who,
                       mb->cfg->reap_after_ms / 1000.0);
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
static void maybe_preempt(qc_membership *mb, uint64_t now)
{
    qc_peer *best = NULL;
    for (size_t i = 0; i < mb->n_members; i++) {
        qc_peer *m = &mb->members[i];
        /* Only to a healthy member: an unhealthy one would hand back at
         * once, and leadership would bounce between the two. */
        if (!m->up || m->removed || !m->voting || m->role != QC_MROLE_VOTER ||
            m->priority <= mb->cfg->priority || mb->host.peer_healthy(mb->host.ud, m->id) != 1 ||
            mb->host.match(mb->host.ud, m->id) < mb->host.last_index(mb->host.ud))
            continue;
        if (!best || m->priority > best->priority) best = m;
    }
    if (!best) {
        mb->preempt_since = 0;
        return;
    }
    if (!mb->preempt_since) mb->preempt_since = now;
    if (now - mb->preempt_since < (uint64_t)mb->cfg->preempt_delay_ms ||
        mb->host.transferring(mb->host.ud))
        return;
    qc_log(QC_LOG_INFO, "member", "%s has a higher priority (%d): handing leadership over",
           best->identifier, best->priority);
    if (mb->host.transfer(mb->host.ud, best->id, QC_DEMOTE_TRANSFER, transfer_ignore, NULL) ==
        QC_OK) {
        mb->preempt_since = 0;
        mb->host.preempting(mb->host.ud); /* the history says "preempt" */
    }
}

/* This node's own record in the list: ask for a change when it differs
 * from what this node wants (role, priority, metadata, address). */
static void self_duties(qc_membership *mb)
{
    int at = qc_members_find(&mb->applied, mb->cfg->identifier);
    if (at < 0) return;
    const qc_member_rec *r = &mb->applied.v[at];
    qc_member_rec want = self_rec(mb, r->voting);
    if (rec_same(r, &want)) return;
    ask_leader(mb, QC_MEMBER_OP_UPDATE, &want);
}

void qc_membership_tick(qc_membership *mb)
{
    uint64_t now = now_ms(mb);
    for (size_t i = 0; i < mb->n_members; i++) {
        qc_peer *m = &mb->members[i];
        if (m->up)
            m->down_since = 0;
        else if (!m->down_since)
            m->down_since = now;
    }
    /* Joined once the applied list names us (an appended entry may yet be
     * undone by a new leader). */
    if (qc_members_find(&mb->applied, mb->cfg->identifier) < 0 && now >= mb->join_wait_until)
        join_next(mb);
    if (!follows_lists(mb)) return;
    forget_members(mb);
    if (mb->host.lease_leader(mb->host.ud)) {
        leader_duties(mb, now);
        if (mb->cfg->preempt) maybe_preempt(mb, now);
    } else {
        mb->preempt_since = 0;
    }
    self_duties(mb);
    /* Leaves still waiting: ask again (the leader may have been busy). */
    for (request_wait *mw = mb->waits; mw; mw = mw->next) {
        if (mw->op != QC_MEMBER_OP_LEAVE) continue;
        qc_member_rec rec = {.identifier = mw->identifier, .metadata = "{}"};
        ask_leader(mb, QC_MEMBER_OP_LEAVE, &rec);
    }
}

void qc_membership_cancel_waits(qc_membership *mb, int rc, const char *message)
{
    while (mb->waits) wait_finish(mb, mb->waits, rc, message);
}
