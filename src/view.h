/* The agent's state as the API and the Lua host see it. The agent fills it;
 * readers must not keep the returned pointers past the current call. */
#ifndef QC_VIEW_H
#define QC_VIEW_H

#include <stddef.h>
#include <stdint.h>

typedef struct qc_peer_info {
    const char *identifier;
    const char *host;
    int port;
    const char *metadata; /* a JSON object as text, never NULL */
    const char *role;     /* "leader", "follower", "candidate", "witness", "learner" */
    int up;               /* reachable now (self: always 1) */
    int voter;
    int is_self;
} qc_peer_info;

/* done(arg, rc) for a transfer: rc 0 done, QC_ENOTFOUND no such peer, other
 * QC_E... failed. Called exactly once, maybe before transfer() returns. */
typedef void qc_transfer_done_fn(void *arg, int rc);

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
} qc_view;

#endif
