/* Cluster transport on libev: a listening socket, one outbound connection per
 * peer (reconnected with exponential backoff and jitter) that carries this
 * node's frames to that peer, and inbound connections that carry theirs.
 * It frames and counts bytes; it never interprets consensus.
 *
 * With a secret, every connection (peer links and joins alike) opens with
 * the handshake described in wire.h (ephemeral X25519 keys, tagged and
 * mixed with the cluster key) and every frame after it is encrypted and
 * authenticated under keys of that connection alone, so that frames from a
 * node with another secret or none, tampered frames and replayed frames or
 * connections are refused: closed, counted in qcluster_bad_frames_total and
 * qcluster_auth_failures_total, and logged once per peer or host; and so
 * that recorded traffic stays unreadable even to a later holder of the
 * secret. With a previous secret too, connections under either are taken,
 * and a dial uses the first of the two that the acceptor's challenge names.
 * The link to a peer is up only once its challenge verified. Without a
 * secret the wire format is version 1 and no challenge is sent; a node with
 * a secret and one without never link.
 *
 * Limits: at most max_inbound inbound connections at once, and at most
 * max_unidentified of them not identified yet (no hello from a known peer,
 * after AUTH with a secret); more are closed at accept, except that one
 * from a peer's address (as its host last resolved) closes the oldest
 * unidentified connection from elsewhere instead, so strangers never lock a
 * member out. A connection must finish its handshake (challenge, AUTH,
 * hello) within hello_timeout_ms; frames up to QC_WIRE_MAX_PAYLOAD; at most
 * 16 strangers at once; a slow peer's queue up to 16 MiB. Connections
 * closed at a limit are counted in qcluster_connections_dropped_total.
 * Out of descriptors or memory, the listener pauses 100 ms at a time
 * (qcluster_accept_backoffs_total{listener="cluster"}). Outbound sockets
 * bind to the listening address unless it is a wildcard. */
#ifndef QC_NET_H
#define QC_NET_H

#include <ev.h>
#include <stdint.h>

#include "base/metrics.h"
#include "core/raft.h"
#include "core/wire.h"

typedef struct qc_net qc_net;

typedef struct qc_net_callbacks {
    void *ud;
    /* A raft message arrived from a known peer; m is valid for the call. */
    void (*on_msg)(void *ud, const qc_msg *m);
    /* A known peer said hello (on each new inbound connection). */
    void (*on_hello)(void *ud, uint64_t peer, const char *metadata);
    /* The link to a peer opened (up=1: our outbound connection is
     * established) or closed (up=0: any connection to or from it closed,
     * was refused or failed). Reported on every change, never twice alike. */
    void (*on_link)(void *ud, uint64_t peer, int up);
    /* The connection the peer dialled to us ended from its side (end of
     * stream or reset): its process died or its transport gave up on us.
     * Reported before the on_link(0) it also causes; may be NULL. */
    void (*on_peer_closed)(void *ud, uint64_t peer);
    /* A FORWARD, READ_INDEX, MEMBER or HEALTH frame from a known peer; data valid
     * for the call. May be NULL. */
    void (*on_frame)(void *ud, uint64_t peer, int type, const uint8_t *data, size_t len);
    /* A node that is not a peer asks to join with payload: a connection
     * whose first frame is a JOIN (identifier NULL), or a stranger's (its
     * hello named no known peer; identifier is the hello's). Append the
     * answer's payload to answer (net owns it) before returning; net sends
     * it back as one JOIN frame on that connection and closes it. All
     * arguments are valid for the call only. host_seen is the numeric
     * address it connected from. NULL: strangers are refused (a bad frame). */
    void (*on_join)(void *ud, const char *identifier, const char *host_seen, const uint8_t *payload,
                    size_t len, qc_buf *answer);
} qc_net_callbacks;

/* The outcome of qc_net_join: rc QC_OK with the member's answer (valid for
 * the call only), QC_EIO (no connection, or it failed or closed without an
 * answer, or the answer was not one good JOIN frame), QC_EBUSY (timeout). */
typedef void qc_net_join_fn(void *arg, int rc, const uint8_t *answer, size_t len);

typedef struct qc_net_config {
    const char *identifier; /* this node */
    const char *metadata;   /* this node's metadata, JSON text, sent in hello */
    const char *listen_host;
    int listen_port;
    /* The shared cluster secret (non-empty), or NULL for none. Only a key
     * derived from it is kept; the caller still owns and wipes the text. */
    const char *secret;
    /* The secret a rotation moves away from, or NULL: taken alongside
     * secret (never without it); the same as secret is as none. */
    const char *secret_previous;
    int max_inbound;      /* inbound connections open at once; 0: 256 */
    int max_unidentified; /* of those, not identified yet; 0: 32 */
    int hello_timeout_ms; /* the handshake limit of a connection; 0: 2000 */
} qc_net_config;

/* Binds and listens at once (QC_EIO with errno set on failure; QC_EINVAL for
 * a bad cfg). cfg strings are copied. metrics may be NULL. */
int qc_net_new(struct ev_loop *loop, const qc_net_config *cfg, const qc_net_callbacks *cb,
               qc_metrics *metrics, qc_net **out);
/* Takes fd, a connected stream socket, as an inbound connection, as if the
 * listening socket had accepted it (the fuzz target tests/fuzz/fuzz_auth.c
 * drives the acceptor's side over a socketpair through it). fd is net's from
 * the call on, also on failure: QC_EBUSY (at a limit), QC_EIO (it
 * could not be set up, or its challenge not sent), else QC_OK. */
int qc_net_adopt(qc_net *n, int fd);
/* Stops every watcher, closes every socket, frees everything and zeroes the
 * key material. */
void qc_net_free(qc_net *n);
/* Adds a peer to dial; its id is qc_hash_id(identifier). Strings copied. */
int qc_net_add_peer(qc_net *n, const char *identifier, const char *host, int port);
/* Queues m for m->to. A message for a peer whose link is down is dropped
 * (raft retries); returns 0 or QC_ENOTFOUND / QC_ENOMEM. */
int qc_net_send(qc_net *n, const qc_msg *m);
/* Forgets a peer (a member removed from the cluster): closes its connections
 * both ways, stops its timers, frees it. No callback fires for it, from the
 * call or later (no on_link(0)). Its next hello is a stranger's. Safe from
 * inside any callback. QC_ENOTFOUND when id is no peer. */
int qc_net_remove_peer(qc_net *n, uint64_t id);
/* Queues a FORWARD, READ_INDEX, MEMBER or HEALTH frame for peer. QC_ENOTFOUND (no
 * such peer), QC_EIO (its link is down: nothing was queued), QC_EINVAL
 * (another frame type), QC_ENOMEM. */
int qc_net_send_frame(qc_net *n, uint64_t peer, int type, const void *data, size_t len);
/* Writes what is queued, blocking for at most timeout_ms (used at exit). */
void qc_net_flush(qc_net *n, int timeout_ms);
/* 1 when the outbound connection to peer is established. */
int qc_net_link_up(const qc_net *n, uint64_t peer);
/* Asks the member at host:port to let this node in: dials it on a
 * connection of its own (every address host resolves to, in turn), sends
 * one JOIN frame carrying payload (copied; no hello: the payload names the
 * node), and waits for one JOIN frame back. done(arg, ...) is called exactly once, from the
 * loop and never from inside this call, within about timeout_ms (> 0).
 * Several joins may be in flight. qc_net_free drops the pending ones
 * without calling done. QC_EINVAL (bad argument, payload over the frame
 * limit) or QC_ENOMEM, and then done is never called. */
int qc_net_join(qc_net *n, const char *host, int port, const void *payload, size_t len,
                int timeout_ms, qc_net_join_fn *done, void *arg);

#endif
