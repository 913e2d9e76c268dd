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
#include "core/raft.h"

#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/common.h"

typedef struct raft_peer {
    uint64_t id;
    uint64_t match, next;
    uint64_t acked_ctx;     /* newest request ctx this peer answered this term */
    uint64_t up_since;      /* answers to requests sent before this do not count */
    int probing;            /* next is a guess: one append at a time until it matches */
    uint64_t snapshot_sent; /* when a snapshot went to it (0: none in flight) */
    uint64_t snapshot_wait; /* how long that one waits for an answer (0: none due) */
    int link_up;
    int gone;            /* the peer closed its connection to us: it is not leading */
    int granted;         /* this campaign: 1 granted, -1 refused, 0 no answer */
    int health;          /* from its last message: 1 healthy, 0 unhealthy, -1 unknown */
    uint8_t flags;       /* QC_MEMBER_... in the membership in effect */
    qc_msg refused_fast; /* its fast pre-vote we last refused (type 0: none) */
} raft_peer;

struct qc_raft {
    uint64_t id;
    uint32_t heartbeat_ms, election_ms, lease_ms, fast_retry_ms;
    uint32_t max_batch, max_inflight;
    uint64_t rng;

    qc_role role;
    uint64_t term, vote, leader, commit;
    uint64_t last_leader; /* newest leader ever known, for previous_leader */
    /* The log holds entries snap_index+1 .. snap_index+n_log; what came
     * before lives in the state machine's snapshot. */
    qc_entry *log;
    size_t n_log, cap_log;
    uint64_t snap_index, snap_term;
    uint64_t handed;  /* entries up to here went out in a ready to write */
    uint64_t stable;  /* entries up to here are on disk (qc_raft_persisted) */
    uint64_t applied; /* entries up to here were handed out to apply */
    /* A follower's acknowledgements (ack_durable): to the sender of this
     * term's appends, echoing its newest ctx; entries up to ack_match are
     * known to match its log, up to acked were reported durable. */
    uint64_t ack_to, ack_term, ack_ctx, ack_match, acked;
    uint64_t ready_handed, ready_applied; /* what the current ready hands out */
    int broadcast;                        /* new entries wait to be sent */
    uint64_t last_now;                    /* time of the last proposal, for the broadcast */
    uint64_t now_seen;                    /* the newest time any input brought */
    uint64_t recovered_commit;
    uint64_t leader_since; /* when this node last became leader */
    uint64_t transferee, transfer_deadline, transfer_reason;
    int relay;         /* leading only to pass entries on (may not lead) */
    int idle_rounds;   /* election timeouts in a row with no leader heard */
    uint8_t *snapshot; /* a snapshot received to install, until advance */
    size_t snapshot_len;
    int snapshot_pending;

    /* The membership in effect: the newest CONFIG entry in the log, else
     * base_conf (in effect at snap_index; index 0: the first start's peers). */
    raft_peer peers[QC_RAFT_MAX_MEMBERS]; /* every member but this node */
    size_t n_peers;
    int self_member;    /* this node is in it */
    uint8_t self_flags; /* and with these flags */
    int no_lead;        /* this node's own config forbids it to lead */
    int unhealthy;      /* this node's own health verdict (qc_raft_set_healthy) */
    uint64_t conf_index;
    qc_entry base_conf;           /* owns its data */
    qc_entry snap_msg_entries[2]; /* an InstallSnapshot's data slot and conf */

    uint64_t election_deadline;  /* follower, (pre)candidate */
    uint64_t heartbeat_deadline; /* leader */
    uint64_t fast_deadline;      /* retry of a fast pre-vote; 0: none */
    int campaign_flags;          /* flags of the current (pre-)campaign */

    uint64_t sticky_id;    /* whose lease we honour (0: unknown) */
    uint64_t sticky_until; /* refuse votes before this */

    qc_msg *msgs;
    size_t n_msgs, cap_msgs;
    qc_raft_event *events;
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

static int is_voter(uint8_t flags) { return flags & QC_MEMBER_VOTER; }

/* A peer the membership lets stand for election and take a transfer. */
static int peer_may_lead(const raft_peer *p)
{
    return is_voter(p->flags) && !(p->flags & QC_MEMBER_NO_LEAD);
}

/* A flag only the COUNT_REMOVED planted bug sets (0 otherwise). */
#ifdef QC_MUTANT_COUNT_REMOVED
#define MUTANT_REMOVED 0x80
#else
#define MUTANT_REMOVED 0
#endif
static int self_votes(const qc_raft *r) { return r->self_member && is_voter(r->self_flags); }

static size_t n_voters(const qc_raft *r)
{
    size_t n = (size_t)self_votes(r);
    for (size_t i = 0; i < r->n_peers; i++) n += is_voter(r->peers[i].flags) != 0;
    return n;
}

static size_t quorum(const qc_raft *r) { return n_voters(r) / 2 + 1; }

static const qc_entry *conf_entry_at(const qc_raft *r, uint64_t index);

/* Whether conf lets this node lead: a voter not told never to. */
static int conf_lets_lead(const qc_raft *r, const qc_entry *conf)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n, used;
    if (qc_raft_conf_read(conf->data, conf->len, m, &n, &used)) return 0;
    for (size_t i = 0; i < n; i++)
        if (m[i].id == r->id) return is_voter(m[i].flags) && !(m[i].flags & QC_MEMBER_NO_LEAD);
    return 0;
}

/* Whether the newest membership lets this node lead: a voter not told
 * never to. */
static int leads_by_newest(const qc_raft *r)
{
    return !r->no_lead && self_votes(r) && !(r->self_flags & QC_MEMBER_NO_LEAD);
}

/* Whether this node may stand for election: a voter allowed to lead. While
 * a change that removes it (or stops it leading) is not known committed, it
 * still may, by the membership before that change: it may be the only one
 * holding the change, and then only it can commit it (it steps aside once
 * it did; the dissertation, 4.2.2). That membership is committed, since a
 * leader appends a change only once the one before it committed. Our own
 * commit index cannot tell it: it lags, and after a restart it is the one
 * last persisted with a term or vote, maybe from before we were promoted. */
static int can_lead(const qc_raft *r)
{
    if (r->no_lead) return 0;
    if (leads_by_newest(r)) return 1;
    return r->conf_index > r->commit && conf_lets_lead(r, conf_entry_at(r, r->conf_index - 1));
}

/* Whether conf makes this node a voter. */
static int conf_votes(const qc_raft *r, const qc_entry *conf)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n, used;
    if (qc_raft_conf_read(conf->data, conf->len, m, &n, &used)) return 0;
    for (size_t i = 0; i < n; i++)
        if (m[i].id == r->id) return is_voter(m[i].flags);
    return 0;
}

/* Whether this node may stand for election at all, if only as a relay
 * (can_lead says whether it may lead): a voter, or one by the membership
 * before a change not known committed, for the reason can_lead gives. A
 * change that makes it a non-voter may be held by it alone, with the
 * voters lacking it refused for that: then it must stand to pass it on. */
static int may_stand(const qc_raft *r)
{
    if (self_votes(r)) return 1;
    return r->conf_index > r->commit && conf_votes(r, conf_entry_at(r, r->conf_index - 1));
}

static raft_peer *find_peer(qc_raft *r, uint64_t id)
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
        qc_raft_event *e = realloc(r->events, cap * sizeof *e);
        if (!e) {
            r->out_of_memory = 1;
            return;
        }
        r->events = e;
        r->cap_events = cap;
    }
    r->events[r->n_events++] = (qc_raft_event){
        .type = type, .reason = reason, .term = r->term, .leader = leader, .prev_leader = prev};
}

/* ---- member lists ----------------------------------------------------- */

/* A version byte, a count byte, then each member's id (8 bytes, big-endian)
 * and flags (1 byte). */
#define CONF_VERSION 1
#define CONF_MEMBER_SIZE 9

size_t qc_raft_conf_size(size_t n) { return 2 + n * CONF_MEMBER_SIZE; }

void qc_raft_conf_write(uint8_t *out, const qc_member *members, size_t n)
{
    out[0] = CONF_VERSION;
    out[1] = (uint8_t)n;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = out + 2 + i * CONF_MEMBER_SIZE;
        for (int b = 0; b < 8; b++) p[b] = (uint8_t)(members[i].id >> (56 - 8 * b));
        p[8] = members[i].flags;
    }
}

int qc_raft_conf_read(const uint8_t *data, size_t len, qc_member *out, size_t *n, size_t *used)
{
    if (len < 2 || data[0] != CONF_VERSION || data[1] > QC_RAFT_MAX_MEMBERS) return QC_EINVAL;
    size_t count = data[1], voters = 0;
    if (len < qc_raft_conf_size(count)) return QC_EINVAL;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *p = data + 2 + i * CONF_MEMBER_SIZE;
        uint64_t id = 0;
        for (int b = 0; b < 8; b++) id = id << 8 | p[b];
        if (!id || p[8] & ~(QC_MEMBER_VOTER | QC_MEMBER_NO_LEAD)) return QC_EINVAL;
        for (size_t k = 0; k < i; k++)
            if (out[k].id == id) return QC_EINVAL;
        out[i] = (qc_member){.id = id, .flags = p[8]};
        voters += p[8] & QC_MEMBER_VOTER;
    }
    if (voters > QC_RAFT_MAX_VOTERS) return QC_EINVAL;
    *n = count;
    *used = qc_raft_conf_size(count);
    return QC_OK;
}

/* ---- the log ---------------------------------------------------------- */

static uint64_t last_index(const qc_raft *r) { return r->snap_index + r->n_log; }

/* Term of entry i; 0 when it is not in the log (nor the snapshot point). */
static uint64_t term_at(const qc_raft *r, uint64_t i)
{
    if (i == r->snap_index) return r->snap_term;
    if (i < r->snap_index || i > last_index(r)) return 0;
    return r->log[i - r->snap_index - 1].term;
}

static uint64_t last_term(const qc_raft *r) { return term_at(r, last_index(r)); }

static qc_entry *entry_at(qc_raft *r, uint64_t i) { return &r->log[i - r->snap_index - 1]; }

static int conf_apply_entry(qc_raft *r, const qc_entry *e);
static void conf_recompute(qc_raft *r);

/* Appends a copy of an entry at last_index + 1; a CONFIG entry takes
 * effect at once. */
static int log_append(qc_raft *r, uint64_t term, uint32_t type, const void *data, uint32_t len)
{
    /* A leader's entries are of its term (its no-op commits what came before);
     * terms never go down along the log (inputs are checked for it). */
    qc_assert(r->role != QC_ROLE_LEADER || term == r->term);
    qc_assert(term >= last_term(r));
    if (r->n_log == r->cap_log) {
        size_t cap = r->cap_log ? r->cap_log * 2 : 64;
        qc_entry *e = realloc(r->log, cap * sizeof *e);
        if (!e) return QC_ENOMEM;
        r->log = e;
        r->cap_log = cap;
    }
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy) return QC_ENOMEM;
        memcpy(copy, data, len);
    }
    uint64_t index = last_index(r) + 1;
    r->log[r->n_log++] =
        (qc_entry){.term = term, .index = index, .type = type, .len = len, .data = copy};
    if (type == QC_ENTRY_CONFIG) conf_apply_entry(r, &r->log[r->n_log - 1]);
    return QC_OK;
}

/* Drops entries from index i on (a conflict); they must not be committed. */
static void log_truncate(qc_raft *r, uint64_t i)
{
    while (last_index(r) >= i && r->n_log) free(r->log[--r->n_log].data);
    if (r->handed >= i) r->handed = i - 1;
    if (r->stable >= i) r->stable = i - 1;
    if (r->conf_index >= i) conf_recompute(r); /* its CONFIG entry is gone */
}

/* Drops entries up to index i (they are in a snapshot now). */
static void set_base_conf(qc_raft *r, qc_entry conf);

static void log_compact(qc_raft *r, uint64_t i)
{
    if (i <= r->snap_index) return;
    /* The membership in effect at i becomes the base: take its data. */
    qc_entry *conf = (qc_entry *)conf_entry_at(r, i);
    if (conf != &r->base_conf) {
        set_base_conf(r, *conf);
        conf->data = NULL;
    }
    uint64_t term = term_at(r, i);
    size_t drop = i > last_index(r) ? r->n_log : (size_t)(i - r->snap_index);
    for (size_t k = 0; k < drop; k++) free(r->log[k].data);
    memmove(r->log, r->log + drop, (r->n_log - drop) * sizeof *r->log);
    r->n_log -= drop;
    r->snap_index = i;
    r->snap_term = term;
}

/* ---- membership ------------------------------------------------------- */

/* Puts members m[0..n) in effect; peers that stay keep their progress. */
static void conf_apply(qc_raft *r, const qc_member *m, size_t n, uint64_t index)
{
    raft_peer old[QC_RAFT_MAX_MEMBERS];
    size_t n_old = r->n_peers;
    memcpy(old, r->peers, n_old * sizeof *old);
    r->n_peers = 0;
    r->self_member = 0;
    r->self_flags = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].id == r->id) {
            r->self_member = 1;
            r->self_flags = m[i].flags;
            continue;
        }
        raft_peer *p = &r->peers[r->n_peers++];
        size_t k = 0;
        while (k < n_old && old[k].id != m[i].id) k++;
        if (k < n_old)
            *p = old[k];
        else
            *p = (raft_peer){.id = m[i].id, .next = last_index(r) + 1, .probing = 1, .health = -1};
        p->flags = m[i].flags;
    }
#ifdef QC_MUTANT_COUNT_REMOVED
    /* Planted bug: removed members stay (marked, never voters to anyone
     * else), are asked for votes, and their grants count. */
    for (size_t k = 0; k < n_old && r->n_peers < QC_RAFT_MAX_MEMBERS; k++) {
        size_t i = 0;
        while (i < n && m[i].id != old[k].id) i++;
        if (i == n && old[k].id != r->id) {
            r->peers[r->n_peers] = old[k];
            r->peers[r->n_peers++].flags = MUTANT_REMOVED;
        }
    }
#endif
    if (r->transferee && !find_peer(r, r->transferee)) r->transferee = 0;
    r->conf_index = index;
    push_event(r, QC_EVENT_CONFIG, 0, 0, 0);
}

static int conf_apply_entry(qc_raft *r, const qc_entry *e)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n, used;
    if (qc_raft_conf_read(e->data, e->len, m, &n, &used) != QC_OK) return QC_EINVAL;
    conf_apply(r, m, n, e->index);
    return QC_OK;
}

/* The newest CONFIG entry at or before index that the log holds, else the
 * base (in effect at snap_index). */
static const qc_entry *conf_entry_at(const qc_raft *r, uint64_t index)
{
    if (index > last_index(r)) index = last_index(r);
    for (uint64_t i = index; i > r->snap_index; i--) {
        const qc_entry *e = &r->log[i - r->snap_index - 1];
        if (e->type == QC_ENTRY_CONFIG) return e;
    }
    return &r->base_conf;
}

static void conf_recompute(qc_raft *r) { conf_apply_entry(r, conf_entry_at(r, last_index(r))); }

/* Replaces the base membership by conf, taking its data. */
static void set_base_conf(qc_raft *r, qc_entry conf)
{
    free(r->base_conf.data);
    r->base_conf = conf;
    r->base_conf.type = QC_ENTRY_CONFIG;
}

/* How many members conf m[0..n) adds, removes or changes the flags of. */
static size_t conf_changes(const qc_raft *r, const qc_member *m, size_t n)
{
    size_t changes = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].id == r->id) {
            changes += !r->self_member || m[i].flags != r->self_flags;
            kept += r->self_member;
            continue;
        }
        const raft_peer *p = find_peer((qc_raft *)r, m[i].id);
        changes += !p || p->flags != m[i].flags;
        kept += p != NULL;
    }
    return changes + (r->n_peers + (size_t)r->self_member - kept);
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
    qc_assert(term > r->term); /* a term never goes back */
    r->term = term;
    r->vote = 0;
    r->hs_dirty = 1;
}

/* Appends queued while leading carry entries the log may lose now. */
static void drop_queued_appends(qc_raft *r)
{
    size_t keep = 0;
    for (size_t i = 0; i < r->n_msgs; i++)
        if (r->msgs[i].type != QC_MSG_APPEND) r->msgs[keep++] = r->msgs[i];
    r->n_msgs = keep;
}

/* Any role -> follower of term; a leader says why it stopped leading. */
static void become_follower(qc_raft *r, uint64_t term, uint64_t leader, int reason, uint64_t now)
{
    qc_role was = r->role;
    set_term(r, term);
    r->role = QC_ROLE_FOLLOWER;
    r->fast_deadline = 0;
    r->campaign_flags = 0;
    r->transferee = 0;
    r->relay = 0;
    if (was == QC_ROLE_LEADER) {
        drop_queued_appends(r);
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
#ifdef QC_MUTANT_VOTE_NO_LOG_CHECK
    (void)index;
    (void)term;
    return 1;
#endif
    return term > last_term(r) || (term == last_term(r) && index >= last_index(r));
}

/* ---- health ----------------------------------------------------------- */

/* A healthy voter that may lead refuses an unhealthy candidate whose log is
 * no more up to date than its own: it could win in the candidate's place.
 * Others decide as before, so a cluster of unhealthy nodes still elects.
 * A transfer is exempt: the leader that stepped down chose the target. */
static int health_allows(const qc_raft *r, const qc_msg *m)
{
#ifdef QC_MUTANT_UNHEALTHY_VOTE
    return 1;
#endif
    if (!(m->flags & QC_MSG_FLAG_UNHEALTHY) || (m->flags & QC_MSG_FLAG_TRANSFER)) return 1;
    if (r->unhealthy || !can_lead(r)) return 1;
    return m->log_term > last_term(r) || (m->log_term == last_term(r) && m->index > last_index(r));
}

/* An unhealthy node leaves the election to a healthy voter that may lead
 * and that it reaches (it stands after two silent election timeouts). */
static int health_defers(const qc_raft *r)
{
    if (!r->unhealthy) return 0;
    for (size_t i = 0; i < r->n_peers; i++) {
        const raft_peer *p = &r->peers[i];
        if (p->health == 1 && p->link_up && !p->gone && peer_may_lead(p)) return 1;
    }
    return 0;
}

/* ---- the lease -------------------------------------------------------- */

/* The lease ends lease_ms after the newest request time that a majority
 * (this node included) has answered over links that are still open. */
uint64_t qc_raft_lease_until(const qc_raft *r)
{
    if (r->role != QC_ROLE_LEADER) return 0;
    size_t need = quorum(r) - (size_t)self_votes(r); /* answers needed besides our own */
    if (need == 0) return UINT64_MAX;
    uint64_t best[QC_RAFT_MAX_VOTERS / 2 + 1] = {0}; /* the need newest answers */
    for (size_t i = 0; i < r->n_peers; i++) {
        const raft_peer *p = &r->peers[i];
        if (!is_voter(p->flags) || !p->link_up || !p->acked_ctx || p->acked_ctx < p->up_since)
            continue;
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
    return r->role == QC_ROLE_LEADER && !r->relay && now < qc_raft_lease_until(r);
}

/* A new leader may gather answers for one election timeout before a lapsed
 * lease makes it step down (it never claims to lead without one: only
 * qc_raft_is_leader() says so). */
static uint64_t lease_grace(const qc_raft *r) { return r->leader_since + r->election_ms; }

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
        const raft_peer *holder = find_peer((qc_raft *)r, r->sticky_id);
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
    size_t n = (size_t)self_votes(r); /* our own */
    for (size_t i = 0; i < r->n_peers; i++) {
#ifndef QC_MUTANT_COUNT_NON_VOTERS
        if (!is_voter(r->peers[i].flags) && !(r->peers[i].flags & MUTANT_REMOVED)) continue;
#endif
        n += r->peers[i].granted > 0;
    }
    return n;
}

static void become_leader(qc_raft *r, uint64_t now);

static void send_vote_request(qc_raft *r, const raft_peer *p, uint8_t type, uint64_t term,
                              uint64_t now)
{
    qc_msg *m = push_msg(r, type, p->id);
    if (!m) return;
    m->term = term;
    m->flags = (uint8_t)r->campaign_flags;
    m->ctx = now;
    m->index = last_index(r);
    m->log_term = last_term(r);
}

static void send_vote_requests(qc_raft *r, uint8_t type, uint64_t term, uint64_t now)
{
    for (size_t i = 0; i < r->n_peers; i++) {
        if (r->peers[i].granted > 0) continue;
#ifndef QC_MUTANT_COUNT_NON_VOTERS
        if (!is_voter(r->peers[i].flags) && !(r->peers[i].flags & MUTANT_REMOVED)) continue;
#endif
        send_vote_request(r, &r->peers[i], type, term, now);
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
    if (r->role == QC_ROLE_LEADER || r->role == QC_ROLE_CANDIDATE || !can_lead(r) ||
        health_defers(r))
        return;
    pre_campaign(r, QC_MSG_FLAG_FAST, now);
}

/* Flow control: entries in one message, bytes in one message, and entries
 * sent but not yet acknowledged to one peer. */
#define MAX_BATCH_BYTES (1u << 20)

/* The longest a snapshot in flight waits for its answer before it goes
 * again, in election timeouts. */
#define SNAPSHOT_WAIT_MAX 64

/* It may be large, and a peer that reads nothing (a stopped process, whose
 * kernel still takes the connection and the bytes) never answers: a copy
 * per timeout piled up in the transport's queue until it overflowed and
 * dropped the link, again and again. So one copy is in flight per peer: it
 * goes again only once the link that carried it closed (the copy went with
 * it), or after a wait that doubles with every copy left unanswered. None
 * goes over a closed link: the transport would drop it. */
static void send_snapshot(qc_raft *r, raft_peer *p, uint64_t now)
{
    if (!p->link_up) return;
    if (p->snapshot_sent) {
        if (now < p->snapshot_sent + p->snapshot_wait) return;
        if (p->snapshot_wait < (uint64_t)r->election_ms * SNAPSHOT_WAIT_MAX) p->snapshot_wait *= 2;
    } else if (!p->snapshot_wait) {
        p->snapshot_wait = r->election_ms;
    }
    qc_msg *m = push_msg(r, QC_MSG_SNAPSHOT, p->id);
    if (!m) return;
    m->ctx = now;
    m->index = r->snap_index;
    m->log_term = r->snap_term;
    m->commit = r->commit;
    m->flags = r->relay ? QC_MSG_FLAG_RELAY : 0;
    p->snapshot_sent = now;
}

/* One AppendEntries to p from p->next on (none when there is nothing new
 * and this is not a heartbeat). Its entries are pointed to only in
 * qc_raft_ready(), as the log may still grow (and move) before that. */
static void send_append(qc_raft *r, raft_peer *p, int heartbeat, uint64_t now)
{
    if (p->next <= r->snap_index) {
        send_snapshot(r, p, now);
        return;
    }
    uint64_t last = last_index(r);
    uint64_t n = 0;
    size_t bytes = 0;
    if (!p->probing || heartbeat) {
        while (p->next + n <= last && n < r->max_batch &&
               p->next + n - p->match <= r->max_inflight) {
            bytes += entry_at(r, p->next + n)->len;
            if (n && bytes > MAX_BATCH_BYTES) break;
            n++;
        }
    }
    if (!n && !heartbeat) return;
    qc_msg *m = push_msg(r, QC_MSG_APPEND, p->id);
    if (!m) return;
    m->ctx = now;
    m->index = p->next - 1;
    m->log_term = term_at(r, m->index);
    m->commit = r->commit;
    m->flags = r->relay ? QC_MSG_FLAG_RELAY : 0;
    m->n_entries = (uint32_t)n; /* entries are pointed to in qc_raft_ready() */
    /* Pipelining: once the peer matched, assume these arrive. */
    if (!p->probing) p->next += n;
}

static void send_heartbeats(qc_raft *r, uint64_t now)
{
    for (size_t i = 0; i < r->n_peers; i++) send_append(r, &r->peers[i], 1, now);
    r->heartbeat_deadline = now + r->heartbeat_ms;
    r->broadcast = 0;
}

static void send_new_entries(qc_raft *r, uint64_t now)
{
    for (size_t i = 0; i < r->n_peers; i++) send_append(r, &r->peers[i], 0, now);
    r->broadcast = 0;
}

static void hand_off(qc_raft *r, uint64_t now);
static void leave_unhealthy(qc_raft *r, uint64_t now);

static void become_leader(qc_raft *r, uint64_t now)
{
    uint64_t prev = r->last_leader;
    r->role = QC_ROLE_LEADER;
    r->leader_since = now;
    r->fast_deadline = 0;
    r->campaign_flags = 0;
    r->sticky_id = r->id;
    r->transferee = 0;
    for (size_t i = 0; i < r->n_peers; i++) {
        raft_peer *p = &r->peers[i];
        p->next = last_index(r) + 1;
        p->match = 0;
        p->probing = 1;
        p->snapshot_sent = p->snapshot_wait = 0;
        /* A granted vote is a lease promise (the voter reset its clock). */
        if (p->granted <= 0) p->acked_ctx = 0;
    }
    /* A no-op of our term: committing it commits everything before it. */
    if (log_append(r, r->term, QC_ENTRY_NOOP, NULL, 0) != QC_OK) r->out_of_memory = 1;
    r->relay = !can_lead(r);
    r->idle_rounds = 0; /* a relay waits two silent rounds again before the next */
    push_event(r, QC_EVENT_ELECTED, (uint8_t)r->relay, r->id, prev);
    if (!r->relay) set_leader(r, r->id);
    send_heartbeats(r, now);
    if (r->relay) hand_off(r, now);
    leave_unhealthy(r, now); /* it may have turned unhealthy while campaigning */
}

/* The newest index a majority (this node by what is on its disk) holds;
 * committed only when it is of our term (Raft's figure 8). */
static void maybe_commit(qc_raft *r)
{
    uint64_t best[QC_RAFT_MAX_MEMBERS];
    size_t n = 0;
#ifdef QC_MUTANT_COUNT_SELF_UNSTABLE
    if (self_votes(r)) best[n++] = r->handed; /* planted bug: before it is on disk */
#else
    if (self_votes(r)) best[n++] = r->stable;
#endif
    for (size_t i = 0; i < r->n_peers; i++)
        if (is_voter(r->peers[i].flags)) best[n++] = r->peers[i].match;
    if (n < quorum(r)) return;
    /* the quorum-th largest: sort descending (n <= 32) */
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && best[k] > best[k - 1]; k--) {
            uint64_t t = best[k];
            best[k] = best[k - 1];
            best[k - 1] = t;
        }
    uint64_t index = best[quorum(r) - 1];
#ifndef QC_MUTANT_COMMIT_OLD_TERM
    if (term_at(r, index) != r->term) return;
#endif
    if (index > r->commit) r->commit = index;
    /* A leader the committed membership leaves out (or forbids to lead)
     * managed the change; now it hands over. */
    if (!can_lead(r)) hand_off(r, r->now_seen);
}

/* ---- message handlers: one per type ----------------------------------- */

static qc_msg *respond(qc_raft *r, const qc_msg *req, uint8_t type, int reject, uint64_t term)
{
    qc_msg *m = push_msg(r, type, req->from);
    if (!m) return NULL;
    m->term = term;
    m->reject = (uint8_t)reject;
    m->ctx = req->ctx;
    m->index = last_index(r);
    return m;
}

/* Which of two fast pre-candidates goes on: the more up-to-date log (the
 * one holding it would refuse the other), then a healthy one before an
 * unhealthy one (which a healthy voter refuses), then the higher id. Both
 * ends rank alike, so the one below grants the one above. */
static int rank_above(const qc_raft *r, const qc_msg *other)
{
    if (other->log_term != last_term(r)) return other->log_term > last_term(r);
    if (other->index != last_index(r)) return other->index > last_index(r);
    int other_healthy = !(other->flags & QC_MSG_FLAG_UNHEALTHY);
    if (other_healthy != !r->unhealthy) return other_healthy;
    return other->from > r->id;
}

static int prevote_allowed(const qc_raft *r, const qc_msg *m, uint64_t now)
{
    return m->term > r->term && log_up_to_date(r, m->index, m->log_term) &&
           lease_allows(r, m, now) && health_allows(r, m);
}

static void on_prevote(qc_raft *r, const qc_msg *m, uint64_t now)
{
    int grant = prevote_allowed(r, m, now);
    raft_peer *p = find_peer(r, m->from);
    /* Refused, maybe only because the leader's link has not closed here
     * yet: kept, to grant it when it does (grant_refused_fast). */
    if (p) p->refused_fast.type = 0;
    if (p && !grant && (m->flags & QC_MSG_FLAG_FAST)) {
        p->refused_fast = *m;
        p->refused_fast.n_entries = 0;
        p->refused_fast.entries = NULL;
    }
    int ask_again = 0;
    /* Two nodes saw the leader's link close: only the higher rank goes on,
     * so the two do not split the vote between them. */
    if (grant && r->role == QC_ROLE_PRECANDIDATE && (r->campaign_flags & QC_MSG_FLAG_FAST)) {
        grant = rank_above(r, m);
        if (grant) {
            r->role = QC_ROLE_FOLLOWER;
            r->fast_deadline = now + r->fast_retry_ms; /* in case it fails */
        }
        /* It refused our pre-vote before it saw the leader go; now it
         * would grant it (it ranks us above): ask again at once rather
         * than both waiting for the retry. */
        ask_again = !grant && p && p->granted < 0;
    }
    qc_msg *resp = respond(r, m, QC_MSG_PREVOTE_RESP, !grant, grant ? m->term : r->term);
    if (resp) resp->log_term = last_term(r);
    if (ask_again) {
        p->granted = 0;
        send_vote_request(r, p, QC_MSG_PREVOTE, r->term + 1, now);
    }
    /* We may not lead but hold entries a voter that may lacks: without us
     * it cannot win, so we win first, pass them on and hand over. */
    if (!grant && r->role == QC_ROLE_FOLLOWER && may_stand(r) && !can_lead(r) && p &&
        peer_may_lead(p) && !log_up_to_date(r, m->index, m->log_term) && now >= r->sticky_until)
        pre_campaign(r, 0, now);
}

/* The link to the lease holder closed here after we refused a survivor's
 * fast pre-vote for lack of that proof: grant it now if it ranks above us
 * (or we may not stand), rather than stand ourselves and have it refuse
 * us and ask again, a round trip later. A grant after a refusal counts
 * (on_prevote_resp). Returns whether it granted any. */
static int grant_refused_fast(qc_raft *r, uint64_t now)
{
    int granted = 0;
    int stands = can_lead(r) && !health_defers(r);
    for (size_t i = 0; i < r->n_peers; i++) {
        qc_msg m = r->peers[i].refused_fast;
        r->peers[i].refused_fast.type = 0;
        if (m.type != QC_MSG_PREVOTE || (stands && !rank_above(r, &m)) ||
            !prevote_allowed(r, &m, now))
            continue;
        qc_msg *resp = respond(r, &m, QC_MSG_PREVOTE_RESP, 0, m.term);
        if (resp) resp->log_term = last_term(r);
        granted = 1;
    }
    /* In case it fails: our own fast pre-vote, later. */
    if (granted && stands) r->fast_deadline = now + r->fast_retry_ms;
    return granted;
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
    int grant = free_vote && log_up_to_date(r, m->index, m->log_term) && health_allows(r, m);
#ifdef QC_MUTANT_DOUBLE_VOTE
    grant = log_up_to_date(r, m->index, m->log_term) && r->role != QC_ROLE_LEADER;
#endif
    if (grant) {
        qc_assert(r->vote == 0 || r->vote == m->from); /* one vote per term */
        r->vote = m->from;
        r->hs_dirty = 1;
        reset_election(r, now);
        /* Our vote is a lease promise: no other vote for election_ms. */
        r->sticky_id = m->from;
        r->sticky_until = now + r->election_ms;
    }
    qc_msg *resp = respond(r, m, QC_MSG_VOTE_RESP, !grant, r->term);
    if (resp) resp->log_term = last_term(r);
}

/* A message from the leader of our term: stay with it. */
static void follow(qc_raft *r, uint64_t leader, uint64_t now)
{
    reset_election(r, now);
    r->idle_rounds = 0;
    if (!leader) return; /* a relay: no leader to name nor lease to honour */
    /* The leader lives: pre-votes refused for want of its close are moot. */
    for (size_t i = 0; i < r->n_peers; i++) r->peers[i].refused_fast.type = 0;
    set_leader(r, leader);
    r->sticky_id = leader;
    r->sticky_until = now + r->election_ms;
    r->fast_deadline = 0;
    reset_election(r, now);
}

/* Refusal of an append whose prev we do not hold: the hint lets the leader
 * skip a whole conflicting term at a time. */
static void reject_hint(qc_raft *r, uint64_t prev, qc_msg *resp)
{
    resp->reject = 1;
    if (prev > last_index(r)) {
        resp->index = last_index(r);
        resp->log_term = 0;
        return;
    }
    uint64_t t = term_at(r, prev);
    uint64_t first = prev;
    while (first > r->commit + 1 && term_at(r, first - 1) == t) first--; /* first - 1 wraps at 0 */
    resp->index = first;
    resp->log_term = t;
}

/* An append or snapshot: refused below our term; else its sender leads us
 * (a relay leads nobody) and the accepting answer is started. NULL when
 * refused or out of memory. */
static qc_msg *accept_leader(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term < r->term) {
        respond(r, m, QC_MSG_APPEND_RESP, 1, r->term);
        return NULL;
    }
    uint64_t leader = (m->flags & QC_MSG_FLAG_RELAY) ? 0 : m->from;
    if (m->term > r->term || r->role != QC_ROLE_FOLLOWER)
        become_follower(r, m->term, leader, QC_DEMOTE_HIGHER_TERM, now);
    follow(r, leader, now);
    return respond(r, m, QC_MSG_APPEND_RESP, 0, r->term);
}

/* The newest index a follower may acknowledge: known to match the
 * leader's log and on its own disk. */
static uint64_t ack_index(const qc_raft *r)
{
#ifdef QC_MUTANT_ACK_UNSTABLE
    return r->ack_match; /* planted bug: acknowledges what is not on disk */
#endif
    return r->ack_match < r->stable ? r->ack_match : r->stable;
}

/* Accepts m, whose entries up to match now match ours: resp says at once
 * what of it is durable, without waiting for the write (ack_durable tells
 * the rest when it completes). So a leader hears each follower's fsync as
 * soon as it is done, not once every answer held behind it may leave. */
static void ack_at_once(qc_raft *r, const qc_msg *m, qc_msg *resp, uint64_t match)
{
    if (r->ack_term != r->term) { /* a new leader: nothing of it acknowledged */
        r->ack_term = r->term;
        r->ack_match = r->acked = r->ack_ctx = 0;
    }
    r->ack_to = m->from;
    if (m->ctx > r->ack_ctx) r->ack_ctx = m->ctx;
    if (match > r->ack_match) r->ack_match = match;
    resp->index = ack_index(r);
    if (resp->index > r->acked) r->acked = resp->index;
}

/* Writes completed on a follower: tells the leader the newest durable
 * entry it sent, echoing its newest request (an answer to it, for the
 * lease as any). */
static void ack_durable(qc_raft *r)
{
    uint64_t index = ack_index(r);
    if (r->role != QC_ROLE_FOLLOWER || r->ack_term != r->term || index <= r->acked) return;
    qc_msg *m = push_msg(r, QC_MSG_APPEND_RESP, r->ack_to);
    if (!m) return; /* out of memory: the next write completed says it */
    m->term = r->term;
    m->ctx = r->ack_ctx;
    m->index = index;
    r->acked = index;
}

/* Whether a correct leader could have sent m's entries: terms from the
 * previous entry's up to the message's, never going down, and memberships
 * that read. */
static int entries_valid(const qc_msg *m)
{
    uint64_t term = m->log_term;
    for (uint32_t k = 0; k < m->n_entries; k++) {
        const qc_entry *e = &m->entries[k];
        qc_member members[QC_RAFT_MAX_MEMBERS];
        size_t n_members, used;
        if (e->term < term || e->term > m->term) return 0;
        if (e->type == QC_ENTRY_CONFIG &&
            qc_raft_conf_read(e->data, e->len, members, &n_members, &used))
            return 0;
        term = e->term;
    }
    return 1;
}

static void on_append(qc_raft *r, const qc_msg *m, uint64_t now)
{
#ifdef QC_MUTANT_LOWER_TERM
    if (m->term < r->term) {
        r->term = m->term; /* takes a lower term for the current one */
        r->hs_dirty = 1;
    }
#endif
    qc_msg *resp = accept_leader(r, m, now);
    if (!resp) return;
    uint64_t prev = m->index;
    if (prev < r->commit) { /* what we committed matches: start from there */
        ack_at_once(r, m, resp, r->commit);
        return;
    }
#ifdef QC_MUTANT_NO_CONSISTENCY_CHECK
    if (prev > last_index(r)) {
#else
    if (term_at(r, prev) != m->log_term || prev > last_index(r)) {
#endif
        reject_hint(r, prev, resp);
        return;
    }
    if (!entries_valid(m)) {
        resp->reject = 1; /* never from a correct leader: take nothing from it */
        resp->index = last_index(r);
        return;
    }
    for (uint32_t k = 0; k < m->n_entries; k++) {
        const qc_entry *e = &m->entries[k];
        uint64_t index = prev + 1 + k;
        if (index <= last_index(r)) {
            if (term_at(r, index) == e->term) continue;
            log_truncate(r, index); /* a conflict: never below commit (prev >= commit) */
        }
        if (log_append(r, e->term, e->type, e->data, e->len) != QC_OK) {
            r->out_of_memory = 1;
            resp->reject = 1;
            resp->index = last_index(r);
            return;
        }
    }
    uint64_t match = prev + m->n_entries;
    uint64_t commit = m->commit < match ? m->commit : match;
#ifdef QC_MUTANT_APPLY_UNCOMMITTED
    commit = match;
#endif
    if (commit > r->commit) r->commit = commit;
    ack_at_once(r, m, resp, match);
}

static void on_snapshot(qc_raft *r, const qc_msg *m, uint64_t now)
{
    qc_msg *resp = accept_leader(r, m, now);
    if (!resp) return;
    if (m->index <= r->commit || r->snapshot_pending) {
        ack_at_once(r, m, resp, r->commit);
        return;
    }
    /* We hold it: just commit (term_at is 0 past the log too). */
    if (m->index <= last_index(r) && term_at(r, m->index) == m->log_term) {
        r->commit = m->index;
        ack_at_once(r, m, resp, m->index);
        return;
    }
    const qc_entry *data = m->n_entries ? &m->entries[0] : NULL;
    /* The membership in effect at the snapshot travels with it. */
    const qc_entry *conf = m->n_entries >= 2 ? &m->entries[1] : NULL;
    qc_member members[QC_RAFT_MAX_MEMBERS];
    size_t n_members, used;
    /* From no correct leader: a snapshot of a term above its own, or no
     * membership that reads. */
    if (m->log_term > m->term || !conf || conf->index > m->index ||
        qc_raft_conf_read(conf->data, conf->len, members, &n_members, &used)) {
        resp->reject = 1;
        resp->index = last_index(r);
        return;
    }
    uint8_t *copy = data && data->len ? malloc(data->len) : NULL;
    uint8_t *conf_copy = malloc(conf->len);
    if ((data && data->len && !copy) || !conf_copy) {
        free(copy);
        free(conf_copy);
        r->out_of_memory = 1;
        resp->reject = 1;
        return;
    }
    if (copy) memcpy(copy, data->data, data->len);
    memcpy(conf_copy, conf->data, conf->len);
    log_truncate(r, r->snap_index + 1);
    r->snap_index = m->index;
    r->snap_term = m->log_term;
    qc_entry base = *conf;
    base.data = conf_copy;
    set_base_conf(r, base);
    conf_apply(r, members, n_members, base.index);
    r->commit = r->applied = r->stable = r->handed = m->index;
    free(r->snapshot);
    r->snapshot = copy;
    r->snapshot_len = copy ? data->len : 0;
    r->snapshot_pending = 1;
    ack_at_once(r, m, resp, m->index); /* its ready's answers wait for the install */
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
    raft_peer *p = find_peer(r, m->from);
    if (!p) return;
    /* A refusal carries the refuser's term (not above ours here), so it
     * may be from an earlier round of this term: it never undoes a grant. */
    if (m->reject) {
        if (!p->granted) p->granted = -1;
        return;
    }
    if (m->term != r->term + 1) return; /* stale answer */
    p->granted = 1;
    if (count_grants(r) >= quorum(r)) campaign(r, r->campaign_flags, now);
}

static void on_vote_resp(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term > r->term) {
        on_response_from_future(r, m, now);
        return;
    }
    raft_peer *p = find_peer(r, m->from);
    if (m->term != r->term || !p) return;
    /* A grant that comes after we won still backs our lease. */
    if (!m->reject && m->ctx > p->acked_ctx && m->ctx <= now) p->acked_ctx = m->ctx;
    if (r->role != QC_ROLE_CANDIDATE) return;
    p->granted = m->reject ? -1 : 1;
    if (count_grants(r) >= quorum(r)) become_leader(r, now);
}

/* The peer lacks what we sent after: back off to its hint, or to the last
 * entry of the conflicting term we hold, and probe from there. */
static void on_append_refused(qc_raft *r, raft_peer *p, const qc_msg *m, uint64_t now)
{
    uint64_t next = m->index + 1;
    if (m->log_term) {
        next = m->index;
        for (uint64_t i = m->index; i > r->snap_index && term_at(r, i) >= m->log_term; i--) {
            if (term_at(r, i) == m->log_term) {
                next = i + 1;
                break;
            }
        }
    }
    if (next <= p->match) next = p->match + 1;
    if (next > last_index(r) + 1) next = last_index(r) + 1;
    p->next = next;
    p->probing = 1;
    send_append(r, p, 1, now);
}

static void hand_over(qc_raft *r, raft_peer *target, uint64_t now);

static void on_append_resp(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term > r->term) {
        on_response_from_future(r, m, now);
        return;
    }
    raft_peer *p = find_peer(r, m->from);
    if (r->role != QC_ROLE_LEADER || m->term != r->term || !p) return;
    /* Even a refusal shows the peer follows us, so it extends the lease. */
    if (m->ctx > p->acked_ctx && m->ctx <= now) p->acked_ctx = m->ctx;
    if (m->reject) {
        on_append_refused(r, p, m, now);
        return;
    }
    if (m->index > last_index(r)) return;    /* not from this leadership */
    p->snapshot_sent = p->snapshot_wait = 0; /* it answers again */
    if (m->index > p->match) {
        p->match = m->index;
        /* A relay's target that gains entries is on its way: a far one
         * needs more than an election timeout, and every new relay term
         * costs two silent rounds. */
        if (r->relay && r->transferee == p->id) r->transfer_deadline = now + r->election_ms;
        maybe_commit(r);
        if (r->role != QC_ROLE_LEADER) return; /* it handed over just now */
    }
    if (p->next <= p->match) p->next = p->match + 1;
    p->probing = 0;
    if (r->transferee == p->id && p->match == last_index(r)) {
        hand_over(r, p, now);
        return;
    }
    send_append(r, p, 0, now);
}

static void on_timeout_now(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->term != r->term || r->role == QC_ROLE_LEADER || !can_lead(r)) return;
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
    [QC_MSG_SNAPSHOT] = on_snapshot,
};

/* ---- public interface ------------------------------------------------- */

int qc_raft_step(qc_raft *r, const qc_msg *m, uint64_t now)
{
    if (m->type < 1 || m->type > QC_MSG_TYPE_MAX || m->to != r->id) return QC_EINVAL;
    if (m->term > QC_RAFT_MAX_TERM) return QC_EINVAL;
    /* Requests count whatever our membership says (the Raft dissertation,
     * 4.1): we may be behind on it, or joining; answers from a node we do
     * not know of are ignored by their handlers. */
    raft_peer *from = find_peer(r, m->from);
    /* It talks to us again: whatever closed before, it has not gone away;
     * and it says how healthy it is. */
    if (from) {
        from->gone = 0;
        from->health = !(m->flags & QC_MSG_FLAG_UNHEALTHY);
    }
    /* A leader's lease may have lapsed while we were not looking (a frozen
     * process): settle that before anything the message could cause. */
    uint64_t term = r->term, commit = r->commit;
    qc_raft_tick(r, now);
    handlers[m->type](r, m, now);
    /* Whatever a message says, what was committed stays committed. */
    qc_assert(r->term >= term && r->commit >= commit);
    return r->out_of_memory ? QC_ENOMEM : QC_OK;
}

void qc_raft_tick(qc_raft *r, uint64_t now)
{
    if (now > r->now_seen) r->now_seen = now;
    switch (r->role) {
    case QC_ROLE_LEADER:
#ifndef QC_MUTANT_NO_CHECK_QUORUM
        /* A relay leads nobody (no lease of its own) but needs a majority
         * answering all the same, like any leader. */
        if (!(r->relay ? now < qc_raft_lease_until(r) : qc_raft_is_leader(r, now)) &&
            now >= lease_grace(r)) {
            become_follower(r, r->term, 0, QC_DEMOTE_LOST_QUORUM, now);
            return;
        }
#endif
        if (r->transferee && now >= r->transfer_deadline) {
            r->transferee = 0; /* gave up */
            if (!can_lead(r) || r->relay) {
                become_follower(r, r->term, 0, QC_DEMOTE_SHUTDOWN, now);
                return;
            }
        }
        if (!can_lead(r) || r->relay) hand_off(r, now);
        leave_unhealthy(r, now);
        if (r->role != QC_ROLE_LEADER) return; /* it stepped down just now */
        if (now >= r->heartbeat_deadline) send_heartbeats(r, now);
        return;
    case QC_ROLE_FOLLOWER:
    case QC_ROLE_PRECANDIDATE:
    case QC_ROLE_CANDIDATE:
        if (now >= r->election_deadline) {
            set_leader(r, 0); /* nobody heard from: no leader we know of */
            reset_election(r, now);
            r->idle_rounds++;
            /* A voter that may not lead stands as a relay only after two
             * silent rounds, when the voters that may lead seem stuck (one
             * may not know it was promoted, or lack entries we hold). */
            /* So does an unhealthy node that knows a healthy one may lead,
             * voter or not: one that stands only by the membership before
             * its own uncommitted removal may hold entries that healthy
             * one lacks, and then refuses it. */
            if ((can_lead(r) && (!health_defers(r) || r->idle_rounds >= 2)) ||
                (may_stand(r) && r->idle_rounds >= 2))
                pre_campaign(r, 0, now);
            return;
        }
        if (r->fast_deadline && now >= r->fast_deadline) {
            const raft_peer *holder = find_peer(r, r->sticky_id);
            if (holder && holder->gone && r->role != QC_ROLE_CANDIDATE && can_lead(r) &&
                !health_defers(r))
                pre_campaign(r, QC_MSG_FLAG_FAST, now);
            else
                r->fast_deadline = 0;
        }
        return;
    }
}

void qc_raft_link(qc_raft *r, uint64_t peer, int state, uint64_t now)
{
    raft_peer *p = find_peer(r, peer);
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
    p->snapshot_sent = 0; /* the copy in flight went with the link */
    if (state == QC_LINK_GONE) p->gone = 1;
    if (r->role == QC_ROLE_LEADER) {
        /* Links to a majority closed: nobody can renew our lease. */
        size_t up = (size_t)self_votes(r);
        for (size_t i = 0; i < r->n_peers; i++)
            up += is_voter(r->peers[i].flags) && r->peers[i].link_up;
        if (up < quorum(r)) become_follower(r, r->term, 0, QC_DEMOTE_LOST_QUORUM, now);
        return;
    }
#ifdef QC_MUTANT_FAST_ON_DOWN
    newly_gone = newly_gone || state == QC_LINK_DOWN;
#endif
    if (newly_gone && peer == r->sticky_id && now < r->sticky_until &&
        (r->role != QC_ROLE_FOLLOWER || !grant_refused_fast(r, now)))
        fast_pre_campaign(r, now);
}

/* Order of preference among transfer targets: known healthy, unknown, not. */
static int health_rank(const raft_peer *p) { return p->health < 0 ? 1 : 2 * p->health; }

/* The reachable peer that may lead, healthy first, with the most of our log
 * (then the freshest answer). */
static raft_peer *best_transfer_target(qc_raft *r)
{
    raft_peer *best = NULL;
    for (size_t i = 0; i < r->n_peers; i++) {
        raft_peer *p = &r->peers[i];
        if (!p->link_up || !peer_may_lead(p)) continue;
        int rank = best ? health_rank(p) - health_rank(best) : 1;
        if (rank > 0 || (rank == 0 && (p->match > best->match || (p->match == best->match &&
                                                                  p->acked_ctx > best->acked_ctx))))
            best = p;
    }
    return best;
}

/* Steps down first, then tells the caught-up target to campaign at once. */
static void hand_over(qc_raft *r, raft_peer *target, uint64_t now)
{
    int reason = r->transfer_reason ? (int)r->transfer_reason : QC_DEMOTE_TRANSFER;
    r->transferee = 0;
    become_follower(r, r->term, 0, reason, now);
    qc_msg *m = push_msg(r, QC_MSG_TIMEOUT_NOW, target->id);
    if (m) m->ctx = now;
}

/* Hands over to target once it holds our whole log: at once, or after
 * catching it up (new proposals wait meanwhile; given up after an election
 * timeout). */
static void start_transfer(qc_raft *r, raft_peer *target, int reason, uint64_t now)
{
    r->transfer_reason = (uint64_t)reason;
    if (target->match == last_index(r)) {
        hand_over(r, target, now);
        return;
    }
    r->transferee = target->id;
    r->transfer_deadline = now + r->election_ms;
    send_append(r, target, 1, now);
}

/* A leader that may not lead (a relay, or removed by the committed
 * membership) hands over to the best voter that may, once it caught up; it
 * steps down if there is none, or none caught up in an election timeout. */
static void hand_off(qc_raft *r, uint64_t now)
{
    if (r->role != QC_ROLE_LEADER || r->transferee) return;
    raft_peer *target = best_transfer_target(r);
    if (!target) {
        become_follower(r, r->term, 0, QC_DEMOTE_SHUTDOWN, now);
        return;
    }
    start_transfer(r, target, r->relay ? QC_DEMOTE_TRANSFER : QC_DEMOTE_SHUTDOWN, now);
}

/* An unhealthy leader hands over to the best reachable voter known to be
 * healthy. With none it stays (a leader is better than none) and looks
 * again on every tick: a peer's next answer may say it recovered. */
static void leave_unhealthy(qc_raft *r, uint64_t now)
{
#ifdef QC_MUTANT_NO_UNHEALTHY_HANDOVER
    return;
#endif
    if (r->role != QC_ROLE_LEADER || !r->unhealthy || r->relay) return;
    raft_peer *target = best_transfer_target(r);
    int healthy = target && target->health == 1;
    if (r->transferee) {
        if (r->transfer_reason != QC_DEMOTE_UNHEALTHY) return; /* another hand-over is under way */
        const raft_peer *t = find_peer(r, r->transferee);
        /* Go on catching up a target still healthy, unless another one
         * (the first pick right after an election is a guess) holds all. */
        if (t && t->health == 1 && !(healthy && target->match == last_index(r))) return;
        r->transferee = 0;
    }
    if (healthy) start_transfer(r, target, QC_DEMOTE_UNHEALTHY, now);
}

void qc_raft_set_healthy(qc_raft *r, int healthy, uint64_t now)
{
    r->unhealthy = !healthy;
    /* A hand-over for health that has not happened yet has no reason left. */
    if (healthy && r->transferee && r->transfer_reason == QC_DEMOTE_UNHEALTHY) r->transferee = 0;
    if (r->role == QC_ROLE_LEADER) qc_raft_tick(r, now); /* hands over if it must */
}

int qc_raft_peer_healthy(const qc_raft *r, uint64_t peer)
{
    if (peer == r->id) return !r->unhealthy;
    const raft_peer *p = find_peer((qc_raft *)r, peer);
    return p ? p->health : -1;
}

int qc_raft_transfer(qc_raft *r, uint64_t peer, uint64_t now, int reason)
{
    qc_raft_tick(r, now); /* a lapsed lease has nothing to hand over */
    if (r->role != QC_ROLE_LEADER) return QC_ENOTLEADER;
    raft_peer *target = peer ? find_peer(r, peer) : best_transfer_target(r);
    if (!target) return QC_ENOTFOUND;
    if (!peer_may_lead(target)) return QC_EINVAL;
    if (!target->link_up) return QC_EBUSY;
    start_transfer(r, target, reason, now);
    return r->out_of_memory ? QC_ENOMEM : QC_OK;
}

int qc_raft_propose(qc_raft *r, const void *data, size_t len, uint64_t now, uint64_t *index)
{
    qc_raft_tick(r, now);
    if (r->role != QC_ROLE_LEADER) return QC_ENOTLEADER;
    if (r->transferee || !leads_by_newest(r)) return QC_EBUSY;
    if (len > UINT32_MAX) return QC_ETOOBIG;
    if (log_append(r, r->term, QC_ENTRY_DATA, data, (uint32_t)len) != QC_OK) return QC_ENOMEM;
    r->broadcast = 1;
    r->last_now = now;
    if (index) *index = last_index(r);
    return QC_OK;
}

int qc_raft_propose_config(qc_raft *r, const void *data, size_t len, uint64_t now, uint64_t *index)
{
    qc_raft_tick(r, now);
    if (r->role != QC_ROLE_LEADER) return QC_ENOTLEADER;
    if (r->transferee) return QC_EBUSY;
#ifndef QC_MUTANT_TWO_CHANGES
    /* One change at a time, and only once this term's first entry committed
     * (else a change of the previous leader may still be unknown to us). */
    if (r->conf_index > r->commit || term_at(r, r->commit) != r->term) return QC_EBUSY;
#endif
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n, used, voters = 0;
    if (len > UINT32_MAX || qc_raft_conf_read(data, len, m, &n, &used)) return QC_EINVAL;
    for (size_t i = 0; i < n; i++) voters += is_voter(m[i].flags) != 0;
    if (!voters || conf_changes(r, m, n) > 1) return QC_EINVAL;
    if (log_append(r, r->term, QC_ENTRY_CONFIG, data, (uint32_t)len) != QC_OK) return QC_ENOMEM;
    r->broadcast = 1;
    r->last_now = now;
    if (index) *index = last_index(r);
    return r->out_of_memory ? QC_ENOMEM : QC_OK;
}

void qc_raft_conf(const qc_raft *r, qc_entry *out)
{
    *out = r->conf_index > r->snap_index ? r->log[r->conf_index - r->snap_index - 1] : r->base_conf;
}

int qc_raft_conf_at(const qc_raft *r, uint64_t index, qc_entry *out)
{
    if (index < r->snap_index || index > last_index(r)) return QC_EINVAL;
    *out = *conf_entry_at(r, index);
    return QC_OK;
}

size_t qc_raft_members(const qc_raft *r, qc_member *out)
{
    size_t n = 0;
    if (r->self_member) out[n++] = (qc_member){.id = r->id, .flags = r->self_flags};
    for (size_t i = 0; i < r->n_peers; i++)
        out[n++] = (qc_member){.id = r->peers[i].id, .flags = r->peers[i].flags};
    return n;
}

uint64_t qc_raft_match(const qc_raft *r, uint64_t peer)
{
    const raft_peer *p = find_peer((qc_raft *)r, peer);
    return p && r->role == QC_ROLE_LEADER ? p->match : 0;
}

int qc_raft_set_base_conf(qc_raft *r, const qc_entry *conf)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n, used;
    if (r->n_log || qc_raft_conf_read(conf->data, conf->len, m, &n, &used)) return QC_EINVAL;
    qc_entry copy = *conf;
    copy.data = malloc(conf->len ? conf->len : 1);
    if (!copy.data) return QC_ENOMEM;
    memcpy(copy.data, conf->data, conf->len);
    set_base_conf(r, copy);
    conf_apply(r, m, n, conf->index);
    return QC_OK;
}

int qc_raft_restore(qc_raft *r, uint64_t snap_index, uint64_t snap_term, const qc_entry *entries,
                    size_t n)
{
    if (r->n_log || (n && entries[0].index != snap_index + 1)) return QC_EINVAL;
    if (r->base_conf.index > snap_index) return QC_EINVAL; /* a snapshot that cannot be */
    r->snap_index = snap_index;
    r->snap_term = snap_term;
    for (size_t i = 0; i < n; i++) {
        if (entries[i].index != snap_index + 1 + i || entries[i].term < last_term(r))
            return QC_EINVAL;
        int rc = log_append(r, entries[i].term, entries[i].type, entries[i].data, entries[i].len);
        if (rc) return rc;
    }
    r->stable = r->handed = last_index(r);
    r->applied = snap_index;
    r->commit = r->recovered_commit > snap_index ? r->recovered_commit : snap_index;
    if (r->commit > last_index(r)) r->commit = last_index(r);
    return QC_OK;
}

int qc_raft_compact(qc_raft *r, uint64_t index)
{
    if (index > r->applied || index > r->stable) return QC_EINVAL;
    log_compact(r, index);
    return QC_OK;
}

int qc_raft_read_index(qc_raft *r, uint64_t now, uint64_t *index)
{
    if (!qc_raft_is_leader(r, now)) return QC_ENOTLEADER;
    /* Until our no-op commits we may not know everything committed before. */
    if (term_at(r, r->commit) != r->term) return QC_EBUSY;
    *index = r->commit;
    return QC_OK;
}

int qc_raft_step_down(qc_raft *r, uint64_t now, int reason)
{
    if (r->role != QC_ROLE_LEADER) return QC_ENOTLEADER;
    become_follower(r, r->term, 0, reason, now);
    return r->out_of_memory ? QC_ENOMEM : QC_OK;
}

int qc_raft_new(const qc_raft_config *cfg, const qc_hard_state *hs, uint64_t now, qc_raft **out)
{
    if (!cfg->id || !cfg->heartbeat_ms || cfg->election_ms < 2 || cfg->n_peers > QC_RAFT_MAX_VOTERS)
        return QC_EINVAL;
    if (hs && hs->term > QC_RAFT_MAX_TERM) return QC_EINVAL;
    qc_member members[QC_RAFT_MAX_VOTERS];
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (!cfg->peers[i]) return QC_EINVAL;
        size_t k = 0;
        while (k < n && members[k].id != cfg->peers[i]) k++;
        if (k == n) members[n++] = (qc_member){.id = cfg->peers[i], .flags = QC_MEMBER_VOTER};
    }
    qc_raft *r = calloc(1, sizeof *r);
    if (!r) return QC_ENOMEM;
    r->base_conf.data = malloc(qc_raft_conf_size(n));
    if (!r->base_conf.data) {
        free(r);
        return QC_ENOMEM;
    }
    qc_raft_conf_write(r->base_conf.data, members, n);
    r->base_conf.len = (uint32_t)qc_raft_conf_size(n);
    r->base_conf.type = QC_ENTRY_CONFIG;
    r->id = cfg->id;
    r->no_lead = cfg->no_lead;
    conf_apply(r, members, n, 0);
    r->heartbeat_ms = cfg->heartbeat_ms;
    r->election_ms = cfg->election_ms;
    /* Shortened for the drift bound, and by 2 ms because both clocks are
     * read in whole milliseconds. */
    r->lease_ms =
        (uint32_t)((uint64_t)cfg->election_ms * (1000 - 2 * QC_RAFT_DRIFT_PERMILLE) / 1000);
    r->lease_ms = r->lease_ms > 2 ? r->lease_ms - 2 : 0;
    r->fast_retry_ms = cfg->fast_retry_ms ? cfg->fast_retry_ms : 5;
    r->max_batch = cfg->max_batch ? cfg->max_batch : 256;
    r->max_inflight = cfg->max_inflight ? cfg->max_inflight : 4096;
    r->rng = cfg->seed ^ (cfg->id * 0xd1342543de82ef95ull);
    if (hs) {
        r->term = hs->term;
        r->vote = hs->vote;
        r->recovered_commit = hs->commit; /* used once the log is restored */
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
    for (size_t i = 0; i < r->n_log; i++) free(r->log[i].data);
    free(r->log);
    free(r->snapshot);
    free(r->base_conf.data);
    free(r->msgs);
    free(r->events);
    free(r);
}

/* Committed entries may be applied once they are on this node's disk too:
 * the state machine (and any snapshot of it) never runs ahead of the log. */
static uint64_t applicable(const qc_raft *r)
{
    return r->commit < r->stable ? r->commit : r->stable;
}

int qc_raft_has_ready(const qc_raft *r)
{
    return r->hs_dirty || r->n_msgs || r->n_events || r->broadcast || r->snapshot_pending ||
           r->handed < last_index(r) || r->applied < applicable(r);
}

/* The log's cursors stay in order whatever came in: what is applied is
 * committed and on disk, what is on disk was handed out, all in the log. */
static void assert_log_cursors(const qc_raft *r)
{
    qc_assert(r->snap_index <= r->applied && r->applied <= r->commit);
    qc_assert(r->applied <= r->stable && r->stable <= r->handed);
    qc_assert(r->commit <= last_index(r) && r->handed <= last_index(r));
    if (r->role != QC_ROLE_LEADER) return;
    for (size_t i = 0; i < r->n_peers; i++) qc_assert(r->peers[i].match <= last_index(r));
}

void qc_raft_ready(qc_raft *r, qc_ready *out)
{
    assert_log_cursors(r);
    if (r->broadcast && r->role == QC_ROLE_LEADER) send_new_entries(r, r->last_now);
    /* An InstallSnapshot carries the caller's data in entries[0] (which
     * the caller fills in) and the membership at the snapshot in [1]. */
    r->snap_msg_entries[0] = (qc_entry){.term = r->snap_term, .index = r->snap_index};
    r->snap_msg_entries[1] = r->base_conf;
    for (size_t i = 0; i < r->n_msgs; i++) {
        qc_msg *m = &r->msgs[i];
        /* Health as it is when the messages leave. */
        if (r->unhealthy) m->flags |= QC_MSG_FLAG_UNHEALTHY;
        if (m->type == QC_MSG_APPEND && m->n_entries) m->entries = entry_at(r, m->index + 1);
        if (m->type == QC_MSG_SNAPSHOT) {
            m->entries = r->snap_msg_entries;
            m->n_entries = 2;
        }
    }
    r->ready_handed = last_index(r);
    r->ready_applied = applicable(r);
    *out = (qc_ready){
        .hard_state_changed = r->hs_dirty,
        /* A leader's appends and heartbeats depend on nothing new on disk
         * (its term was durable before it could win; it counts its own
         * entries only once qc_raft_persisted says so), nor do a
         * follower's answers (they acknowledge only what it has on disk,
         * ack_at_once), refusals and pre-votes: they may go while the
         * entries are written. A new term or vote (a vote granted above
         * all) and an installed snapshot wait for the write. */
        .msgs_early = !r->hs_dirty && !r->snapshot_pending,
        .hs = {.term = r->term, .vote = r->vote, .commit = r->commit},
        .msgs = r->msgs,
        .n_msgs = r->n_msgs,
        .events = r->events,
        .n_events = r->n_events,
    };
    if (r->snapshot_pending) {
        out->snapshot_index = r->snap_index;
        out->snapshot_term = r->snap_term;
        out->snapshot = r->snapshot;
        out->snapshot_len = r->snapshot_len;
        out->snapshot_conf = &r->base_conf;
        out->has_snapshot = 1;
    }
    if (r->handed < r->ready_handed) {
        uint64_t from = r->handed + 1 > r->snap_index + 1 ? r->handed + 1 : r->snap_index + 1;
        out->entries = entry_at(r, from);
        out->n_entries = (size_t)(r->ready_handed - from + 1);
    }
    if (r->applied < r->ready_applied) {
        uint64_t from = r->applied + 1;
        out->committed = entry_at(r, from);
        out->n_committed = (size_t)(r->ready_applied - from + 1);
    }
}

void qc_raft_advance(qc_raft *r)
{
    r->hs_dirty = 0;
    r->n_msgs = 0;
    r->n_events = 0;
    r->out_of_memory = 0;
    if (r->snapshot_pending) {
        free(r->snapshot);
        r->snapshot = NULL;
        r->snapshot_len = 0;
        r->snapshot_pending = 0;
    }
    if (r->ready_handed > r->handed && r->ready_handed <= last_index(r))
        r->handed = r->ready_handed;
    if (r->ready_applied > r->applied) r->applied = r->ready_applied;
}

uint8_t *qc_raft_take_snapshot(qc_raft *r)
{
    if (!r->snapshot_pending) return NULL;
    uint8_t *data = r->snapshot;
    r->snapshot = NULL; /* advance frees nothing; snapshot_len stays for the ready */
    return data;
}

void qc_raft_persisted(qc_raft *r, uint64_t index, uint64_t term)
{
    /* A write of entries the log has replaced since (a conflict, a
     * snapshot) proves nothing about what is there now: same index and
     * term is the same entry and the same log before it (log matching). */
    if (index <= r->stable || index > r->handed || term_at(r, index) != term) return;
    r->stable = index;
    /* Our own copy is on disk now: it counts for the commit. */
    if (r->role == QC_ROLE_LEADER) maybe_commit(r);
    ack_durable(r);
}

uint64_t qc_raft_next_deadline(const qc_raft *r)
{
    if (r->role == QC_ROLE_LEADER) {
        uint64_t lease = qc_raft_lease_until(r), grace = lease_grace(r);
        uint64_t lapse = lease > grace ? lease : grace;
        return lapse < r->heartbeat_deadline ? lapse : r->heartbeat_deadline;
    }
    if (r->fast_deadline && r->fast_deadline < r->election_deadline) return r->fast_deadline;
    return r->election_deadline;
}

qc_role qc_raft_role(const qc_raft *r) { return r->role; }
uint64_t qc_raft_term(const qc_raft *r) { return r->term; }
uint64_t qc_raft_leader(const qc_raft *r) { return r->leader; }
uint64_t qc_raft_id(const qc_raft *r) { return r->id; }
uint64_t qc_raft_commit(const qc_raft *r) { return r->commit; }
uint64_t qc_raft_last_index(const qc_raft *r) { return last_index(r); }
uint64_t qc_raft_last_term(const qc_raft *r) { return last_term(r); }
uint64_t qc_raft_applied(const qc_raft *r) { return r->applied; }
uint64_t qc_raft_stable(const qc_raft *r) { return r->stable; }
uint64_t qc_raft_snapshot_index(const qc_raft *r) { return r->snap_index; }
uint64_t qc_raft_term_at(const qc_raft *r, uint64_t index) { return term_at(r, index); }
uint64_t qc_raft_vote(const qc_raft *r) { return r->vote; }

int qc_raft_is_relay(const qc_raft *r) { return r->role == QC_ROLE_LEADER && r->relay; }

int qc_raft_link_up(const qc_raft *r, uint64_t peer)
{
    const raft_peer *p = find_peer((qc_raft *)r, peer);
    return p && p->link_up;
}

const char *qc_raft_role_name(qc_role role)
{
    static const char *const names[] = {"follower", "precandidate", "candidate", "leader"};
    return role <= QC_ROLE_LEADER ? names[role] : "?";
}

const char *qc_raft_msg_name(int type)
{
    static const char *const names[] = {"?",           "prevote",     "prevote_resp",
                                        "vote",        "vote_resp",   "append",
                                        "append_resp", "timeout_now", "snapshot"};
    return type >= 1 && type <= QC_MSG_TYPE_MAX ? names[type] : "?";
}

const char *qc_raft_reason_name(int reason)
{
    static const char *const names[] = {"?",        "higher_term", "lost_quorum",
                                        "transfer", "shutdown",    "unhealthy"};
    return reason >= 1 && reason <= QC_DEMOTE_UNHEALTHY ? names[reason] : "?";
}
