/* The replicated member list as this node follows it: the member table
 * (every peer, from the config's peers until a list is in the log), the
 * applied list and its hooks, the join, leave and metadata requests, and
 * the member timer's duties (joining, promotion, reaping, preempt).
 * Membership decides; its host (the agent, or a test's fake) carries out:
 * the core, the transport, the hooks and the clock come only through
 * qc_membership_host, so this module never sees the agent. Loop thread only. */
#ifndef QC_MEMBERSHIP_H
#define QC_MEMBERSHIP_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "core/raft.h"
#include "core/view.h"
#include "lua/config.h"
#include "lua/luahost.h"
#include "net/net.h"

/* A row of the member table: a peer, from the config's peers until the
 * replicated member list rules. Strings are owned by the table. */
typedef struct qc_peer {
    char *identifier;
    char *host;
    int port;
    uint64_t id;
    char *conf_metadata; /* what the config or the replicated list says */
    char *metadata;      /* announced merged over conf_metadata */
    int up;              /* the transport's link is up (qc_membership_link) */
    int role;            /* QC_MROLE_... */
    int priority;        /* 0 never leads */
    int voting;
    uint64_t down_since; /* ms; 0 while up (reap_after) */
    int told_removed;    /* a leader told it it was removed */
    int tell_tries;
    int removed; /* no list names it: hidden from reads, kept until dropped (told) */
    /* Its health as its last HEALTH frame said (peerhealth.c's; the table
     * only frees checks); health_at is when that came (ms), 0 while
     * unknown (never told, or its link went down since). */
    int healthy;
    uint64_t health_at, health_seq;
    qc_peer_check *checks; /* owned, n_checks of them */
    size_t n_checks;
} qc_peer;

/* What membership asks of its host. Every function must be set; ud is
 * passed back. Nothing here may call back into membership. */
typedef struct qc_membership_host {
    void *ud;
    /* The monotonic clock in ms (qc_now_ms for the agent). */
    uint64_t (*now)(void *ud);

    /* The core, as read now. conf: the newest CONFIG entry, appended or
     * committed (index 0: none yet). core_members: the core's membership
     * into out (room for QC_RAFT_MAX_MEMBERS); returns how many. */
    void (*conf)(void *ud, qc_entry *out);
    size_t (*core_members)(void *ud, qc_member *out);
    /* This node is the core's leader (role), lease or not; it leads and its
     * lease holds (qc_view's is_leader); the leader the core knows, 0 for
     * none. */
    int (*raft_leader)(void *ud);
    int (*lease_leader)(void *ud);
    uint64_t (*leader)(void *ud);
    /* The commit index, the last log index, peer's match index (leader
     * only), and whether the core last heard peer is healthy (1). */
    uint64_t (*commit)(void *ud);
    uint64_t (*last_index)(void *ud);
    uint64_t (*match)(void *ud, uint64_t peer);
    int (*peer_healthy)(void *ud, uint64_t peer);
    /* Proposes data (an encoded member list) as a CONFIG entry and has the
     * outputs carried out at the end of this loop turn: 0, or the core's
     * QC_E... refusal (QC_EBUSY: a change is in flight). */
    int (*propose)(void *ud, const uint8_t *data, size_t len);
    /* Tells the core the link to peer is up (1) or down (0). */
    void (*link)(void *ud, uint64_t peer, int up);

    /* The transport. send: a MEMBER frame to a member (0 or QC_E...).
     * add_peer: dial a new member (0 or QC_ENOMEM); remove_peer: hang up
     * on one and forget it; link_up: whether the link to peer is up now.
     * join: ask host:port to let this node in (payload: its record); done
     * is called once, later, with the answer (qc_net_join's contract). */
    int (*send)(void *ud, uint64_t peer, const uint8_t *data, size_t len);
    int (*add_peer)(void *ud, const char *identifier, const char *host, int port);
    void (*remove_peer)(void *ud, uint64_t peer);
    int (*link_up)(void *ud, uint64_t peer);
    int (*join)(void *ud, const char *host, int port, const uint8_t *payload, size_t len,
                int timeout_ms, qc_net_join_fn *done, void *arg);

    /* The agent. fire: queue a hook event (never run inline). want_stop:
     * ask the owner to stop the agent (reason: a static string).
     * transfer: hand leadership over to target (0: the best peer) for
     * reason (QC_DEMOTE_...), done(arg, rc) once the new leader is known
     * or after two election timeouts; non-zero (and done never called)
     * when the core refused. transferring: a hand-over is in flight.
     * preempting: the hand-over just started preempts (for the history). */
    void (*fire)(void *ud, const qc_hook_event *ev);
    void (*want_stop)(void *ud, const char *reason);
    int (*transfer)(void *ud, uint64_t target, int reason, qc_transfer_done_fn *done, void *arg);
    int (*transferring)(void *ud);
    void (*preempting)(void *ud);
} qc_membership_host;

typedef struct qc_membership qc_membership;

/* A membership for the node cfg describes (read as it is at each call:
 * the agent loads it later; view joins replace its join list), driven
 * through host (copied). The caller frees it with qc_membership_free. */
int qc_membership_new(qc_config *cfg, const qc_membership_host *host, qc_membership **out);
/* Answers nobody (qc_membership_cancel_waits first), frees it; NULL is ok. */
void qc_membership_free(qc_membership *ms);

/* The agent starts on loop: the table from the config's peers (a node
 * that joins learns its peers from the cluster). QC_EINVAL (logged) when
 * two identifiers collide, QC_ENOMEM. Once, before the core starts. */
int qc_membership_setup(qc_membership *ms, struct ev_loop *loop);
/* The core started: entries up to quiet_until were applied before (their
 * changes fire no hooks again); conf is the CONFIG entry in effect at the
 * applied index (index 0: the config's peers), NULL when unknown. From
 * here on, requests are taken. */
void qc_membership_begin(qc_membership *ms, uint64_t quiet_until, const qc_entry *conf);

/* ---- the member table --------------------------------------------------- */

size_t qc_membership_count(const qc_membership *ms);
/* The i-th row (i < count); rows move when a member is dropped. */
qc_peer *qc_membership_at(qc_membership *ms, size_t i);
/* By id or name, NULL when not in the table (ms NULL: nobody). */
qc_peer *qc_membership_by_id(const qc_membership *ms, uint64_t id);
qc_peer *qc_membership_by_name(const qc_membership *ms, const char *identifier);
/* A member's identifier for logs: "none" for 0, "?" when unknown. */
const char *qc_membership_name_of(const qc_membership *ms, uint64_t id);
uint64_t qc_membership_self_id(const qc_membership *ms);
/* This node's metadata as it wants it known (never NULL). */
const char *qc_membership_self_metadata(const qc_membership *ms);
/* The transport's link to id came up or went down: the row (NULL when
 * not a member), marked. */
qc_peer *qc_membership_link(qc_membership *ms, uint64_t id, int up);
/* id announced metadata in its hello: taken merged over what the config
 * says of it, until a list is in the log (which then says it). */
void qc_membership_on_hello(qc_membership *ms, uint64_t id, const char *metadata);
/* The role name of a member that does not lead now (a static string). */
const char *qc_membership_rest_role(int role, int voting);
/* Whether the core counts this node a member; whether it votes. */
int qc_membership_is_member(const qc_membership *ms);
int qc_membership_self_voting(const qc_membership *ms);

/* ---- the replicated list ------------------------------------------------ */

/* The member list in effect (the config's peers before any list is in the
 * log) into out, which the caller frees with qc_members_free. */
int qc_membership_list_in_effect(const qc_membership *ms, qc_members *out);
/* QC_EVENT_CONFIG: the member table follows the list in effect. */
void qc_membership_sync(qc_membership *ms);
/* A CONFIG entry (or a snapshot's membership) was applied: member hooks,
 * waiting requests settled, a stop when this node was removed. */
void qc_membership_apply_list(qc_membership *ms, const qc_entry *e);
/* A MEMBER frame from peer. */
void qc_membership_on_frame(qc_membership *ms, uint64_t peer, const uint8_t *data, size_t len);
/* net's on_join: a node that is not a member asks to join; answer gets
 * the encoded qc_join_answer (len 0 when it could not be encoded). */
void qc_membership_on_join(qc_membership *ms, const char *identifier, const char *host_seen,
                           const uint8_t *payload, size_t len, qc_buf *answer);
/* The member timer (every third of an election timeout): joining, the
 * leader's duties (the first list, promotion, reaping, preempt) and this
 * node's own (its record as it wants it, leaves asked again). The caller
 * carries the outputs out afterwards. */
void qc_membership_tick(qc_membership *ms);

/* ---- requests of this node (API, Lua): qc_view's contract -------------- */

void qc_membership_join(qc_membership *ms, const char *const *addresses, size_t n,
                        qc_member_done_fn *done, void *arg);
/* identifier NULL or "": this node. */
void qc_membership_leave(qc_membership *ms, const char *identifier, qc_member_done_fn *done,
                         void *arg);
void qc_membership_set_metadata(qc_membership *ms, const char *json, qc_member_done_fn *done,
                                void *arg);
/* Answers every request still waiting with rc and message (the agent stops). */
void qc_membership_cancel_waits(qc_membership *ms, int rc, const char *message);

#endif
