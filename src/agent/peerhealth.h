/* Every member's health, spread without the log (README "Health checks"):
 * this node's health and its checks' statuses go to every peer in a HEALTH
 * frame when they change, on each new link and every election timeout; what
 * each peer last said is kept in its member table row. It decides nothing:
 * what it knows only shows in the views. Loop thread only. */
#ifndef QC_PEERHEALTH_H
#define QC_PEERHEALTH_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agenthistory.h"
#include "agent/membership.h"
#include "base/metrics.h"
#include "core/view.h"
#include "core/wire.h"
#include "net/net.h"

/* Embedded in its owner (the agent), which sets the fields above the line
 * before qc_peerhealth_start (self_healthy and self_checks from its
 * creation on: the views ask for this node's health before the start). */
typedef struct qc_peerhealth {
    void *ud;                                                        /* for the two below */
    int (*self_healthy)(void *ud);                                   /* this node's verdict */
    size_t (*self_checks)(void *ud, qc_check_info *out, size_t max); /* its checks */
    struct ev_loop *loop;
    qc_net *net;            /* the frames go out here */
    qc_membership *members; /* whom to tell; where what they said is kept */
    qc_agenthistory *history;
    qc_metrics *metrics;
    uint64_t period_ms; /* the election timeout */
    /* ---- its own */
    ev_timer timer;
    uint64_t seq;                                   /* the last frame's */
    qc_wire_health out;                             /* what the last frame said */
    qc_peer_check self_copy[QC_WIRE_HEALTH_CHECKS]; /* qc_peerhealth_self's */
} qc_peerhealth;

/* Starts the periodic HEALTH frames (the agent has started). */
void qc_peerhealth_start(qc_peerhealth *ph);
/* Stops them (the agent closes); harmless when never started. */
void qc_peerhealth_stop(qc_peerhealth *ph);
/* This node's health or a check's status may have changed: every peer is
 * told at once when what it was last told differs. */
void qc_peerhealth_changed(qc_peerhealth *ph);
/* The link to m came up (tell it now) or went down (its health is
 * unknown until it tells again). */
void qc_peerhealth_link(qc_peerhealth *ph, qc_peer *m, int up);
/* A HEALTH frame from peer: refused and counted when malformed, ignored
 * when older than the last one taken. */
void qc_peerhealth_on_frame(qc_peerhealth *ph, uint64_t peer, const uint8_t *data, size_t len);
/* Fills p's healthy and checks for m as this node knows them now. */
void qc_peerhealth_info(const qc_peerhealth *ph, const qc_peer *m, qc_peer_info *p);
/* Fills p's healthy and checks for this node (checks copied into ph). */
void qc_peerhealth_self(qc_peerhealth *ph, qc_peer_info *p);

#endif
