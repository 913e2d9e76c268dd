/* The consensus core: Raft leader election (pre-vote, check-quorum, leader
 * stickiness, leases, TimeoutNow) around a log, as a pure state machine.
 * It must never touch a socket, a clock, a file, Lua or global state: time
 * comes in as now_ms, randomness from cfg.seed, and everything it wants done
 * comes out of qc_raft_ready() for the caller to carry out in this order:
 * hand the entries and hard state to be written, send the messages (those
 * not msgs_early only once every write handed out so far is durable), then
 * run the events. Writes complete later: qc_raft_persisted() says so. */
#ifndef QC_RAFT_H
#define QC_RAFT_H

#include <stddef.h>
#include <stdint.h>

typedef struct qc_raft qc_raft;

typedef enum qc_role {
    QC_ROLE_FOLLOWER = 0,
    QC_ROLE_PRECANDIDATE,
    QC_ROLE_CANDIDATE,
    QC_ROLE_LEADER,
} qc_role;

typedef enum qc_msg_type {
    QC_MSG_PREVOTE = 1,
    QC_MSG_PREVOTE_RESP,
    QC_MSG_VOTE,
    QC_MSG_VOTE_RESP,
    QC_MSG_APPEND,
    QC_MSG_APPEND_RESP,
    QC_MSG_TIMEOUT_NOW,
    /* InstallSnapshot: index/log_term name the snapshot; the caller attaches
     * its data as entries[0] before sending. Answered by an APPEND_RESP. */
    QC_MSG_SNAPSHOT,
    QC_MSG_TYPE_MAX = QC_MSG_SNAPSHOT,
} qc_msg_type;

/* Pre-vote sent because the link to the leader closed: a voter may grant it
 * despite stickiness when its own link to that leader is closed or silent. */
#define QC_MSG_FLAG_FAST 0x1
/* Vote requested on TimeoutNow: the old leader has stepped down already. */
#define QC_MSG_FLAG_TRANSFER 0x2
/* Append from a relay: a node that may not lead (a witness) but held entries
 * the voters that may lead lacked won an election only to pass them on and
 * hand over. Followers take the entries but do not name it leader. */
#define QC_MSG_FLAG_RELAY 0x4
/* Set on every message a node sends while it is unhealthy (its own health
 * verdict, qc_raft_set_healthy): peers learn its health from its traffic,
 * without a log entry per change. */
#define QC_MSG_FLAG_UNHEALTHY 0x8

typedef struct qc_entry {
    uint64_t term;
    uint64_t index;
    uint32_t type; /* QC_ENTRY_... */
    uint32_t len;
    uint8_t *data; /* owned by whoever holds the entry */
} qc_entry;

enum { QC_ENTRY_NOOP = 0, QC_ENTRY_DATA = 1, QC_ENTRY_CONFIG = 2 };

/* Membership. A CONFIG entry's data opens with the member list the core
 * reads (written with qc_raft_conf_write); the bytes after it belong to the
 * caller (addresses, metadata): the core carries them and never reads them.
 * The newest CONFIG entry in the log is in effect at once, committed or not
 * (the Raft dissertation, 4.1); a leader takes one change at a time. */
#define QC_RAFT_MAX_MEMBERS 64
#define QC_RAFT_MAX_VOTERS 32
enum {
    QC_MEMBER_VOTER = 1,   /* counts in elections and commits; else a learner */
    QC_MEMBER_NO_LEAD = 2, /* never campaigns nor takes a transfer (a witness) */
};
typedef struct qc_member {
    uint64_t id;
    uint8_t flags; /* QC_MEMBER_... */
} qc_member;

/* Bytes the member list of n members takes at the head of a CONFIG entry. */
size_t qc_raft_conf_size(size_t n);
/* Writes the member list (n <= QC_RAFT_MAX_MEMBERS) at out. */
void qc_raft_conf_write(uint8_t *out, const qc_member *members, size_t n);
/* Reads the member list at the head of data into out (room for
 * QC_RAFT_MAX_MEMBERS): *n members, *used bytes. QC_EINVAL if malformed
 * (bad version, too many members or voters, an id 0 or twice). */
int qc_raft_conf_read(const uint8_t *data, size_t len, qc_member *out, size_t *n, size_t *used);

typedef struct qc_msg {
    uint8_t type;   /* qc_msg_type */
    uint8_t flags;  /* QC_MSG_FLAG_... */
    uint8_t reject; /* responses: 0 granted/accepted, 1 refused */
    uint64_t from, to;
    uint64_t term;
    /* Requests: the sender's clock when sent. Responses echo it; the leader's
     * lease is built from the echoes it gets back. */
    uint64_t ctx;
    /* Votes: last log index and term; their responses: the voter's.
     * Append: prev index and term. Append response: the newest index
     * that matches the leader's log and is durable here (accepted) or a
     * hint (rejected). */
    uint64_t index;
    uint64_t log_term;
    uint64_t commit;
    uint32_t n_entries;
    qc_entry *entries; /* in a received message: borrowed for the call */
} qc_msg;

typedef struct qc_hard_state {
    uint64_t term;
    uint64_t vote; /* 0: none this term */
    uint64_t commit;
} qc_hard_state;

typedef enum qc_event_type {
    QC_EVENT_ELECTED = 1, /* this node became leader */
    QC_EVENT_DEMOTED,     /* this node stopped being leader */
    QC_EVENT_LEADER,      /* the known leader changed (maybe to none) */
    QC_EVENT_CAMPAIGN,    /* this node started an election in a new term */
    QC_EVENT_CONFIG,      /* the membership in effect changed: qc_raft_conf() */
} qc_event_type;

typedef enum qc_demote_reason {
    QC_DEMOTE_HIGHER_TERM = 1,
    QC_DEMOTE_LOST_QUORUM,
    QC_DEMOTE_TRANSFER,
    QC_DEMOTE_SHUTDOWN,
    QC_DEMOTE_UNHEALTHY, /* handed over because this node turned unhealthy */
} qc_demote_reason;

typedef struct qc_raft_event {
    uint8_t type;   /* qc_event_type */
    uint8_t reason; /* QC_EVENT_DEMOTED: qc_demote_reason; QC_EVENT_ELECTED: 1
                     * for a relay (see QC_MSG_FLAG_RELAY), never a leader to
                     * users: no lease, no proposals, it hands over at once */
    uint64_t term;
    uint64_t leader;      /* 0 for none */
    uint64_t prev_leader; /* 0 for none */
} qc_raft_event;

typedef struct qc_ready {
    /* A snapshot received from the leader: install it (restore the state
     * machine, save it durably) before anything else; the log now starts
     * after snapshot_index. snapshot points into the core until advance. */
    int has_snapshot;
    uint64_t snapshot_index, snapshot_term;
    const uint8_t *snapshot;
    size_t snapshot_len;
    /* The CONFIG entry in effect at snapshot_index: keep it with the
     * snapshot and hand it back through qc_raft_set_base_conf() at start. */
    const qc_entry *snapshot_conf;
    /* Append to the durable log (an entry whose index the log already
     * holds replaces it and everything after), in the order of the readies,
     * then tell qc_raft_persisted() once it is on disk (fsync). */
    const qc_entry *entries;
    size_t n_entries;
    int hard_state_changed; /* write hs durably, after the entries above */
    qc_hard_state hs;
    /* Committed entries to apply in order: all are on this node's disk. */
    const qc_entry *committed;
    size_t n_committed;
    /* 1: msgs may leave at once, before this ready's writes are durable (a
     * leader's appends; a follower's answers, which acknowledge only
     * entries already durable and say the rest once qc_raft_persisted
     * moves). 0: they leave only once this ready's writes and every
     * earlier one are durable (a new term or vote, a snapshot installed),
     * and after any message an earlier ready held back. */
    int msgs_early;
    qc_msg *msgs;
    size_t n_msgs;
    qc_raft_event *events;
    size_t n_events;
} qc_ready;

typedef struct qc_raft_config {
    uint64_t id; /* this node; never 0 */
    /* The voters of a first start, this node included (at most 32), in
     * effect until a snapshot or a CONFIG entry says otherwise. None: this
     * node waits to be added by a leader. */
    const uint64_t *peers;
    size_t n_peers;
    int no_lead; /* this node never campaigns (a witness, priority 0) */
    uint32_t heartbeat_ms;
    uint32_t election_ms;   /* timeouts are drawn from [election_ms, 2*election_ms) */
    uint32_t fast_retry_ms; /* retry of a refused fast pre-vote; 0: 5 ms */
    uint32_t max_batch;     /* entries in one append; 0: 256 */
    uint32_t max_inflight;  /* entries sent ahead of a peer's match; 0: 4096 */
    uint64_t seed;
} qc_raft_config;

/* Clocks may run at rates differing by up to this many parts per thousand:
 * a lease lasts election_ms * (1000 - 2*QC_RAFT_DRIFT_PERMILLE) / 1000 of the
 * leader's clock, which ends before any voter's stickiness does. */
#define QC_RAFT_DRIFT_PERMILLE 50

/* The highest term a message or hard state may carry (QC_EINVAL above): no
 * cluster counts that far, and campaigns from near 2^64 would wrap to 0. */
#define QC_RAFT_MAX_TERM ((uint64_t)INT64_MAX)

/* Creates a node from its durable state hs (NULL: fresh) at time now.
 * A restarted node treats itself as having just heard from a leader, so it
 * cannot vote away a lease it helped grant before the crash. QC_EINVAL for
 * a term above QC_RAFT_MAX_TERM. */
int qc_raft_new(const qc_raft_config *cfg, const qc_hard_state *hs, uint64_t now, qc_raft **out);
void qc_raft_free(qc_raft *r);

/* Inputs. Each may queue outputs; collect them with qc_raft_ready(). A
 * message of a term above QC_RAFT_MAX_TERM is refused (QC_EINVAL). */
int qc_raft_step(qc_raft *r, const qc_msg *m, uint64_t now);
void qc_raft_tick(qc_raft *r, uint64_t now);
/* Link states the transport reports. DOWN: a connection to or from the peer
 * closed or failed; the leader stops counting the peer towards its lease.
 * GONE: the peer's own side closed the connection it dialled to us (its
 * process died, or its transport gave up on us after it marked us down):
 * only this proves the peer no longer leads, so only this drives the fast
 * pre-vote and lets a voter grant one. */
enum { QC_LINK_DOWN = 0, QC_LINK_UP = 1, QC_LINK_GONE = 2 };
void qc_raft_link(qc_raft *r, uint64_t peer, int state, uint64_t now);
/* Hands leadership to peer (0: the best one). QC_ENOTLEADER (also when the
 * lease lapsed), QC_ENOTFOUND (no such or no reachable peer), QC_EBUSY (the
 * peer is unreachable or behind). The old
 * leader steps down before the target can win: there is never an overlap. */
int qc_raft_transfer(qc_raft *r, uint64_t peer, uint64_t now, int reason);
/* This node's own health verdict (1 healthy, 0 not; a new node is healthy).
 * An unhealthy node stands for election only when it knows of no healthy
 * voter that may lead and is reachable, or after two election timeouts
 * without a leader; a healthy voter that may lead refuses it (pre-vote and
 * vote, transfers excepted) unless its log is more up to date than the
 * voter's own. An unhealthy leader hands over (QC_DEMOTE_UNHEALTHY) to a
 * reachable voter known healthy, at once and on every tick until one is
 * found and caught up; a transfer it started for this ends if it turns
 * healthy again. Every message it sends says its health. */
void qc_raft_set_healthy(qc_raft *r, int healthy, uint64_t now);
/* Last known health of a member from the messages it sent (of this node:
 * its own verdict): 1 healthy, 0 unhealthy, -1 never heard or not a member. */
int qc_raft_peer_healthy(const qc_raft *r, uint64_t peer);

/* Appends data as a new entry (leader only; copied). QC_ENOTLEADER,
 * QC_EBUSY during a transfer. *index: where it will commit, if it does. */
int qc_raft_propose(qc_raft *r, const void *data, size_t len, uint64_t now, uint64_t *index);
/* Appends a CONFIG entry (data opens with qc_raft_conf_write's list) whose
 * members differ from those in effect by at most one member (added, removed
 * or flags changed; only the caller's bytes may change too). QC_ENOTLEADER;
 * QC_EBUSY while a change is uncommitted, before this term's first entry
 * commits, or during a transfer; QC_EINVAL for a malformed list, more than
 * one change, more than QC_RAFT_MAX_VOTERS voters, or no voter left. */
int qc_raft_propose_config(qc_raft *r, const void *data, size_t len, uint64_t now, uint64_t *index);
/* The CONFIG entry in effect (*out points into the core until the next
 * input). Its index is 0 when it is the first start's peers (no caller
 * bytes then). */
void qc_raft_conf(const qc_raft *r, qc_entry *out);
/* The CONFIG entry in effect at index (applied, not compacted away):
 * what a snapshot taken at index must keep. QC_EINVAL when unknown. */
int qc_raft_conf_at(const qc_raft *r, uint64_t index, qc_entry *out);
/* The members in effect into out (room for QC_RAFT_MAX_MEMBERS); how many. */
size_t qc_raft_members(const qc_raft *r, qc_member *out);
/* A leader's view of a peer: the newest index it is known to hold (0 when
 * not a member or not leading). */
uint64_t qc_raft_match(const qc_raft *r, uint64_t peer);
/* At start, before qc_raft_restore: the CONFIG entry kept with the snapshot
 * (copied). */
int qc_raft_set_base_conf(qc_raft *r, const qc_entry *conf);
/* At start, right after qc_raft_new: the durable log as recovered, after a
 * snapshot at snap_index (0: none). Entries are copied. */
int qc_raft_restore(qc_raft *r, uint64_t snap_index, uint64_t snap_term, const qc_entry *entries,
                    size_t n);
/* Forgets entries up to index, which a saved snapshot now holds (index must
 * be applied and on disk). */
int qc_raft_compact(qc_raft *r, uint64_t index);
/* A linearizable read point: answer once the state machine applied *index.
 * QC_ENOTLEADER (no lease), QC_EBUSY (this term's first entry not yet
 * committed). A lease read: safe within the clock-drift bound above. */
int qc_raft_read_index(qc_raft *r, uint64_t now, uint64_t *index);

/* A leader steps down at once (reason: QC_DEMOTE_...); QC_ENOTLEADER if it
 * was not leading. Used when stopping with nobody to hand over to. */
int qc_raft_step_down(qc_raft *r, uint64_t now, int reason);

/* Outputs: valid until qc_raft_advance(). */
int qc_raft_has_ready(const qc_raft *r);
void qc_raft_ready(qc_raft *r, qc_ready *out);
void qc_raft_advance(qc_raft *r);
/* Takes the data of the current ready's snapshot (the caller's to free();
 * NULL when none): rd->snapshot stays valid, for as long as the caller
 * keeps it, instead of until advance. */
uint8_t *qc_raft_take_snapshot(qc_raft *r);
/* The entries handed out up to index, the last of them of term term, are
 * durable (written and fsynced, in order). Until then a leader does not
 * count itself for their commit, a follower does not acknowledge them
 * (now it does, in a new APPEND_RESP) and nobody applies them. A write the
 * log replaced since (index/term no longer match) is ignored. */
void qc_raft_persisted(qc_raft *r, uint64_t index, uint64_t term);

/* The next time qc_raft_tick() has work to do. */
uint64_t qc_raft_next_deadline(const qc_raft *r);

/* Queries. */
qc_role qc_raft_role(const qc_raft *r);
uint64_t qc_raft_term(const qc_raft *r);
uint64_t qc_raft_leader(const qc_raft *r); /* 0: none known */
uint64_t qc_raft_id(const qc_raft *r);
uint64_t qc_raft_commit(const qc_raft *r);
uint64_t qc_raft_last_index(const qc_raft *r);
uint64_t qc_raft_last_term(const qc_raft *r);
uint64_t qc_raft_applied(const qc_raft *r);
/* The newest index known durable on this node (qc_raft_persisted). */
uint64_t qc_raft_stable(const qc_raft *r);
uint64_t qc_raft_snapshot_index(const qc_raft *r);
/* Term of the entry at index (0 when the log does not hold it). */
uint64_t qc_raft_term_at(const qc_raft *r, uint64_t index);
uint64_t qc_raft_vote(const qc_raft *r);
/* 1 while this node leads only as a relay (QC_MSG_FLAG_RELAY). */
int qc_raft_is_relay(const qc_raft *r);
/* True only for a leader whose lease holds at now: the answer for clients. */
int qc_raft_is_leader(const qc_raft *r, uint64_t now);
uint64_t qc_raft_lease_until(const qc_raft *r);
int qc_raft_link_up(const qc_raft *r, uint64_t peer);
const char *qc_raft_role_name(qc_role role);
const char *qc_raft_msg_name(int type);
const char *qc_raft_reason_name(int reason);

#endif
