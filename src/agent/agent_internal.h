/* Private to the agent's files: agent.c (the loop, raft I/O, transfers,
 * the views, the life cycle), membership.c (the replicated member list
 * and what this node does for it), peerhealth.c (every member's health)
 * and agenthistory.c (the history of leader changes). No other module
 * includes it: they go through agent.h and qc_view. Every function here runs on the loop thread. */
#ifndef QC_AGENT_INTERNAL_H
#define QC_AGENT_INTERNAL_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"
#include "api/api.h"
#include "lua/config.h"
#include "agent/health.h"
#include "core/history.h"
#include "lua/luahost.h"
#include "core/members.h"
#include "base/metrics.h"
#include "net/net.h"
#include "core/raft.h"
#include "store/replica.h"
#include "store/store.h"
#include "core/view.h"

typedef struct pending_transfer pending_transfer; /* agent.c's */

/* agenthistory.c's: the history and what explains the next change. */
typedef struct agent_history {
    qc_history log;
    const char *why;        /* set by ELECTED or DEMOTED for the LEADER event after */
    uint64_t last_term;     /* of the last transition recorded */
    uint64_t transfer_term; /* a vote of a hand-over was seen for this term */
    uint64_t closed_peer;   /* the leader closed its connection (not yet recorded) */
    uint64_t preempt_term;  /* a preempting hand-over was started in this term */
} agent_history;

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
    int removed; /* no list names it: hidden from reads, kept until dropped (told) */
    /* Its health as its last HEALTH frame said (peerhealth.c); health_at
     * is when that came (ms), 0 while unknown (never told, or its link
     * went down since). */
    int healthy;
    uint64_t health_at, health_seq;
    qc_peer_check *checks; /* owned, n_checks of them */
    size_t n_checks;
} member;

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
    uint64_t api_term; /* the term long-polls were last told of (qc_api_notify) */
    qc_tls *api_tls;    /* made at load (the files checked), handed to api at start */
    qc_health *health;  /* this node's checks (NULL before the start) */
    int healthy;        /* every check passes (always with none) and no hook is stuck */
    int checks_healthy; /* the checks' verdict alone */
    int hook_stuck;     /* a hook has run past hook_stuck_ms (luahost.c) */
    /* The last APPEND from the leader (scripts/bench/hooks reads the gaps
     * between them from the debug log). */
    uint64_t append_from, append_us;
    /* Spreading it (peerhealth.c): a HEALTH frame to every peer on each
     * change, on each new link and every election timeout. */
    ev_timer health_timer;
    uint64_t health_seq;                              /* the last frame's */
    qc_wire_health health_out;                        /* what the last frame said */
    qc_peer_check self_checks[QC_WIRE_HEALTH_CHECKS]; /* self_info's copy */
    member *members;
    size_t n_members;
    uint64_t self_id;
    qc_view view;
    ev_timer raft_timer;
    ev_prepare batch; /* runs qc_agent_process() once a loop turn's input is all in */
    ev_signal sig_term, sig_int, sig_hup;
    pending_transfer *transfers;
    qc_replica *replica;
    /* Writes handed to the writer thread (walq.h): the newest one's number
     * and the newest durable; messages that wait for a write, oldest first. */
    uint64_t write_seq, durable_seq;
    struct held_msgs *held, *held_tail;
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
    int leave_done;           /* the leave at stop is answered */
    int handover_done;        /* the hand-over at stop is answered */
    int in_stop_run;          /* inside the stop's own ev_run: only it may be broken */
    int relaying;             /* leading only as a relay (no hooks) */
    uint64_t preempt_since;
    int exit_code; /* non-zero: stopping after a failure */
    const char *stop_reason;
    qc_agent_stop_fn *stop_fn; /* who stops it when it wants to stop */
    void *stop_ud;
    qc_agent_turn_fn *turn_fn; /* told after each processing turn */
    void *turn_ud;
    int wal_threadless; /* no WAL writer thread (qc_agent_set_wal_thread) */
    int started, running, stopping, closed;
    agent_history history;
};

/* ---- agent.c, for membership.c ------------------------------------------ */

/* Asks the owner to stop the agent (reason: a static string for on_stop). */
void qc_agent_want_stop(qc_agent *a, const char *reason);
/* The member table (a->members): by id or name, NULL when not in it. */
member *qc_agent_member_by_id(qc_agent *a, uint64_t id);
member *qc_agent_member_by_name(qc_agent *a, const char *identifier);
/* Frees m's strings and zeroes it (the table slot stays). */
void qc_agent_member_clear(member *m);
/* The leader the core knows, 0 for none. */
uint64_t qc_agent_leader_id(const qc_agent *a);
/* The role name of a member that does not lead now (a static string). */
const char *qc_agent_rest_role(int role, int voting);
/* base's keys overridden by over's (JSON object texts); the caller frees
 * the result; NULL when over is not an object or memory ran out. */
char *qc_agent_merge_metadata(const char *base, const char *over);
/* qc_view's is_leader (ud: the agent): this node leads, its lease holds. */
int qc_agent_view_is_leader(void *ud);
/* Whether this node votes in the membership in effect. */
int qc_agent_self_voting(const qc_agent *a);
/* Carries the core's outputs out now / at the end of this loop turn. */
void qc_agent_process(qc_agent *a);
void qc_agent_kick(qc_agent *a);
/* Queues a hook event for the Lua host (never runs it inline). */
void qc_agent_fire(qc_agent *a, const qc_hook_event *ev);
/* The node's health changed (health.c's runner): remembers it and fires
 * on_health_change; check is the check whose change did it. */
void qc_agent_health_changed(qc_agent *a, int healthy, const qc_check_info *check);
/* A member's identifier for logs: "none", "?" when unknown. */
const char *qc_agent_name_of(qc_agent *a, uint64_t id);
/* Hands over to target (0: the best peer); done(arg, rc) once the new
 * leader is known or after two election timeouts. Non-zero (and done never
 * called) when the core refused. */
int qc_agent_start_transfer(qc_agent *a, uint64_t target, int reason, qc_transfer_done_fn *done,
                            void *arg);

/* ---- peerhealth.c, for agent.c ------------------------------------------ */

/* Starts the periodic HEALTH frames (the agent has started). */
void qc_peerhealth_start(qc_agent *a);
/* Stops them (the agent closes). */
void qc_peerhealth_stop(qc_agent *a);
/* This node's health or a check's status may have changed: every peer is
 * told at once when what it was last told differs. */
void qc_peerhealth_changed(qc_agent *a);
/* The link to m came up (tell it now) or went down (its health is
 * unknown until it tells again). */
void qc_peerhealth_link(qc_agent *a, member *m, int up);
/* A HEALTH frame from peer (net's on_frame): refused and counted when
 * malformed, ignored when older than the last one taken. */
void qc_peerhealth_on_frame(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len);
/* Fills p's healthy and checks for m as this node knows them now. */
void qc_peerhealth_info(const qc_agent *a, const member *m, qc_peer_info *p);
/* Fills p's healthy and checks for this node (checks copied into a). */
void qc_peerhealth_self(qc_agent *a, qc_peer_info *p);

/* ---- agenthistory.c, for agent.c, membership.c and peerhealth.c --------- */

/* A core event (before the agent acts on it): a LEADER event is recorded
 * with its reason; ELECTED and DEMOTED give that reason. */
void qc_agenthistory_raft(qc_agent *a, const qc_raft_event *e);
/* A message from a peer (before the core takes it): a hand-over's vote. */
void qc_agenthistory_msg(qc_agent *a, const qc_msg *m);
/* A peer closed its connection (proof that it left). */
void qc_agenthistory_closed(qc_agent *a, uint64_t peer);
/* Records an event ("peer_down", "peer_up", "unhealthy", "healthy") about
 * peer (an identifier); reason a static string. */
void qc_agenthistory_note(qc_agent *a, const char *event, const char *peer, const char *reason);
/* qc_view's history (ud: the agent). */
size_t qc_agenthistory_view(void *ud, int with_events, qc_history_entry *out, size_t max);

/* ---- membership.c, for agent.c ------------------------------------------ */

/* The member list in effect (the config's peers before any list is in the
 * log) into out, which the caller frees with qc_members_free. */
int qc_membership_list_in_effect(qc_agent *a, qc_members *out);
/* QC_EVENT_CONFIG: the member table follows the list in effect. */
void qc_membership_sync(qc_agent *a);
/* A CONFIG entry (or a snapshot's membership) was applied: member hooks,
 * waiting requests settled, a stop when this node was removed. */
void qc_membership_apply_list(qc_agent *a, const qc_entry *e);
/* A MEMBER frame from peer (net's on_frame). */
void qc_membership_on_frame(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len);
/* net's on_join (ud: the agent): a node that is not a member asks to join. */
void qc_membership_on_join(void *ud, const char *identifier, const char *host_seen,
                           const uint8_t *payload, size_t len, qc_buf *answer);
/* qc_view's join, leave and set_metadata (ud: the agent). */
void qc_membership_view_join(void *ud, const char *const *addresses, size_t n,
                             qc_member_done_fn *done, void *arg);
void qc_membership_view_leave(void *ud, const char *identifier, qc_member_done_fn *done, void *arg);
void qc_membership_view_set_metadata(void *ud, const char *json, qc_member_done_fn *done,
                                     void *arg);
/* The member timer (w->data: the agent): joining, leader and own duties. */
void qc_membership_on_timer(struct ev_loop *loop, ev_timer *w, int revents);
/* Whether the core counts this node a member. */
int qc_membership_is_member(const qc_agent *a);
/* Removes identifier through the leader (a leader leaving hands over
 * first); done(arg, rc, message) once: when the applied list shows it done,
 * at the deadline, or at once when it cannot be asked. */
void qc_membership_start_leave(qc_agent *a, const char *identifier, qc_member_done_fn *done,
                               void *arg);
/* Unlinks w, answers done(arg, rc, message) and frees w. */
void qc_membership_wait_finish(qc_agent *a, member_wait *w, int rc, const char *message);

#endif
