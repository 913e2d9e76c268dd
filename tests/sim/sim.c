/* Deterministic simulation of the real consensus core (src/core/raft.c, linked
 * as is): N nodes on a virtual clock and a simulated network, all driven by
 * one seed, with delays, drops, duplicates, reordering, partitions, crashes
 * that keep only what was made durable, the loss of a state file alone,
 * pauses and clock-rate drift. Named invariants are checked after every
 * event; a failing seed prints the command that replays it with a trace.
 * No wall clock, no I/O but stdout. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "core/raft.h"

#define MAX_NODES 7
#define MAX_INFLIGHT 20000
#define MAX_TERMS 4096
#define MAX_LOG (1 << 14) /* indexes the checker follows */
#define DATA_LEN 8        /* a proposal: a unique 64-bit id */
#define SLOTS 4           /* (term, id) pairs remembered per index */
/* A CONFIG entry's id: this tag, then bit i-1 when node i is a member, bit
 * 8+i-1 when it votes, bit 16+i-1 when it may not lead. */
#define CONF_TAG (1ull << 62)
#define CONF_MAX_BYTES 80 /* qc_raft_conf_size(MAX_NODES) and then some */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnd(rng *g)
{
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t below(rng *g, uint64_t n) { return n ? rnd(g) % n : 0; }
static int chance(rng *g, double p) { return (double)(rnd(g) >> 11) / 9007199254740992.0 < p; }

typedef struct inflight {
    uint64_t at; /* real ms of delivery */
    qc_msg m;
} inflight;

/* A write handed to the node's writer thread (src/store/walq.c in the agent):
 * durable at `at` (real ms), in order; the messages that waited for it
 * leave then. A crash before loses it and them. */
typedef struct pending_write {
    uint64_t at;
    int has_hs;
    qc_hard_state hs;
    size_t n;                    /* entries */
    uint64_t *index, *term, *id; /* one block */
    qc_msg *msgs;                /* deep copies (the network's layout) */
    size_t n_msgs;
} pending_write;

typedef struct node {
    qc_raft *r;
    pending_write *writes; /* FIFO */
    size_t n_writes, cap_writes;
    size_t held; /* writes among them holding messages */
    int alive;
    uint64_t paused_until; /* real ms; 0: running */
    double rate;           /* local ms per real ms */
    uint64_t offset;
    qc_hard_state durable;
    int has_durable;        /* its state file exists */
    int ran;                /* its data_dir holds wal/: it wrote a state file once */
    int refused;            /* it lost its state file after that: it stays down */
    uint64_t max_term_seen; /* highest term this node ever revealed */
    /* What survives a crash: the log on disk (index -> term, id) and the
     * snapshot; and the state machine: a hash chain of applied entries. */
    uint64_t *log_term, *log_id;
    uint64_t log_last;
    uint64_t snap_index, snap_term, snap_hash;
    uint64_t snap_conf, snap_conf_index; /* the membership kept with the snapshot */
    uint64_t sm_index, sm_hash;
    uint64_t last_from[MAX_NODES + 1]; /* link ordering: last delivery time from peer */
    int unhealthy;                     /* its health verdict (kept across restarts) */
} node;

typedef struct sim {
    rng g;
    uint64_t seed;
    int trace;
    size_t n;
    uint32_t heartbeat, election;
    node nodes[MAX_NODES + 1];             /* 1-based: id i is nodes[i] */
    int cut[MAX_NODES + 1][MAX_NODES + 1]; /* silent drop from a to b */
    inflight *net;
    size_t n_net;
    uint64_t now; /* real ms */
    double drop, dup;
    uint32_t max_delay;
    uint32_t max_batch, max_inflight;
    int batching;         /* process several inputs at once */
    int churn;            /* leaders change the membership */
    size_t first_members; /* nodes 1..first_members start as voters; others join */
    uint64_t conf_changes;
    uint64_t leader_of[MAX_TERMS];
    uint64_t vote_of[MAX_NODES + 1][MAX_TERMS];
    const char *violation;
    char detail[256];
    uint64_t elections, transfers, crashes;
    /* State-file losses draw from a stream of their own: a seed where none
     * happens runs exactly as it did before they were modelled. */
    rng loss_g;
    int lose_state; /* a node's state file may be lost (half the seeds without churn) */
    uint64_t state_losses, refusals;
    uint64_t next_id, proposals, applied_max;
    /* Every (term, id) persisted at an index, and what was applied there. */
    uint64_t seen_term[MAX_LOG][SLOTS], seen_id[MAX_LOG][SLOTS];
    uint64_t applied_term[MAX_LOG], applied_id[MAX_LOG], applied_hash[MAX_LOG];
    /* A term at least that of the leader that committed the entry: the
     * lowest term any node had when it applied it. */
    uint64_t applied_cterm[MAX_LOG];
    int calm; /* no more faults: the liveness phase */
    uint64_t last_link[MAX_NODES + 1][MAX_NODES + 1];
    int told[MAX_NODES + 1][MAX_NODES + 1]; /* link state last given to a node's core */
    /* Health flaps, drawn from their own stream: seeds without them run
     * exactly as they did before flaps existed. */
    rng hg;
    int flaps;
    double flap_rate; /* per ms */
    uint64_t last_health_change;
    /* How each node asked for votes in a term (CAND_...), with its log. */
    uint8_t cand_flags[MAX_NODES + 1][MAX_TERMS];
    uint64_t cand_index[MAX_NODES + 1][MAX_TERMS], cand_term[MAX_NODES + 1][MAX_TERMS];
    uint8_t bad_grant[MAX_NODES + 1][MAX_TERMS]; /* a voter that had to refuse, but granted */
    size_t sick_leader;                          /* unhealthy, with a healthy successor */
    uint64_t sick_term, sick_since;
    /* Until when (real ms) a transfer the sim asked for may still run: it
     * goes first (README: a transfer to an unhealthy peer is still done)
     * and gives up after an election timeout by the leader's clock. */
    uint64_t transfer_until;
} sim;

enum { CAND_UNHEALTHY = 1, CAND_TRANSFER = 2 };

static void trace(sim *s, const char *fmt, ...)
{
    if (!s->trace) return;
    va_list ap;
    va_start(ap, fmt);
    printf("%8" PRIu64 " ", s->now);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static void violate(sim *s, const char *name, const char *fmt, ...)
{
    if (s->violation) return;
    s->violation = name;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->detail, sizeof s->detail, fmt, ap);
    va_end(ap);
    trace(s, "VIOLATION %s: %s", name, s->detail);
}

static uint64_t local_now(const sim *s, const node *nd)
{
    return nd->offset + (uint64_t)((double)s->now * nd->rate);
}

static int running(const node *nd, uint64_t now) { return nd->alive && nd->paused_until <= now; }

/* ---- invariants -------------------------------------------------------- */

static void check_acting_leaders(sim *s)
{
    size_t acting = 0;
    uint64_t who[2] = {0};
    for (size_t i = 1; i <= s->n; i++) {
        node *nd = &s->nodes[i];
        if (!running(nd, s->now) || !qc_raft_is_leader(nd->r, local_now(s, nd))) continue;
        if (acting < 2) who[acting] = i;
        acting++;
    }
    if (acting > 1)
        violate(s, "one-acting-leader", "nodes %" PRIu64 " and %" PRIu64 " both act as leader",
                who[0], who[1]);
}

static void check_terms(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    uint64_t term = qc_raft_term(nd->r);
    if (term < nd->max_term_seen)
        violate(s, "term-monotonic", "node %zu went from term %" PRIu64 " to %" PRIu64, i,
                nd->max_term_seen, term);
}

static void record_vote_health(sim *s, size_t i, const qc_msg *m);

static void record_sent(sim *s, size_t i, const qc_msg *m)
{
    node *nd = &s->nodes[i];
    if (m->term > nd->max_term_seen && m->type != QC_MSG_PREVOTE &&
        !(m->type == QC_MSG_PREVOTE_RESP && !m->reject))
        nd->max_term_seen = m->term;
    if (m->type != QC_MSG_VOTE_RESP || m->reject || m->term >= MAX_TERMS) return;
    uint64_t *v = &s->vote_of[i][m->term];
    if (*v && *v != m->to)
        violate(s, "one-vote-per-term",
                "node %zu voted for %" PRIu64 " and %" PRIu64 " in term %" PRIu64, i, *v, m->to,
                m->term);
    *v = m->to;
}

static void check_leader_log(sim *s, size_t i);

static int conf_lets_lead(const qc_entry *conf, uint64_t id)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n, used;
    if (qc_raft_conf_read(conf->data, conf->len, m, &n, &used)) return 0;
    for (size_t k = 0; k < n; k++)
        if (m[k].id == id)
            return (m[k].flags & QC_MEMBER_VOTER) && !(m[k].flags & QC_MEMBER_NO_LEAD);
    return 0;
}

/* Whether node i's membership lets it lead: the one in effect or, while
 * that is not known committed, the one before it (a leader managing its own
 * removal), as the core decides. The one before is committed: a leader
 * appends a change only once the previous one committed. The node's own
 * commit index cannot say which is committed: it lags, and after a restart
 * it is the one last persisted with a term or vote. */
static int node_may_lead(sim *s, size_t i)
{
    qc_raft *r = s->nodes[i].r;
    qc_entry cur, prev;
    qc_raft_conf(r, &cur);
    if (conf_lets_lead(&cur, i)) return 1;
    return cur.index > qc_raft_commit(r) && qc_raft_conf_at(r, cur.index - 1, &prev) == QC_OK &&
           conf_lets_lead(&prev, i);
}

static void check_unhealthy_elected(sim *s, size_t i, uint64_t term);

static void record_event(sim *s, size_t i, const qc_raft_event *e)
{
    if (e->type == QC_EVENT_ELECTED) {
        s->elections++;
        trace(s, "node %zu elected in term %" PRIu64, i, e->term);
        if (e->term >= MAX_TERMS) return;
        if (s->leader_of[e->term] && s->leader_of[e->term] != i)
            violate(s, "one-leader-per-term", "nodes %" PRIu64 " and %zu led term %" PRIu64,
                    s->leader_of[e->term], i, e->term);
        s->leader_of[e->term] = i;
        check_leader_log(s, i);
        check_unhealthy_elected(s, i, e->term);
        if (!node_may_lead(s, i) && !e->reason) /* a relay (reason 1) passes entries on only */
            violate(s, "only-leaders-lead",
                    "node %zu was elected in term %" PRIu64 " but may not lead", i, e->term);
    } else if (e->type == QC_EVENT_DEMOTED) {
        trace(s, "node %zu demoted in term %" PRIu64 " (%s)", i, e->term,
              qc_raft_reason_name(e->reason));
    }
}

static uint64_t conf_id(const uint8_t *data, size_t len)
{
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n, used;
    uint64_t id = CONF_TAG;
    if (qc_raft_conf_read(data, len, m, &n, &used)) return id;
    for (size_t k = 0; k < n; k++) {
        uint64_t bit = 1ull << (m[k].id - 1);
        id |= bit;
        if (m[k].flags & QC_MEMBER_VOTER) id |= bit << 8;
        if (m[k].flags & QC_MEMBER_NO_LEAD) id |= bit << 16;
    }
    return id;
}

/* The CONFIG entry data for a conf id; returns its length. */
static uint32_t conf_data(uint64_t id, uint8_t out[CONF_MAX_BYTES])
{
    qc_member m[MAX_NODES];
    size_t n = 0;
    for (uint64_t i = 1; i <= MAX_NODES; i++) {
        uint64_t bit = 1ull << (i - 1);
        if (!(id & bit)) continue;
        m[n++] = (qc_member){.id = i,
                             .flags = (uint8_t)((id & bit << 8 ? QC_MEMBER_VOTER : 0) |
                                                (id & bit << 16 ? QC_MEMBER_NO_LEAD : 0))};
    }
    qc_raft_conf_write(out, m, n);
    return (uint32_t)qc_raft_conf_size(n);
}

static uint64_t entry_id(const qc_entry *e)
{
    uint64_t id = 0;
    if (e->type == QC_ENTRY_CONFIG) return conf_id(e->data, e->len);
    if (e->len == DATA_LEN) memcpy(&id, e->data, DATA_LEN);
    return id;
}

static uint64_t chain(uint64_t h, uint64_t term, uint64_t id)
{
    h ^= term * 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull;
    h ^= id + 0x632be59bd9b4e019ull;
    return (h ^ (h >> 32)) * 0x94d049bb133111ebull;
}

/* log-matching: one index and term never name two different entries. */
static void check_persisted(sim *s, size_t i, uint64_t index, uint64_t term, uint64_t id)
{
    if (index >= MAX_LOG) return;
    for (int k = 0; k < SLOTS; k++) {
        if (s->seen_term[index][k] == term) {
            if (s->seen_id[index][k] != id)
                violate(s, "log-matching",
                        "node %zu holds %" PRIu64 "/%" PRIu64 " at index %" PRIu64
                        ", another node a different entry of that term",
                        i, term, id, index);
            return;
        }
        if (!s->seen_term[index][k]) {
            s->seen_term[index][k] = term;
            s->seen_id[index][k] = id;
            return;
        }
    }
}

/* state-machine-safety: every node applies the same entry at an index. */
static void check_applied(sim *s, size_t i, uint64_t index, uint64_t term, uint64_t id,
                          uint64_t hash)
{
    if (index >= MAX_LOG) return;
    if (s->applied_hash[index] && (s->applied_term[index] != term || s->applied_id[index] != id ||
                                   s->applied_hash[index] != hash))
        violate(s, "state-machine-safety",
                "node %zu applied %" PRIu64 "/%" PRIu64 " at index %" PRIu64
                ", another node %" PRIu64 "/%" PRIu64,
                i, term, id, index, s->applied_term[index], s->applied_id[index]);
    uint64_t now_term = qc_raft_term(s->nodes[i].r);
    if (!s->applied_hash[index] || now_term < s->applied_cterm[index])
        s->applied_cterm[index] = now_term;
    s->applied_term[index] = term;
    s->applied_id[index] = id;
    s->applied_hash[index] = hash;
    if (index > s->applied_max) s->applied_max = index;
}

/* leader-completeness: the leader of term T holds every entry committed in
 * an earlier term (applied_cterm over-estimates that term: no false alarm). */
static void check_leader_log(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    uint64_t term = qc_raft_term(nd->r);
    for (uint64_t k = nd->snap_index + 1; k <= s->applied_max && k < MAX_LOG; k++) {
        if (!s->applied_hash[k] || s->applied_cterm[k] >= term) continue;
        if (k > nd->log_last || nd->log_term[k] != s->applied_term[k] ||
            nd->log_id[k] != s->applied_id[k]) {
            violate(s, "leader-completeness",
                    "node %zu leads term %" PRIu64 " without the entry committed at %" PRIu64, i,
                    term, k);
            return;
        }
    }
}

/* ---- health ------------------------------------------------------------ */

/* Votes for an unhealthy candidate: a healthy voter that may lead and whose
 * log is as up to date as the candidate's could win in its place, so it must
 * refuse (transfers excepted: the old leader chose). The voter's log is the
 * one its answer reports; health is the sim's own truth, the same the core
 * saw (a flap first carries out what was decided before it). */
static void record_vote_health(sim *s, size_t i, const qc_msg *m)
{
    if (m->term >= MAX_TERMS) return;
    if (m->type == QC_MSG_VOTE) {
        s->cand_flags[i][m->term] =
            (uint8_t)((s->nodes[i].unhealthy ? CAND_UNHEALTHY : 0) |
                      (m->flags & QC_MSG_FLAG_TRANSFER ? CAND_TRANSFER : 0));
        s->cand_index[i][m->term] = m->index;
        s->cand_term[i][m->term] = m->log_term;
        return;
    }
    if (m->type != QC_MSG_VOTE_RESP || m->reject || m->to > s->n) return;
    size_t c = (size_t)m->to;
    uint64_t ct = s->cand_term[c][m->term], ci = s->cand_index[c][m->term];
    int ahead = ct > m->log_term || (ct == m->log_term && ci > m->index);
    if (s->cand_flags[c][m->term] == CAND_UNHEALTHY && !s->nodes[i].unhealthy && !ahead &&
        node_may_lead(s, i))
        s->bad_grant[c][m->term] = (uint8_t)i;
}

/* unhealthy-elected: no unhealthy candidate wins with a vote it could only
 * have had from a healthy voter that could have won itself. */
static void check_unhealthy_elected(sim *s, size_t i, uint64_t term)
{
    if (term < MAX_TERMS && s->bad_grant[i][term])
        violate(s, "unhealthy-elected",
                "node %zu won term %" PRIu64 " asking while unhealthy, with the vote of healthy "
                "node %u that may lead and whose log was as up to date",
                i, term, s->bad_grant[i][term]);
}

static void process(sim *s, size_t i);
static size_t acting_leader(sim *s);

/* The agent's verdict changes. A paused agent runs no checks; a dead one
 * gets it when it restarts. */
static void set_health(sim *s, size_t i, int unhealthy)
{
    node *nd = &s->nodes[i];
    if (nd->unhealthy == unhealthy || (nd->alive && nd->paused_until > s->now)) return;
    s->last_health_change = s->now;
    trace(s, "node %zu turns %s", i, unhealthy ? "unhealthy" : "healthy");
    if (nd->alive) process(s, i); /* what it decided before goes out as it was */
    nd->unhealthy = unhealthy;
    if (!nd->alive) return;
    qc_raft_set_healthy(nd->r, !unhealthy, local_now(s, nd));
    process(s, i);
    check_acting_leaders(s);
}

static void flap(sim *s)
{
    size_t leader = acting_leader(s);
    size_t i = leader && chance(&s->hg, 0.5) ? leader : 1 + below(&s->hg, s->n);
    set_health(s, i, !s->nodes[i].unhealthy);
}

/* When the network heals: all unhealthy, only the leader, none, or as is. */
static void settle_health(sim *s)
{
    size_t leader = acting_leader(s);
    size_t pick = leader ? leader : 1 + below(&s->hg, s->n);
    int pattern = (int)below(&s->hg, 4);
    for (size_t i = 1; pattern < 3 && i <= s->n; i++)
        set_health(s, i, pattern == 0 || (pattern == 1 && i == pick));
}

/* A running healthy voter that may lead and holds leader l's whole log
 * (once it did, the leader needs only a few round trips: proposals wait
 * during a transfer). */
static int healthy_successor(sim *s, size_t l)
{
    qc_raft *r = s->nodes[l].r;
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n = qc_raft_members(r, m);
    for (size_t k = 0; k < n; k++) {
        size_t v = (size_t)m[k].id;
        if (v == l || v > s->n || !(m[k].flags & QC_MEMBER_VOTER) ||
            (m[k].flags & QC_MEMBER_NO_LEAD))
            continue;
        node *nd = &s->nodes[v];
        if (running(nd, s->now) && !nd->unhealthy &&
            qc_raft_last_index(nd->r) >= qc_raft_last_index(r))
            return 1;
    }
    return 0;
}

/* unhealthy-leader-stays (calm network): an unhealthy leader with a healthy,
 * caught-up successor hands over within a bound, counted from the last
 * change of anybody's health, or from when a transfer the sim asked for
 * gave up (that one goes first, even to an unhealthy peer). */
static void check_sick_leader(sim *s)
{
    size_t l = acting_leader(s);
    int sick = l && s->nodes[l].unhealthy && healthy_successor(s, l);
    uint64_t term = sick ? qc_raft_term(s->nodes[l].r) : 0;
    if (!sick || l != s->sick_leader || term != s->sick_term ||
        s->last_health_change >= s->sick_since || s->now < s->transfer_until) {
        s->sick_leader = sick ? l : 0;
        s->sick_term = term;
        s->sick_since = s->now;
        return;
    }
    uint64_t bound = 2ull * s->heartbeat + 10ull * s->max_delay;
    if (s->now - s->sick_since > bound)
        violate(s, "unhealthy-leader-stays",
                "unhealthy node %zu still leads term %" PRIu64 " %" PRIu64
                " ms after a healthy voter could take over",
                l, term, s->now - s->sick_since);
}

/* ---- the network ------------------------------------------------------- */

/* A copy of m owning its entries (one block: the entries, then their
 * data; free(out->entries) frees it). */
static int copy_msg(const qc_msg *m, qc_msg *out)
{
    *out = *m;
    if (!m->n_entries) return 0;
    size_t bytes = m->n_entries * sizeof(qc_entry);
    for (uint32_t k = 0; k < m->n_entries; k++) bytes += m->entries[k].len;
    qc_entry *e = malloc(bytes);
    if (!e) return -1;
    uint8_t *data = (uint8_t *)(e + m->n_entries);
    for (uint32_t k = 0; k < m->n_entries; k++) {
        e[k] = m->entries[k];
        e[k].data = data;
        if (e[k].len) memcpy(data, m->entries[k].data, e[k].len);
        data += e[k].len;
    }
    out->entries = e;
    return 0;
}

static void enqueue(sim *s, const qc_msg *m, uint64_t at)
{
    if (s->n_net == MAX_INFLIGHT) return; /* a full network drops */
    node *to = &s->nodes[m->to];
    /* TCP keeps order on a link unless the sim reorders on purpose. */
    if (!chance(&s->g, 0.05) && at < to->last_from[m->from]) at = to->last_from[m->from];
    to->last_from[m->from] = at;
    qc_msg copy;
    if (copy_msg(m, &copy)) return;
    s->net[s->n_net++] = (inflight){.at = at, .m = copy};
}

static void send_msg(sim *s, const qc_msg *m)
{
    if (s->cut[m->from][m->to] || (!s->calm && chance(&s->g, s->drop))) return;
    uint64_t delay = 1 + below(&s->g, s->max_delay);
    if (!s->calm && chance(&s->g, 0.01)) delay += below(&s->g, 10 * s->max_delay); /* slow */
    enqueue(s, m, s->now + delay);
    if (!s->calm && chance(&s->g, s->dup))
        enqueue(s, m, s->now + delay + below(&s->g, s->max_delay));
}

static void crash(sim *s, size_t i);

static void install_snapshot(sim *s, size_t i, const qc_ready *rd)
{
    node *nd = &s->nodes[i];
    uint64_t hash = 0;
    if (rd->snapshot_len == DATA_LEN) memcpy(&hash, rd->snapshot, DATA_LEN);
    nd->snap_index = rd->snapshot_index;
    nd->snap_term = rd->snapshot_term;
    nd->snap_hash = hash;
    nd->snap_conf = conf_id(rd->snapshot_conf->data, rd->snapshot_conf->len);
    nd->snap_conf_index = rd->snapshot_conf->index;
    nd->log_last = nd->snap_index;
    nd->sm_index = nd->snap_index;
    nd->sm_hash = hash;
    trace(s, "node %zu installs a snapshot at %" PRIu64, i, nd->snap_index);
    if (nd->snap_index < MAX_LOG && s->applied_hash[nd->snap_index] &&
        s->applied_hash[nd->snap_index] != hash)
        violate(s, "state-machine-safety",
                "node %zu installed a snapshot at %" PRIu64
                " that differs from what was applied there",
                i, nd->snap_index);
}

static void free_write(pending_write *w)
{
    free(w->index);
    for (size_t k = 0; k < w->n_msgs; k++) free(w->msgs[k].entries);
    free(w->msgs);
}

static void drop_writes(node *nd)
{
    for (size_t k = 0; k < nd->n_writes; k++) free_write(&nd->writes[k]);
    nd->n_writes = 0;
    nd->held = 0;
}

/* Hands rd's entries and hard state to the node's writer, durable after a
 * delay drawn from the seed, never before an earlier write. */
static pending_write *submit_write(sim *s, size_t i, const qc_ready *rd)
{
    node *nd = &s->nodes[i];
    if (nd->n_writes == nd->cap_writes) {
        size_t cap = nd->cap_writes ? 2 * nd->cap_writes : 8;
        pending_write *w = realloc(nd->writes, cap * sizeof *w);
        if (!w) exit(3);
        nd->writes = w;
        nd->cap_writes = cap;
    }
    pending_write *w = &nd->writes[nd->n_writes++];
    memset(w, 0, sizeof *w);
    uint64_t after = nd->n_writes > 1 ? nd->writes[nd->n_writes - 2].at : 0;
    w->at = s->now + below(&s->g, 1 + s->max_delay);
    if (w->at < after) w->at = after;
    w->has_hs = rd->hard_state_changed;
    w->hs = rd->hs;
    w->n = rd->n_entries;
    if (w->n) {
        w->index = malloc(3 * w->n * sizeof *w->index);
        if (!w->index) exit(3);
        w->term = w->index + w->n;
        w->id = w->term + w->n;
        for (size_t k = 0; k < w->n; k++) {
            w->index[k] = rd->entries[k].index;
            w->term[k] = rd->entries[k].term;
            w->id[k] = entry_id(&rd->entries[k]);
        }
    }
    return w;
}

/* Keeps rd's messages in w until it is durable. */
static void hold_msgs(node *nd, pending_write *w, const qc_ready *rd)
{
    if (!rd->n_msgs) return;
    qc_msg *msgs = realloc(w->msgs, (w->n_msgs + rd->n_msgs) * sizeof *msgs);
    if (!msgs) exit(3);
    w->msgs = msgs;
    if (!w->n_msgs) nd->held++;
    for (size_t k = 0; k < rd->n_msgs; k++)
        if (copy_msg(&rd->msgs[k], &w->msgs[w->n_msgs++])) exit(3);
}

/* The oldest write is on disk: the log and state file say so, then its
 * messages leave. index, term: its newest entry, if it had any. */
static void write_done(sim *s, size_t i, uint64_t *index, uint64_t *term)
{
    node *nd = &s->nodes[i];
    pending_write w = nd->writes[0];
    memmove(nd->writes, nd->writes + 1, --nd->n_writes * sizeof *nd->writes);
    for (size_t k = 0; k < w.n; k++) {
        if (w.index[k] >= MAX_LOG) continue;
        nd->log_term[w.index[k]] = w.term[k];
        nd->log_id[w.index[k]] = w.id[k];
        nd->log_last = w.index[k]; /* an older tail after it is gone */
        check_persisted(s, i, w.index[k], w.term[k], w.id[k]);
    }
    if (w.n) {
        *index = w.index[w.n - 1];
        *term = w.term[w.n - 1];
    }
#ifndef QC_MUTANT_SEND_BEFORE_PERSIST
    if (w.has_hs) {
        nd->durable = w.hs;
        nd->has_durable = 1;
    }
#endif
    if (w.n_msgs) nd->held--;
    for (size_t k = 0; k < w.n_msgs; k++) {
        record_sent(s, i, &w.msgs[k]);
        send_msg(s, &w.msgs[k]);
    }
    free_write(&w);
}

/* Completes the node's writes due by now (all: every one, as the agent
 * drains its writer before installing a snapshot); tells the core unless
 * it is in the middle of a ready (tell 0: the caller does after advance). */
static void finish_writes(sim *s, size_t i, int all, int tell, uint64_t *index, uint64_t *term)
{
    node *nd = &s->nodes[i];
    int done = 0;
    while (nd->alive && nd->n_writes && (all || nd->writes[0].at <= s->now)) {
        write_done(s, i, index, term);
        done = 1;
    }
    if (!done || !tell) return;
    if (*index) qc_raft_persisted(nd->r, *index, *term);
    process(s, i);
}

static void writes_due(sim *s, size_t i)
{
    uint64_t index = 0, term = 0;
    if (running(&s->nodes[i], s->now)) finish_writes(s, i, 0, 1, &index, &term);
}

static void apply_committed(sim *s, size_t i, const qc_ready *rd)
{
    node *nd = &s->nodes[i];
    for (size_t k = 0; k < rd->n_committed; k++) {
        const qc_entry *e = &rd->committed[k];
        if (e->index != nd->sm_index + 1)
            violate(s, "state-machine-safety", "node %zu applied %" PRIu64 " after %" PRIu64, i,
                    e->index, nd->sm_index);
        nd->sm_hash = chain(nd->sm_hash, e->term, entry_id(e));
        nd->sm_index = e->index;
        check_applied(s, i, e->index, e->term, entry_id(e), nd->sm_hash);
    }
}

/* Saves a snapshot of what the node applied and compacts its log. */
static void compact(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    uint64_t index = nd->sm_index;
    if (index <= nd->snap_index || index > nd->log_last || index >= MAX_LOG) return;
    qc_entry conf;
    if (qc_raft_conf_at(nd->r, index, &conf) != QC_OK) return;
    uint64_t conf_kept = conf_id(conf.data, conf.len), conf_kept_index = conf.index;
    if (qc_raft_compact(nd->r, index) != QC_OK) return;
    nd->snap_conf = conf_kept;
    nd->snap_conf_index = conf_kept_index;
    nd->snap_term = nd->log_term[index];
    nd->snap_index = index;
    nd->snap_hash = nd->sm_hash;
    trace(s, "node %zu compacts up to %" PRIu64, i, index);
}

/* Carries the node's outputs out as the agent does: the writes go to its
 * writer (durable later, see writes_due), messages leave at once when the
 * core allows it and nothing waits before them, else with their write;
 * then the events. A crash may strike before the sends. */
static void process(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    while (nd->alive && qc_raft_has_ready(nd->r)) {
        qc_ready rd;
        qc_raft_ready(nd->r, &rd);
        uint64_t drained = 0, drained_term = 0;
        if (rd.has_snapshot) { /* the writer drains first: the log restarts after it */
            finish_writes(s, i, 1, 0, &drained, &drained_term);
            install_snapshot(s, i, &rd);
        }
        pending_write *w = NULL;
        if (rd.hard_state_changed || rd.n_entries) w = submit_write(s, i, &rd);
        if (rd.n_msgs && !s->calm && chance(&s->g, 0.0005)) {
            trace(s, "node %zu crashes before sending", i);
            crash(s, i);
            return;
        }
#ifndef QC_MUTANT_SEND_BEFORE_PERSIST
        /* A new term or vote: the agent waits until it is durable (a node
         * that wins alone leads in this very ready). */
        if (rd.hard_state_changed) {
            finish_writes(s, i, 1, 0, &drained, &drained_term);
            w = NULL;
        }
#endif
        uint8_t snap_data[DATA_LEN];
        memcpy(snap_data, &nd->snap_hash, DATA_LEN);
        for (size_t k = 0; k < rd.n_msgs; k++) {
            qc_msg *m = &rd.msgs[k];
            if (m->type == QC_MSG_SNAPSHOT) { /* the caller attaches the data */
                m->entries[0].data = snap_data;
                m->entries[0].len = DATA_LEN;
            }
            /* By the health it was decided on: it may leave after a flap. */
            record_vote_health(s, i, m);
        }
        int early = (rd.msgs_early && !nd->held) || !nd->n_writes;
#ifdef QC_MUTANT_SEND_BEFORE_PERSIST
        early = 1; /* planted bug: votes and answers leave before their write */
#endif
        if (early) {
            for (size_t k = 0; k < rd.n_msgs; k++) {
                record_sent(s, i, &rd.msgs[k]);
                send_msg(s, &rd.msgs[k]);
            }
        } else {
            hold_msgs(nd, w ? w : &nd->writes[nd->n_writes - 1], &rd);
        }
        apply_committed(s, i, &rd);
#ifdef QC_MUTANT_SEND_BEFORE_PERSIST
        if (w && w->has_hs && !chance(&s->g, 0.3)) {
            nd->durable = w->hs;
            nd->has_durable = 1;
        }
#endif
        int conf_changed = 0;
        for (size_t k = 0; k < rd.n_events; k++) {
            record_event(s, i, &rd.events[k]);
            conf_changed |= rd.events[k].type == QC_EVENT_CONFIG;
        }
        qc_raft_advance(nd->r);
        if (drained) qc_raft_persisted(nd->r, drained, drained_term);
        /* New members start with no link: tell the core what the
         * transport knows, as the agent does. */
        for (size_t p = 1; conf_changed && p <= s->n; p++)
            if (p != i && s->told[i][p] == QC_LINK_UP)
                qc_raft_link(nd->r, p, QC_LINK_UP, local_now(s, nd));
    }
    if (nd->alive) check_terms(s, i);
}

static void set_link(sim *s, size_t at, size_t peer, int state)
{
    node *nd = &s->nodes[at];
    if (!running(nd, s->now)) return; /* a paused node notices when it wakes */
    s->told[at][peer] = state;
    trace(s, "node %zu: link to %zu %s", at, peer,
          state == QC_LINK_UP     ? "up"
          : state == QC_LINK_GONE ? "gone"
                                  : "down");
    qc_raft_link(nd->r, peer, state, local_now(s, nd));
    process(s, at);
}

/* ---- faults ------------------------------------------------------------ */

typedef struct link_event {
    uint64_t at;
    uint8_t at_node, peer, state; /* QC_LINK_... */
} link_event;

static link_event link_events[4096];
static size_t n_link_events;

/* Returns when the event will really fire (never before earlier ones). */
static uint64_t schedule_link(sim *s, size_t at, size_t peer, int state, uint64_t when)
{
    if (n_link_events == sizeof link_events / sizeof *link_events) return when;
    /* The close arrives after the data sent before it, and the transport
     * reports a link's changes in the order they happened. */
    if (when < s->nodes[at].last_from[peer]) when = s->nodes[at].last_from[peer] + 1;
    if (when <= s->last_link[at][peer]) when = s->last_link[at][peer] + 1;
    s->last_link[at][peer] = when;
    link_events[n_link_events++] = (link_event){
        .at = when, .at_node = (uint8_t)at, .peer = (uint8_t)peer, .state = (uint8_t)state};
    return when;
}

static void crash(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    if (!nd->alive) return;
    trace(s, "node %zu crashes (term %" PRIu64 ")", i, qc_raft_term(nd->r));
    qc_raft_free(nd->r);
    nd->r = NULL;
    nd->alive = 0;
    if (nd->n_writes) trace(s, "node %zu loses %zu writes in flight", i, nd->n_writes);
    drop_writes(nd);
    nd->paused_until = 0;
    s->crashes++;
    /* Its in-flight messages stay (the kernel sends them); messages to it die. */
    for (size_t k = 0; k < s->n_net; k++)
        if (s->net[k].m.to == i) s->net[k].m.to = 0;
    for (size_t p = 1; p <= s->n; p++)
        if (p != i) schedule_link(s, p, i, QC_LINK_GONE, s->now + below(&s->g, 3));
}

/* The agent's rule at start (fresh_hard_state in src/agent/agent.c): a fresh node
 * writes its first state before it creates its log, so a node whose state
 * file is gone after that refuses to start and stays down, even with an
 * empty log (it may have voted in the first elections). */
static int refuses_to_start(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    if (nd->has_durable || !nd->ran) return 0;
#ifdef QC_MUTANT_STATE_LOSS_FRESH
    (void)s;
    return 0; /* starts at term 0 with its log, as the agent did */
#else
    if (!nd->refused) {
        s->refusals++;
        trace(s, "node %zu refuses to start: its state is lost, its log is not", i);
    }
    nd->refused = 1;
    return 1;
#endif
}

static void start_node(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    if (refuses_to_start(s, i)) return;
    uint64_t ids[MAX_NODES];
    for (size_t k = 0; k < s->first_members; k++) ids[k] = k + 1;
    qc_raft_config cfg = {.id = i,
                          .peers = ids,
                          .n_peers = i <= s->first_members ? s->first_members : 0,
                          .heartbeat_ms = s->heartbeat,
                          .election_ms = s->election,
                          .seed = rnd(&s->g),
                          .max_batch = s->max_batch,
                          .max_inflight = s->max_inflight};
    memset(nd->last_from, 0, sizeof nd->last_from);
    memset(s->told[i], 0, sizeof s->told[i]);
    if (qc_raft_new(&cfg, nd->has_durable ? &nd->durable : NULL, local_now(s, nd), &nd->r)) {
        fprintf(stderr, "qc_raft_new failed\n");
        exit(3);
    }
    if (!nd->log_term) {
        nd->log_term = calloc(MAX_LOG, sizeof *nd->log_term);
        nd->log_id = calloc(MAX_LOG, sizeof *nd->log_id);
        if (!nd->log_term || !nd->log_id) exit(3);
    }
    /* Recover: the snapshot, then the log after it, as on disk. */
    size_t n = (size_t)(nd->log_last - nd->snap_index);
    qc_entry *entries = calloc(n ? n : 1, sizeof *entries + DATA_LEN);
    if (!entries) exit(3);
    uint8_t *data = (uint8_t *)(entries + (n ? n : 1));
    for (size_t k = 0; k < n; k++) {
        uint64_t index = nd->snap_index + 1 + k;
        entries[k] = (qc_entry){.term = nd->log_term[index],
                                .index = index,
                                .type = nd->log_id[index] ? QC_ENTRY_DATA : QC_ENTRY_NOOP,
                                .len = nd->log_id[index] ? DATA_LEN : 0,
                                .data = data + k * DATA_LEN};
        memcpy(entries[k].data, &nd->log_id[index], DATA_LEN);
    }
    uint8_t conf_bytes[CONF_MAX_BYTES];
    /* CONFIG entries are kept as their id: rebuild their data. */
    uint8_t(*confs)[CONF_MAX_BYTES] = calloc(n ? n : 1, CONF_MAX_BYTES);
    if (!confs) exit(3);
    for (size_t k = 0; k < n; k++) {
        if (!(nd->log_id[entries[k].index] & CONF_TAG)) continue;
        entries[k].type = QC_ENTRY_CONFIG;
        entries[k].len = conf_data(nd->log_id[entries[k].index], confs[k]);
        entries[k].data = confs[k];
    }
    if (nd->snap_index) {
        qc_entry base = {.index = nd->snap_conf_index, .type = QC_ENTRY_CONFIG, .data = conf_bytes};
        base.len = conf_data(nd->snap_conf, conf_bytes);
        if (qc_raft_set_base_conf(nd->r, &base)) exit(3);
    }
    if (qc_raft_restore(nd->r, nd->snap_index, nd->snap_term, entries, n)) exit(3);
    if (nd->unhealthy) qc_raft_set_healthy(nd->r, 0, local_now(s, nd)); /* as the agent does */
    free(entries);
    free(confs);
    nd->sm_index = nd->snap_index;
    nd->sm_hash = nd->snap_hash;
    nd->alive = 1;
    nd->paused_until = 0;
    if (nd->has_durable && nd->durable.term > nd->max_term_seen)
        nd->max_term_seen = nd->durable.term;
    if (!nd->has_durable) {
        /* A node without its state has forgotten its terms: whether that is
         * safe is for one-vote-per-term and one-leader-per-term to say. */
        nd->max_term_seen = 0;
        nd->durable = (qc_hard_state){0};
        nd->has_durable = 1;
    }
    nd->ran = 1;
    for (size_t p = 1; p <= s->n; p++) {
        if (p == i || !s->nodes[p].alive) continue;
        schedule_link(s, i, p, QC_LINK_UP, s->now + 1 + below(&s->g, 3));
        schedule_link(s, p, i, QC_LINK_UP, s->now + 1 + below(&s->g, 3));
    }
}

static size_t acting_leader(sim *s)
{
    for (size_t i = 1; i <= s->n; i++) {
        node *nd = &s->nodes[i];
        if (running(nd, s->now) && qc_raft_is_leader(nd->r, local_now(s, nd))) return i;
    }
    return 0;
}

static void heal(sim *s)
{
    memset(s->cut, 0, sizeof s->cut);
    trace(s, "network heals");
}

static void partition(sim *s)
{
    heal(s);
    size_t leader = acting_leader(s);
    switch (below(&s->g, 4)) {
    case 0: { /* random halves */
        int side[MAX_NODES + 1];
        for (size_t i = 1; i <= s->n; i++) side[i] = (int)below(&s->g, 2);
        for (size_t a = 1; a <= s->n; a++)
            for (size_t b = 1; b <= s->n; b++) s->cut[a][b] = side[a] != side[b];
        trace(s, "partition: random halves");
        break;
    }
    case 1: /* the leader alone */
        if (!leader) leader = 1 + below(&s->g, s->n);
        for (size_t p = 1; p <= s->n; p++) s->cut[leader][p] = s->cut[p][leader] = p != leader;
        trace(s, "partition: node %zu isolated", leader);
        break;
    case 2: { /* one-way links */
        for (int k = 0; k < 3; k++) {
            size_t a = 1 + below(&s->g, s->n), b = 1 + below(&s->g, s->n);
            if (a != b) s->cut[a][b] = 1;
        }
        trace(s, "partition: one-way cuts");
        break;
    }
    default: { /* a bridge node sees both halves, the halves not each other */
        size_t bridge = 1 + below(&s->g, s->n);
        for (size_t a = 1; a <= s->n; a++)
            for (size_t b = 1; b <= s->n; b++)
                s->cut[a][b] = a != bridge && b != bridge && (a % 2) != (b % 2);
        trace(s, "partition: node %zu bridges", bridge);
        break;
    }
    }
}

static void change_membership(sim *s);

/* A crash that also loses the node's state file (term, vote), not its log:
 * a disk that dropped one file, a careless cleanup. Only without churn and
 * once a seed: the node refuses to start and stays down for good, and the
 * sim does not model its rejoining as a new member, so a fixed membership
 * of 3 or 5 keeps the majority that liveness needs. In half those seeds
 * only: the others keep every node for the faults that need them all. */
static void maybe_lose_state(sim *s, size_t i)
{
    node *nd = &s->nodes[i];
    if (!s->lose_state || s->state_losses || nd->alive || !chance(&s->loss_g, 0.5)) return;
    nd->has_durable = 0;
    nd->durable = (qc_hard_state){0};
    s->state_losses++;
    trace(s, "node %zu loses its state file (its log stays)", i);
}

static void inject_fault(sim *s, int calm)
{
    if (calm) return;
    size_t i = 1 + below(&s->g, s->n);
    node *nd = &s->nodes[i];
    size_t leader = acting_leader(s);
    switch (below(&s->g, s->churn ? 11 : 9)) {
    case 7: { /* a connection of i to p fails, then reconnects */
        size_t p = leader && chance(&s->g, 0.7) ? leader : 1 + below(&s->g, s->n);
        if (p == i || !nd->alive || !s->nodes[p].alive) break;
        uint64_t back = s->now + 5 + below(&s->g, s->election);
        uint64_t t1 = schedule_link(s, i, p, QC_LINK_DOWN, s->now + below(&s->g, 3));
        if (chance(&s->g, 0.5)) {
            /* i's transport closed it: p sees its inbound end (GONE) only
             * after that, closes its own, and i then sees p's end. */
            uint64_t t2 = schedule_link(s, p, i, QC_LINK_GONE, t1 + 1 + below(&s->g, 3));
            schedule_link(s, i, p, QC_LINK_GONE, t2 + 1 + below(&s->g, 3));
            schedule_link(s, p, i, QC_LINK_UP, back);
            trace(s, "link %zu-%zu closes until %" PRIu64, i, p, back);
        } else {
            trace(s, "link %zu->%zu resets one way until %" PRIu64, i, p, back);
        }
        schedule_link(s, i, p, QC_LINK_UP, back);
        break;
    }
    case 8: /* the leader's port rejects: every follower's link to it fails */
        if (!leader) break;
        for (size_t p = 1; p <= s->n; p++) {
            if (p == leader || !s->nodes[p].alive) continue;
            schedule_link(s, p, leader, QC_LINK_DOWN, s->now + below(&s->g, 3));
            schedule_link(s, p, leader, QC_LINK_UP, s->now + 5 + below(&s->g, s->election));
        }
        trace(s, "links to leader %zu reset one way", leader);
        break;
    case 0: {
        size_t who = chance(&s->g, 0.5) && leader ? leader : i;
        crash(s, who);
        maybe_lose_state(s, who);
        break;
    }
    case 1:
        if (!nd->alive) {
            trace(s, "node %zu restarts", i);
            start_node(s, i);
        }
        break;
    case 2:
        if (running(nd, s->now)) {
            if (leader && chance(&s->g, 0.5)) nd = &s->nodes[i = leader];
            nd->paused_until = s->now + below(&s->g, 3 * s->election);
            trace(s, "node %zu pauses until %" PRIu64, i, nd->paused_until);
        }
        break;
    case 3: partition(s); break;
    case 4: heal(s); break;
    case 5:
        if (leader) {
            node *ld = &s->nodes[leader];
            uint64_t to = chance(&s->g, 0.5) ? 0 : 1 + below(&s->g, s->n);
            int rc = qc_raft_transfer(ld->r, to, local_now(s, ld), 0);
            trace(s, "node %zu transfers to %" PRIu64 ": %d", leader, to, rc);
            if (!rc) {
                s->transfers++;
                s->transfer_until =
                    s->now + s->election + s->election * QC_RAFT_DRIFT_PERMILLE / 1000 + 1;
            }
            process(s, leader);
        }
        break;
    case 9:
    case 10: change_membership(s); break;
    default:
        for (size_t p = 1; p <= s->n; p++) /* restart everybody who is down */
            if (!s->nodes[p].alive && chance(&s->g, 0.5)) start_node(s, p);
        break;
    }
}

/* The leader changes one member: adds a learner, promotes or demotes one,
 * lets it lead or not, or removes it (itself included). At least one
 * voter that may lead always stays, so the cluster can recover. */
static void change_membership(sim *s)
{
    size_t l = acting_leader(s);
    if (!l) return;
    node *ld = &s->nodes[l];
    qc_entry cur;
    qc_raft_conf(ld->r, &cur);
    uint64_t id = conf_id(cur.data, cur.len);
    uint64_t bit = 1ull << below(&s->g, s->n);
    int roll = (int)below(&s->g, 10);
    if (!(id & bit))
        id |= bit; /* joins as a learner */
    else if (roll < 3)
        id &= ~(bit | bit << 8 | bit << 16); /* removed */
    else if (roll < 7)
        id ^= bit << 8; /* promoted or demoted */
    else
        id ^= bit << 16; /* may lead, or not */
    uint64_t leaders = (id >> 8) & ~(id >> 16) & 0xff;
    if (!leaders) return;
    uint8_t data[CONF_MAX_BYTES];
    uint32_t len = conf_data(id, data);
    int rc = qc_raft_propose_config(ld->r, data, len, local_now(s, ld), NULL);
    trace(s, "node %zu proposes members %#" PRIx64 ": %d", l, id & 0xffffff, rc);
    if (!rc) s->conf_changes++;
    process(s, l);
}

static void propose(sim *s)
{
    size_t l = acting_leader(s);
    if (!l) return;
    node *nd = &s->nodes[l];
    /* Once calm, clients write to healthy leaders only (as discovery with
     * ?healthy=true does), so a successor can catch up. */
    if (s->calm && nd->unhealthy) return;
    uint64_t id = ++s->next_id;
    uint8_t data[DATA_LEN];
    memcpy(data, &id, DATA_LEN);
    if (qc_raft_propose(nd->r, data, DATA_LEN, local_now(s, nd), NULL) == QC_OK) s->proposals++;
    process(s, l);
}

/* ---- the run ----------------------------------------------------------- */

static void deliver(sim *s)
{
    /* In arrival order; ties in queue order (deterministic). */
    for (;;) {
        size_t best = SIZE_MAX;
        for (size_t k = 0; k < s->n_net; k++) {
            node *to = s->net[k].m.to ? &s->nodes[s->net[k].m.to] : NULL;
            if (s->net[k].at > s->now) continue;
            if (to && to->alive && to->paused_until > s->now) continue; /* waits in the buffer */
            if (best == SIZE_MAX || s->net[k].at < s->net[best].at) best = k;
        }
        if (best == SIZE_MAX) return;
        qc_msg m = s->net[best].m;
        s->net[best] = s->net[--s->n_net];
        if (!m.to || !s->nodes[m.to].alive) {
            free(m.entries);
            continue;
        }
        node *nd = &s->nodes[m.to];
        /* A write may complete before or after a message arrives. */
        if (chance(&s->g, 0.5)) writes_due(s, (size_t)m.to);
        if (!nd->alive) {
            free(m.entries);
            continue;
        }
        if (s->trace)
            trace(s, "%" PRIu64 " -> %" PRIu64 " %s term=%" PRIu64 "%s%s%s", m.from, m.to,
                  qc_raft_msg_name(m.type), m.term, m.reject ? " reject" : "",
                  m.flags & QC_MSG_FLAG_FAST ? " fast" : "",
                  m.flags & QC_MSG_FLAG_UNHEALTHY ? " unhealthy" : "");
        qc_raft_step(nd->r, &m, local_now(s, nd));
        free(m.entries);
        /* The agent carries out a loop turn's inputs together: batch
         * some, so the core sees several inputs per ready. */
        if (!s->batching || chance(&s->g, 0.3) || (s->flaps && m.type == QC_MSG_VOTE))
            process(s, m.to); /* a vote's answer by the membership it was decided on */
        check_acting_leaders(s);
    }
}

static void fire_links(sim *s)
{
    for (;;) { /* due events, earliest first: a link's changes keep their order */
        size_t best = SIZE_MAX;
        for (size_t k = 0; k < n_link_events; k++) {
            link_event *e = &link_events[k];
            node *self = &s->nodes[e->at_node];
            if (e->at > s->now || (self->alive && self->paused_until > s->now)) continue;
            /* A live peer closes its end only after its own core heard the
             * link was down: GONE never overtakes that DOWN. */
            if (e->state == QC_LINK_GONE && s->nodes[e->peer].alive &&
                s->told[e->peer][e->at_node] == QC_LINK_UP)
                continue;
            if (best == SIZE_MAX || e->at < link_events[best].at) best = k;
        }
        if (best == SIZE_MAX) return;
        link_event e = link_events[best];
        memmove(&link_events[best], &link_events[best + 1],
                (n_link_events - best - 1) * sizeof *link_events);
        n_link_events--;
        /* An "up" for a node that died again since is stale. */
        if (e.state == QC_LINK_UP && !s->nodes[e.peer].alive) continue;
        set_link(s, e.at_node, e.peer, e.state);
        check_acting_leaders(s);
    }
}

static void tick_all(sim *s)
{
    for (size_t i = 1; i <= s->n; i++) {
        node *nd = &s->nodes[i];
        if (!running(nd, s->now)) continue;
        uint64_t now = local_now(s, nd);
        if (now < qc_raft_next_deadline(nd->r)) continue;
        qc_raft_tick(nd->r, now);
        process(s, i);
        check_acting_leaders(s);
    }
}

static void setup(sim *s, uint64_t seed, int trace_on)
{
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->g.s = seed * 0x2545f4914f6cdd1dull + 1;
    s->loss_g.s = seed * 0x9e3779b97f4a7c15ull + 7;
    s->trace = trace_on;
    s->n = below(&s->g, 2) ? 3 : 5;
    s->heartbeat = 10 + (uint32_t)below(&s->g, 41);
    s->election = s->heartbeat * (3 + (uint32_t)below(&s->g, 5));
    s->drop = chance(&s->g, 0.5) ? 0 : 0.05;
    s->dup = chance(&s->g, 0.5) ? 0 : 0.02;
    s->max_delay = 1 + (uint32_t)below(&s->g, s->heartbeat / 2);
    /* Small batches and windows interleave entries the most. */
    s->max_batch = chance(&s->g, 0.5) ? 1 + (uint32_t)below(&s->g, 4) : 0;
    s->max_inflight = chance(&s->g, 0.5) ? 1 + (uint32_t)below(&s->g, 16) : 0;
    s->batching = chance(&s->g, 0.5);
    s->churn = chance(&s->g, 0.5);
    s->first_members = s->churn && s->n == 5 && chance(&s->g, 0.5) ? 3 : s->n;
    s->hg.s = seed * 0x9fb21c651e98df25ull + 3;
    s->flaps = chance(&s->hg, 0.5);
    s->flap_rate = 1.0 / (double)(s->election * (1 + below(&s->hg, 4)));
    s->lose_state = !s->churn && chance(&s->loss_g, 0.5);
    n_link_events = 0;
    for (size_t i = 1; i <= s->n; i++) {
        node *nd = &s->nodes[i];
        /* Rates within the documented bound of QC_RAFT_DRIFT_PERMILLE. */
        nd->rate =
            1.0 + ((double)below(&s->g, 2 * QC_RAFT_DRIFT_PERMILLE + 1) - QC_RAFT_DRIFT_PERMILLE) /
                      1000.0;
        nd->offset = below(&s->g, 100000);
    }
    for (size_t i = 1; i <= s->n; i++) start_node(s, i);
    trace(s, "seed %" PRIu64 ": %zu nodes, heartbeat %u, election %u, max delay %u, drop %.2f",
          seed, s->n, s->heartbeat, s->election, s->max_delay, s->drop);
}

/* Runs one seed; returns 0 or 1 with s->violation set. */
static int run(sim *s, uint64_t seed, int trace_on, uint64_t duration_ms)
{
    setup(s, seed, trace_on);
    s->net = malloc(MAX_INFLIGHT * sizeof *s->net);
    if (!s->net) return 1;
    uint64_t calm_from = duration_ms * 6 / 10;
    uint64_t liveness_deadline = 0;
    /* One fault every 1 to 8 election timeouts, or a storm of them. */
    double fault_rate = chance(&s->g, 0.25) ? 4.0 / (double)s->election
                                            : 1.0 / (double)(s->election * (1 + below(&s->g, 8)));
    for (s->now = 1; s->now <= duration_ms && !s->violation; s->now++) {
        int calm = s->calm = s->now >= calm_from;
        if (s->now == calm_from) {
            /* Heal everything; a leader must follow within a bound. */
            heal(s);
            s->drop = 0;
            for (size_t i = 1; i <= s->n; i++) {
                if (!s->nodes[i].alive) start_node(s, i);
                s->nodes[i].paused_until = 0;
            }
            if (s->flaps) settle_health(s); /* frozen until the liveness check */
            /* Transports reconnect: every link ends up, whatever the
             * faults left it at. */
            for (size_t i = 1; i <= s->n; i++)
                for (size_t p = 1; p <= s->n; p++)
                    if (p != i) schedule_link(s, i, p, QC_LINK_UP, s->now + 1 + below(&s->g, 3));
            /* Bound: ten election timeouts, plus slow messages still in flight. */
            liveness_deadline = s->now + 10ull * 2 * s->election + 20 * s->max_delay;
        }
        if (chance(&s->g, fault_rate)) inject_fault(s, calm);
        if (s->flaps && (!calm || s->now > liveness_deadline) && chance(&s->hg, s->flap_rate))
            flap(s);
        if (chance(&s->g, 0.05)) propose(s);
        for (size_t i = 1; i <= s->n; i++)
            if (running(&s->nodes[i], s->now) &&
                s->nodes[i].sm_index > s->nodes[i].snap_index + 64 && chance(&s->g, 0.01))
                compact(s, i);
        fire_links(s);
        deliver(s);
        for (size_t i = 1; i <= s->n; i++) writes_due(s, i);
        tick_all(s);
        for (size_t i = 1; i <= s->n; i++) /* the end of a loop turn */
            if (running(&s->nodes[i], s->now)) process(s, (size_t)i);
        if (liveness_deadline && s->now == liveness_deadline && !acting_leader(s))
            violate(s, "liveness", "no leader %" PRIu64 " ms after the network healed",
                    s->now - calm_from);
        if (s->flaps && calm) check_sick_leader(s);
    }
    for (size_t i = 1; i <= s->n; i++) {
        qc_raft_free(s->nodes[i].r);
        drop_writes(&s->nodes[i]);
        free(s->nodes[i].writes);
        free(s->nodes[i].log_term);
        free(s->nodes[i].log_id);
    }
    for (size_t k = 0; k < s->n_net; k++) free(s->net[k].m.entries);
    free(s->net);
    return s->violation ? 1 : 0;
}

static int report(sim *s, uint64_t seed, int expect_fail)
{
    printf("seed %" PRIu64 ": invariant %s violated at %" PRIu64 " ms: %s\n", seed, s->violation,
           s->now, s->detail);
    printf("replay: make sim SEED=%" PRIu64 " TRACE=1\n", seed);
    if (expect_fail) printf("caught by %s at seed %" PRIu64 "\n", s->violation, seed);
    return 1;
}

/* A qc_assert that failed in the core (mk/sim.mk links this in its place,
 * -Wl,--wrap=qc_assert_fail): the seed cannot go on, so it is reported as
 * a violated invariant, with its replay command, and the run ends. */
static sim *current;
static int current_expect_fail;

_Noreturn void __wrap_qc_assert_fail(const char *file, int line, const char *cond);
_Noreturn void __wrap_qc_assert_fail(const char *file, int line, const char *cond)
{
    violate(current, "qc_assert", "%s:%d: %s", file, line, cond);
    report(current, current->seed, current_expect_fail);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *regressions = NULL;
    uint64_t first = 1, seeds = 200, duration = 20000;
    int trace_on = 0, expect_fail = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            first = strtoull(argv[++i], NULL, 10);
            seeds = 1;
        } else if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
            seeds = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--first") == 0 && i + 1 < argc) {
            first = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc) {
            duration = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--regressions") == 0 && i + 1 < argc) {
            regressions = argv[++i]; /* seeds that once failed, one a line */
        } else if (strcmp(argv[i], "--trace") == 0) {
            trace_on = 1;
        } else if (strcmp(argv[i], "--expect-fail") == 0) {
            expect_fail = 1; /* mutants: stop at the first violation */
        } else {
            fprintf(stderr, "usage: sim [--seed S | --first S --seeds N] [--duration MS] "
                            "[--trace] [--expect-fail]\n");
            return 2;
        }
    }
    static sim s;
    current = &s;
    current_expect_fail = expect_fail;
    uint64_t passed = 0, failed = 0, elections = 0, applied = 0, losses = 0, refusals = 0;
    FILE *rf = regressions ? fopen(regressions, "r") : NULL;
    if (regressions && !rf) {
        perror(regressions);
        return 2;
    }
    char line[64];
    while (rf && fgets(line, sizeof line, rf)) {
        uint64_t seed = strtoull(line, NULL, 10);
        if (!seed) continue; /* comments */
        if (run(&s, seed, trace_on, duration) == 0) {
            passed++;
        } else {
            failed++;
            report(&s, seed, 0);
        }
    }
    if (rf) fclose(rf);
    for (uint64_t seed = first; seed < first + seeds; seed++) {
        if (run(&s, seed, trace_on, duration) == 0) {
            passed++;
            elections += s.elections;
            applied += s.applied_max;
            losses += s.state_losses;
            refusals += s.refusals;
            continue;
        }
        failed++;
        if (report(&s, seed, expect_fail) && expect_fail) return 1;
    }
    printf("sim: %" PRIu64 " seeds from %" PRIu64 ", %" PRIu64 " elections, %" PRIu64
           " entries applied, %" PRIu64 " state files lost, %" PRIu64 " starts refused\n",
           seeds, first, elections, applied, losses, refusals);
    printf("%" PRIu64 " passed, %" PRIu64 " failed\n", passed, failed);
    return failed ? 1 : 0;
}
