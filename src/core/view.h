/* The agent's state as the API and the Lua host see it. The agent fills it;
 * readers must not keep the returned pointers past the current call. */
#ifndef QC_VIEW_H
#define QC_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "core/history.h"
#include "core/kv.h" /* QC_KV_... statuses */

/* A member's check as its HEALTH frames tell it (README "Health checks"). */
#define QC_PEER_CHECK_NAME 64 /* the longest name the config allows */
typedef struct qc_peer_check {
    char name[QC_PEER_CHECK_NAME + 1];
    int passing;
} qc_peer_check;

typedef struct qc_peer_info {
    const char *identifier;
    const char *host;
    int port;
    const char *metadata; /* a JSON object as text, never NULL */
    const char *role;     /* "leader", "follower", "candidate", "witness", "learner" */
    int up;               /* reachable now (self: always 1) */
    int voter;
    int is_self;
    int priority; /* 0 never leads; higher is preferred */
    /* Known healthy: self by its own checks; another member when it told
     * this node so recently over a live link (unknown counts as not). */
    int healthy;
    const qc_peer_check *checks; /* its checks as last told; NULL when unknown */
    size_t n_checks;
} qc_peer_info;

/* One of this node's health checks as the API and Lua show it. Strings are
 * valid until the loop turns; output is UTF-8 text without NUL. */
typedef struct qc_check_info {
    const char *name;
    const char *kind;   /* "exec", "http", "tcp", "ttl", "lua" */
    const char *target; /* the command, URL, address, ttl_ms or function name */
    int passing;
    const char *output; /* the last run's output (capped), "" when none */
    double since;       /* wall-clock seconds of the last status change (or start) */
    double duration;    /* seconds the last run took */
    uint64_t timeouts;  /* runs stopped at timeout_ms */
} qc_check_info;

/* done(arg, rc, message) for a membership request: rc 0 once the change is
 * committed (or nothing needed changing); else a QC_E... code and a message
 * for the user (QC_EINVAL refused, QC_ENOLEADER no leader, QC_EBUSY timed
 * out or another change in progress). message is valid during the call. */
typedef void qc_member_done_fn(void *arg, int rc, const char *message);

/* done(arg, rc) for a transfer: rc 0 done, QC_ENOTFOUND no such peer, other
 * QC_E... failed. Called exactly once, maybe before transfer() returns. */
typedef void qc_transfer_done_fn(void *arg, int rc);

/* The answer to a KV request. status: QC_KV_OK, QC_KV_CONFLICT (cas failed;
 * revision is the key's current one, 0 when absent), QC_KV_NOTFOUND,
 * QC_KV_TOOBIG, or a negative QC_E... code (QC_ENOLEADER: no leader to
 * serve it, QC_EIO: this node cannot write, QC_EBUSY: timed out). value is
 * set for a get and valid only during the call. */
typedef struct qc_kv_answer {
    int status;
    uint64_t revision;
    const uint8_t *value;
    size_t vlen;
} qc_kv_answer;
typedef void qc_kv_done_fn(void *arg, const qc_kv_answer *answer);
/* One key of a listing; valid only during the call. Return non-zero to stop. */
typedef int qc_kv_each_fn(void *arg, const uint8_t *key, size_t klen, const uint8_t *value,
                          size_t vlen, uint64_t revision);

typedef struct qc_view {
    void *ud;
    int (*is_leader)(void *ud); /* this node leads and its lease holds */
    uint64_t (*term)(void *ud);
    const char *(*role)(void *ud); /* this node's role name */
    uint64_t (*commit_index)(void *ud);
    int (*leader)(void *ud, qc_peer_info *out); /* 0, or QC_ENOLEADER */
    void (*self)(void *ud, qc_peer_info *out);
    /* The other members, up to max; returns how many there are. */
    size_t (*peers)(void *ud, qc_peer_info *out, size_t max);
    /* Hands leadership over to identifier (NULL: the best peer). */
    void (*transfer)(void *ud, const char *to, qc_transfer_done_fn *done, void *arg);
    /* Brings gauges up to date before /metrics renders. */
    void (*refresh_metrics)(void *ud);

    /* Health (NULL until the agent provides it): whether every check of
     * this node passes; its checks, up to max (returns how many there are);
     * a ttl check's report (output: len bytes, any content): 0, QC_ENOTFOUND
     * for no such check, QC_EINVAL when it is not a ttl check. */
    int (*healthy)(void *ud);
    size_t (*checks)(void *ud, qc_check_info *out, size_t max);
    int (*check_report)(void *ud, const char *name, int pass, const char *output, size_t len);

    /* The history (NULL until the agent provides it): up to max entries
     * into out, oldest first, with or without events (qc_history_list);
     * returns how many were copied. */
    size_t (*history)(void *ud, int with_events, qc_history_entry *out, size_t max);

    /* Membership (NULL until the agent provides it); each calls done once.
     * join: this node joins a running cluster through one of the members at
     * addresses ("host:port" cluster addresses, n of them). leave: removes
     * identifier (NULL: this node) through the leader; a leader leaving hands
     * leadership over first. set_metadata: replaces this node's metadata (a
     * JSON object text) through the log. */
    void (*join)(void *ud, const char *const *addresses, size_t n, qc_member_done_fn *done,
                 void *arg);
    void (*leave)(void *ud, const char *identifier, qc_member_done_fn *done, void *arg);
    void (*set_metadata)(void *ud, const char *json, qc_member_done_fn *done, void *arg);

    /* The replicated KV store (NULL until the agent provides it). Each
     * calls done exactly once, maybe before it returns. Writes answer after
     * commit; cas: QC_KV_CAS_NONE (-1), 0 (only if absent) or a revision.
     * Reads are linearizable unless stale is set (then local). */
    void (*kv_put)(void *ud, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                   int64_t cas, qc_kv_done_fn *done, void *arg);
    void (*kv_delete)(void *ud, const uint8_t *key, size_t klen, int64_t cas, qc_kv_done_fn *done,
                      void *arg);
    void (*kv_get)(void *ud, const uint8_t *key, size_t klen, int stale, qc_kv_done_fn *done,
                   void *arg);
    /* Keys with prefix in bytewise order through each, then done (status
     * QC_KV_OK or an error as above, with no keys listed). */
    void (*kv_list)(void *ud, const uint8_t *prefix, size_t plen, int stale, qc_kv_each_fn *each,
                    qc_kv_done_fn *done, void *arg);
} qc_view;

#endif
