/* The consensus core: Raft elections with pre-vote, leases (check-quorum and
 * stickiness), the closed-link fast path and TimeoutNow transfer. Pure: no
 * clock, no I/O, no globals; it only queues messages, hard-state writes and
 * events for the caller (see raft.h for the order they must be carried out).
 *
 * Safety of the lease: a voter that heard from a lease holder (a leader, or a
 * candidate it voted for) at time t refuses every vote until t + election_ms,
 * and a leader counts its lease from the send time of requests a majority
 * answered, for election_ms shortened by the clock-drift bound. So an
 * isolated leader's lease has ended before anyone else can be elected. The
 * only exceptions are explicit: a transfer (the old leader stepped down
 * first) and a closed link (the leader stops counting a closed link too). */
#include "raft.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

typedef struct qc_peer {
    uint64_t id;
    uint64_t match, next;
    uint64_t acked_ctx; /* newest request ctx this peer answered this term */
    uint64_t up_since;  /* answers to requests sent before this do not count */
    int link_up;
    int gone;    /* the peer closed its connection to us: it is not leading */
    int granted; /* this campaign: 1 granted, -1 refused, 0 no answer */
} qc_peer;

struct qc_raft {
    uint64_t id;
    uint32_t heartbeat_ms, election_ms, lease_ms, fast_retry_ms;
    uint64_t rng;

    qc_role role;
    uint64_t term, vote, leader, commit;
    uint64_t last_leader; /* newest leader ever known, for previous_leader */
    uint64_t last_index, last_term;

    qc_peer *peers; /* every voter but this node */
    size_t n_peers;

    uint64_t election_deadline;  /* follower, (pre)candidate */
    uint64_t heartbeat_deadline; /* leader */
    uint64_t fast_deadline;      /* retry of a fast pre-vote; 0: none */
    int campaign_flags;          /* flags of the current (pre-)campaign */

    uint64_t sticky_id;    /* whose lease we honour (0: unknown) */
    uint64_t sticky_until; /* refuse votes before this */

    qc_msg *msgs;
    size_t n_msgs, cap_msgs;
    qc_event *events;
    size_t n_events, cap_events;
    int hs_dirty;
    int out_of_memory;
};

/* ---- helpers ---------------------------------------------------------- */

static uint64_t next_random(qc_raft *r)
{
    /* splitmix64: small, good enough, replayable from the seed. */
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t quorum(const qc_raft *r) { return (r->n_peers + 1) / 2 + 1; }

static qc_peer *find_peer(qc_raft *r, uint64_t id)
{
    for (size_t i = 0; i < r->n_peers; i++)
        if (r->peers[i].id == id) return &r->peers[i];
    return NULL;
}

static void reset_election(qc_raft *r, uint64_t now)
{
    r->election_deadline = now + r->election_ms + next_random(r) % r->election_ms;
}

static qc_msg *push_msg(qc_raft *r, uint8_t type, uint64_t to)
{
    if (r->n_msgs == r->cap_msgs) {
        size_t cap = r->cap_msgs ? r->cap_msgs * 2 : 16;
        qc_msg *m = realloc(r->msgs, cap * sizeof *m);
        if (!m) {
            r->out_of_memory = 1; /* the message is lost: raft retries it */
            return NULL;
        }
        r->msgs = m;
        r->cap_msgs = cap;
    }
    qc_msg *m = &r->msgs[r->n_msgs++];
    memset(m, 0, sizeof *m);
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

static void push_event(qc_raft *r, uint8_t type, uint8_t reason, uint64_t leader, uint64_t prev)
{
    if (r->n_events == r->cap_events) {
        size_t cap = r->cap_events ? r->cap_events * 2 : 8;
        qc_event *e = realloc(r->events, cap * sizeof *e);
        if (!e) {
            r->out_of_memory = 1;
            return;
        }
        r->events = e;
        r->cap_events = cap;
    }
    r->events[r->n_events++] = (qc_event){
        .type = type, .reason = reason, .term = r->term, .leader = leader, .prev_leader = prev};
}

static void set_leader(qc_raft *r, uint64_t leader)
{
    if (r->leader == leader) return;
    uint64_t prev = r->leader;
    r->leader = leader;
    if (leader) r->last_leader = leader;
    push_event(r, QC_EVENT_LEADER, 0, leader, prev);
}

static void set_term(qc_raft *r, uint64_t term)
{
    if (term == r->term) return;
    r->term = term;
    r->vote = 0;
    r->hs_dirty = 1;
}

/* Any role -> follower of term; a leader says why it stopped leading. */
static void become_follower(qc_raft *r, uint64_t term, uint64_t leader, int reason, uint64_t now)
{
    qc_role was = r->role;
    set_term(r, term);
    r->role = QC_ROLE_FOLLOWER;
    r->fast_deadline = 0;
    r->campaign_flags = 0;
    if (was == QC_ROLE_LEADER) {
        push_event(r, QC_EVENT_DEMOTED, (uint8_t)reason, leader, 0);
        /* Our own lease is gone: our vote is free again. */
        r->sticky_id = 0;
        r->sticky_until = 0;
    }
    set_leader(r, leader);
    reset_election(r, now);
}

static int log_up_to_date(const qc_raft *r, uint64_t index, uint64_t term)
{
    return term > r->last_term || (term == r->last_term && index >= r->last_index);
}

/* ---- the lease -------------------------------------------------------- */

/* The lease ends lease_ms after the newest request time that a majority
 * (this node included) has answered over links that are still open. */
uint64_t qc_raft_lease_until(const qc_raft *r)
{
    if (r->role != QC_ROLE_LEADER) return 0;
    size_t need = quorum(r) - 1; /* answers needed besides our own */
    if (need == 0) return UINT64_MAX;
    uint64_t best[16] = {0}; /* the need newest answers; qc_raft_new caps need */
    for (size_t i = 0; i < r->n_peers; i++) {
        const qc_peer *p = &r->peers[i];
        if (!p->link_up || !p->acked_ctx || p->acked_ctx < p->up_since) continue;
        uint64_t v = p->acked_ctx;
        for (size_t k = 0; k < need; k++) {
            if (v > best[k]) {
                uint64_t t = best[k];
                best[k] = v;
                v = t;
            }
        }
    }
    return best[need - 1] ? best[need - 1] + r->lease_ms : 0;
}

int qc_raft_is_leader(const qc_raft *r, uint64_t now)
{
#ifdef QC_MUTANT_NO_CHECK_QUORUM
    (void)now;
    return r->role == QC_ROLE_LEADER;
#endif
    return r->role == QC_ROLE_LEADER && now < qc_raft_lease_until(r);
}

/* Whether a vote or pre-vote in m may be granted despite the lease we honour. */
static int lease_allows(const qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (r->role == QC_ROLE_LEADER) return !qc_raft_is_leader(r, now);
#ifdef QC_MUTANT_NO_STICKINESS
    return 1;
#endif
    if (now >= r->sticky_until) return 1;
    if (m->flags & QC_MSG_FLAG_TRANSFER) return m->type == QC_MSG_VOTE;
    if ((m->flags & QC_MSG_FLAG_FAST) && r->sticky_id && r->sticky_id != m->from) {
        const qc_peer *holder = find_peer((qc_raft *)r, r->sticky_id);
#ifdef QC_MUTANT_FAST_NO_LINK_CHECK
        return holder != NULL;
#endif
#ifdef QC_MUTANT_FAST_ON_DOWN
        return holder && !holder->link_up;
#endif
        return holder && holder->gone;
    }
    return 0;
}

/* ---- campaigns -------------------------------------------------------- */

static void reset_grants(qc_raft *r)
{
    for (size_t i = 0; i < r->n_peers; i++) r->peers[i].granted = 0;
}

static size_t count_grants(const qc_raft *r)
{
    size_t n = 1; /* our own */
    for (size_t i = 0; i < r->n_peers; i++) n += r->peers[i].granted > 0;
    return n;
}

static void become_leader(qc_raft *r, uint64_t now);

static void send_vote_requests(qc_raft *r, uint8_t type, uint64_t term, uint64_t now)
{
    for (size_t i = 0; i < r->n_peers; i++) {
        if (r->peers[i].granted > 0) continue;
        qc_msg *m = push_msg(r, type, r->peers[i].id);
        if (!m) return;
        m->term = term;
        m->flags = (uint8_t)r->campaign_flags;
        m->ctx = now;
        m->index = r->last_index;
        m->log_term = r->last_term;
    }
}

static void campaign(qc_raft *r, int flags, uint64_t now)
{
    r->role = QC_ROLE_CANDIDATE;
    r->campaign_flags = flags;
    r->fast_deadline = 0;
    set_term(r, r->term + 1);
    r->vote = r->id;
    r->hs_dirty = 1;
    set_leader(r, 0);
    push_event(r, QC_EVENT_CAMPAIGN, 0, 0, 0);
    reset_grants(r);
    reset_election(r, now);
    if (count_grants(r) >= quorum(r)) {
        become_leader(r, now);
        return;
    }
    send_vote_requests(r, QC_MSG_VOTE, r->term, now);
}

static void pre_campaign(qc_raft *r, int flags, uint64_t now)
{
    r->role = QC_ROLE_PRECANDIDATE;
    r->campaign_flags = flags;
    reset_grants(r);
    if (count_grants(r) >= quorum(r)) {
        campaign(r, flags, now);
        return;
    }
    send_vote_requests(r, QC_MSG_PREVOTE, r->term + 1, now);
    r->fast_deadline = (flags & QC_MSG_FLAG_FAST) ? now + r->fast_retry_ms : 0;
}

/* The link to the lease holder closed: try to take over at once. */
static void fast_pre_campaign(qc_raft *r, uint64_t now)
{
    if (r->role == QC_ROLE_LEADER || r->role == QC_ROLE_CANDIDATE) return;
    pre_campaign(r, QC_MSG_FLAG_FAST, now);
}

static void send_heartbeats(qc_raft *r, uint64_t now)
{
    for (size_t i = 0; i < r->n_peers; i++) {
        qc_peer *p = &r->peers[i];
        qc_msg *m = push_msg(r, QC_MSG_APPEND, p->id);
        if (!m) return;
        m->ctx = now;
        m->index = p->next - 1;
        m->log_term = p->next - 1 == r->last_index ? r->last_term : 0;
        m->commit = r->commit < p->match ? r->commit : p->match;
    }
    r->heartbeat_deadline = now + r->heartbeat_ms;
}

static void become_leader(qc_raft *r, uint64_t now)
{
    uint64_t prev = r->last_leader;
    r->role = QC_ROLE_LEADER;
    r->fast_deadline = 0;
    r->campaign_flags = 0;
    r->sticky_id = r->id;
    for (size_t i = 0; i < r->n_peers; i++) {
        qc_peer *p = &r->peers[i];
        p->next = r->last_index + 1;
        p->match = 0;
        /* A granted vote is a lease promise (the voter reset its clock). */
        if (p->granted <= 0) p->acked_ctx = 0;
    }
    push_event(r, QC_EVENT_ELECTED, 0, r->id, prev);
    set_leader(r, r->id);
    send_heartbeats(r, now);
}

/* ---- message handlers: one per type ----------------------------------- */

static void respond(qc_raft *r, const qc_msg *req, uint8_t type, int reject, uint64_t term)
{
    qc_msg *m = push_msg(r, type, req->from);
    if (!m) return;
    m->term = term;
    m->reject = (uint8_t)reject;
    m->ctx = req->ctx;
    m->index = r->last_index;
}

static int rank_above(const qc_raft *r, uint64_t other) { return other > r->id; }

static void on_prevote(qc_raft *r, const qc_msg *m, uint64_t now)
{
    int grant =
        m->term > r->term && log_up_to_date(r, m->index, m->log_term) && lease_allows(r, m, now);
    /* Two nodes saw the leader's link close: only the higher rank goes on,
     * so the two do not split the vote between them. */
    if (grant && r->role == QC_ROLE_PRECANDIDATE && (r->campaign_flags & QC_MSG_FLAG_FAST)) {
        grant = rank_above(r, m->from);
        if (grant) {
            r->role = QC_ROLE_FOLLOWER;
            r->fast_deadline = now + r->fast_retry_ms; /* in case it fails */
        }
    }
    respond(r, m, QC_MSG_PREVOTE_RESP, !grant, grant ? m->term : r->term);
}

static void on_vote(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term < r->term) {
        respond(r, m, QC_MSG_VOTE_RESP, 1, r->term);
        return;
    }
    if (m->term > r->term) {
        if (!lease_allows(r, m, now)) {
            /* Ignore, not even our term moves: a live lease stands. */
            respond(r, m, QC_MSG_VOTE_RESP, 1, r->term);
            return;
        }
        become_follower(r, m->term, 0, QC_DEMOTE_HIGHER_TERM, now);
    }
    /* In a term whose leader we know, the only vote left is the one we cast. */
    int free_vote = r->vote == m->from || (r->vote == 0 && r->leader == 0);
    int grant = free_vote && log_up_to_date(r, m->index, m->log_term);
#ifdef QC_MUTANT_DOUBLE_VOTE
    grant = log_up_to_date(r, m->index, m->log_term) && r->role != QC_ROLE_LEADER;
#endif
    if (grant) {
        r->vote = m->from;
        r->hs_dirty = 1;
        reset_election(r, now);
        /* Our vote is a lease promise: no other vote for election_ms. */
        r->sticky_id = m->from;
        r->sticky_until = now + r->election_ms;
    }
    respond(r, m, QC_MSG_VOTE_RESP, !grant, r->term);
}

static void on_append(qc_raft *r, const qc_msg *m, uint64_t now)
{
#ifdef QC_MUTANT_LOWER_TERM
    if (m->term < r->term) {
        r->term = m->term; /* takes a lower term for the current one */
        r->hs_dirty = 1;
    }
#endif
    if (m->term < r->term) {
        respond(r, m, QC_MSG_APPEND_RESP, 1, r->term);
        return;
    }
    if (m->term > r->term || r->role != QC_ROLE_FOLLOWER)
        become_follower(r, m->term, m->from, QC_DEMOTE_HIGHER_TERM, now);
    set_leader(r, m->from);
    r->sticky_id = m->from;
    r->sticky_until = now + r->election_ms;
    r->fast_deadline = 0;
    reset_election(r, now);
    /* The log stays empty until replication lands: every prev we hold is
     * index 0, so any other prev is a mismatch with a hint of our last. */
    int match = m->index == 0 || (m->index == r->last_index && m->log_term == r->last_term);
    respond(r, m, QC_MSG_APPEND_RESP, !match, r->term);
}

static void on_response_from_future(qc_raft *r, const qc_msg *m, uint64_t now)
{
    become_follower(r, m->term, 0, QC_DEMOTE_HIGHER_TERM, now);
}

static void on_prevote_resp(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (r->role != QC_ROLE_PRECANDIDATE) return;
    if (m->reject && m->term > r->term) {
        on_response_from_future(r, m, now);
        return;
    }
    qc_peer *p = find_peer(r, m->from);
    if (!p || m->term != r->term + 1) return; /* stale answer */
    p->granted = m->reject ? -1 : 1;
    if (count_grants(r) >= quorum(r)) campaign(r, r->campaign_flags, now);
}

static void on_vote_resp(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term > r->term) {
        on_response_from_future(r, m, now);
        return;
    }
    qc_peer *p = find_peer(r, m->from);
    if (m->term != r->term || !p) return;
    /* A grant that comes after we won still backs our lease. */
    if (!m->reject && m->ctx > p->acked_ctx && m->ctx <= now) p->acked_ctx = m->ctx;
    if (r->role != QC_ROLE_CANDIDATE) return;
    p->granted = m->reject ? -1 : 1;
    if (count_grants(r) >= quorum(r)) become_leader(r, now);
}

static void on_append_resp(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term > r->term) {
        on_response_from_future(r, m, now);
        return;
    }
    qc_peer *p = find_peer(r, m->from);
    if (r->role != QC_ROLE_LEADER || m->term != r->term || !p) return;
    /* Even a refusal shows the peer follows us, so it extends the lease. */
    if (m->ctx > p->acked_ctx && m->ctx <= now) p->acked_ctx = m->ctx;
    /* Progress (match, next) moves once the log carries entries. */
}

static void on_timeout_now(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term != r->term || r->role == QC_ROLE_LEADER) return;
    /* The leader stepped down for us: no pre-vote, stickiness waived. */
    campaign(r, QC_MSG_FLAG_TRANSFER, now);
}

typedef void handler_fn(qc_raft *, const qc_msg *, uint64_t);

static handler_fn *const handlers[QC_MSG_TYPE_MAX + 1] = {
    [QC_MSG_PREVOTE] = on_prevote,
    [QC_MSG_PREVOTE_RESP] = on_prevote_resp,
    [QC_MSG_VOTE] = on_vote,
    [QC_MSG_VOTE_RESP] = on_vote_resp,
    [QC_MSG_APPEND] = on_append,
    [QC_MSG_APPEND_RESP] = on_append_resp,
    [QC_MSG_TIMEOUT_NOW] = on_timeout_now,
};

/* ---- public interface ------------------------------------------------- */

int qc_raft_step(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->type < 1 || m->type > QC_MSG_TYPE_MAX || m->to != r->id) return QC_EINVAL;
    qc_peer *from = find_peer(r, m->from);
    if (!from) return QC_ENOTFOUND;
    /* It talks to us again: whatever closed before, it has not gone away. */
    from->gone = 0;
    /* A leader's lease may have lapsed while we were not looking (a frozen
     * process): settle that before anything the message could cause. */
    qc_raft_tick(r, now);
    handlers[m->type](r, m, now);
    return r->out_of_memory ? QC_ENOMEM : QC_OK;
}

void qc_raft_tick(qc_raft *r, uint64_t now)
{
    switch (r->role) {
    case QC_ROLE_LEADER:
#ifndef QC_MUTANT_NO_CHECK_QUORUM
        if (!qc_raft_is_leader(r, now)) {
            become_follower(r, r->term, 0, QC_DEMOTE_LOST_QUORUM, now);
            return;
        }
#endif
        if (now >= r->heartbeat_deadline) send_heartbeats(r, now);
        return;
    case QC_ROLE_FOLLOWER:
    case QC_ROLE_PRECANDIDATE:
    case QC_ROLE_CANDIDATE:
        if (now >= r->election_deadline) {
            set_leader(r, 0); /* nobody heard from: no leader we know of */
            reset_election(r, now);
            pre_campaign(r, 0, now);
            return;
        }
        if (r->fast_deadline && now >= r->fast_deadline) {
            const qc_peer *holder = find_peer(r, r->sticky_id);
            if (holder && holder->gone && r->role != QC_ROLE_CANDIDATE)
                pre_campaign(r, QC_MSG_FLAG_FAST, now);
            else
                r->fast_deadline = 0;
        }
        return;
    }
}

void qc_raft_link(qc_raft *r, uint64_t peer, int state, uint64_t now)
{
    qc_peer *p = find_peer(r, peer);
    if (!p) return;
    if (state == QC_LINK_UP) {
        if (!p->link_up) p->up_since = now;
        p->link_up = 1;
        p->gone = 0;
        return;
    }
    int newly_gone = state == QC_LINK_GONE && !p->gone;
    p->link_up = 0;
    p->acked_ctx = 0;
    if (state == QC_LINK_GONE) p->gone = 1;
    if (r->role == QC_ROLE_LEADER) {
        qc_raft_tick(r, now); /* steps down if a majority is gone */
        return;
    }
#ifdef QC_MUTANT_FAST_ON_DOWN
    newly_gone = newly_gone || state == QC_LINK_DOWN;
#endif
    if (newly_gone && peer == r->sticky_id && now < r->sticky_until) fast_pre_campaign(r, now);
}

static qc_peer *best_transfer_target(qc_raft *r)
{
    qc_peer *best = NULL;
    for (size_t i = 0; i < r->n_peers; i++) {
        qc_peer *p = &r->peers[i];
        if (!p->link_up || p->match < r->last_index) continue;
        if (!best || p->acked_ctx > best->acked_ctx) best = p;
    }
    return best;
}

int qc_raft_transfer(qc_raft *r, uint64_t peer, uint64_t now, int reason)
{
    qc_raft_tick(r, now); /* a lapsed lease has nothing to hand over */
    if (r->role != QC_ROLE_LEADER) return QC_ENOTLEADER;
    qc_peer *target = peer ? find_peer(r, peer) : best_transfer_target(r);
    if (!target) return QC_ENOTFOUND;
    if (!target->link_up || target->match < r->last_index) return QC_EBUSY;
    become_follower(r, r->term, 0, reason ? reason : QC_DEMOTE_TRANSFER, now);
    qc_msg *m = push_msg(r, QC_MSG_TIMEOUT_NOW, target->id);
    if (m) m->ctx = now;
    return r->out_of_memory ? QC_ENOMEM : QC_OK;
}

int qc_raft_step_down(qc_raft *r, uint64_t now, int reason)
{
    if (r->role != QC_ROLE_LEADER) return QC_ENOTLEADER;
    become_follower(r, r->term, 0, reason, now);
    return r->out_of_memory ? QC_ENOMEM : QC_OK;
}

int qc_raft_new(const qc_raft_config *cfg, const qc_hard_state *hs, uint64_t now, qc_raft **out)
{
    /* The lease keeps the 16 newest answers: 32 voters at most. */
    if (!cfg->id || !cfg->heartbeat_ms || cfg->election_ms < 2 || cfg->n_peers > 32)
        return QC_EINVAL;
    qc_raft *r = calloc(1, sizeof *r);
    if (!r) return QC_ENOMEM;
    r->peers = calloc(cfg->n_peers ? cfg->n_peers : 1, sizeof *r->peers);
    if (!r->peers) {
        free(r);
        return QC_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i] == cfg->id) continue;
        r->peers[r->n_peers++] = (qc_peer){.id = cfg->peers[i], .next = 1};
    }
    r->id = cfg->id;
    r->heartbeat_ms = cfg->heartbeat_ms;
    r->election_ms = cfg->election_ms;
    /* Shortened for the drift bound, and by 2 ms because both clocks are
     * read in whole milliseconds. */
    r->lease_ms =
        (uint32_t)((uint64_t)cfg->election_ms * (1000 - 2 * QC_RAFT_DRIFT_PERMILLE) / 1000);
    r->lease_ms = r->lease_ms > 2 ? r->lease_ms - 2 : 0;
    r->fast_retry_ms = cfg->fast_retry_ms ? cfg->fast_retry_ms : 5;
    r->rng = cfg->seed ^ (cfg->id * 0xd1342543de82ef95ull);
    if (hs) {
        r->term = hs->term;
        r->vote = hs->vote;
        r->commit = hs->commit;
    }
    /* We may have promised a lease just before a crash: honour it. */
    r->sticky_until = now + r->election_ms;
    reset_election(r, now);
    *out = r;
    return QC_OK;
}

void qc_raft_free(qc_raft *r)
{
    if (!r) return;
    free(r->peers);
    free(r->msgs);
    free(r->events);
    free(r);
}

int qc_raft_has_ready(const qc_raft *r) { return r->hs_dirty || r->n_msgs || r->n_events; }

void qc_raft_ready(qc_raft *r, qc_ready *out)
{
    out->hard_state_changed = r->hs_dirty;
    out->hs = (qc_hard_state){.term = r->term, .vote = r->vote, .commit = r->commit};
    out->msgs = r->msgs;
    out->n_msgs = r->n_msgs;
    out->events = r->events;
    out->n_events = r->n_events;
}

void qc_raft_advance(qc_raft *r)
{
    r->hs_dirty = 0;
    r->n_msgs = 0;
    r->n_events = 0;
    r->out_of_memory = 0;
}

uint64_t qc_raft_next_deadline(const qc_raft *r)
{
    if (r->role == QC_ROLE_LEADER) {
        uint64_t lease = qc_raft_lease_until(r);
        return lease < r->heartbeat_deadline ? lease : r->heartbeat_deadline;
    }
    if (r->fast_deadline && r->fast_deadline < r->election_deadline) return r->fast_deadline;
    return r->election_deadline;
}

qc_role qc_raft_role(const qc_raft *r) { return r->role; }
uint64_t qc_raft_term(const qc_raft *r) { return r->term; }
uint64_t qc_raft_leader(const qc_raft *r) { return r->leader; }
uint64_t qc_raft_id(const qc_raft *r) { return r->id; }
uint64_t qc_raft_commit(const qc_raft *r) { return r->commit; }
uint64_t qc_raft_vote(const qc_raft *r) { return r->vote; }

int qc_raft_link_up(const qc_raft *r, uint64_t peer)
{
    const qc_peer *p = find_peer((qc_raft *)r, peer);
    return p && p->link_up;
}

const char *qc_raft_role_name(qc_role role)
{
    static const char *const names[] = {"follower", "precandidate", "candidate", "leader"};
    return role <= QC_ROLE_LEADER ? names[role] : "?";
}

const char *qc_raft_msg_name(int type)
{
    static const char *const names[] = {"?",         "prevote", "prevote_resp", "vote",
                                        "vote_resp", "append",  "append_resp",  "timeout_now"};
    return type >= 1 && type <= QC_MSG_TYPE_MAX ? names[type] : "?";
}

const char *qc_raft_reason_name(int reason)
{
    static const char *const names[] = {"?", "higher_term", "lost_quorum", "transfer", "shutdown"};
    return reason >= 1 && reason <= QC_DEMOTE_SHUTDOWN ? names[reason] : "?";
}
