/* The replicated state of a node: the write-ahead log (written by its
 * writer thread, walq.h), the KV state machine and its snapshots, and the
 * client requests waiting on them. The agent hands it each qc_ready; it
 * queues the writes, applies what committed, and answers waiting writes and
 * reads. It never decides anything about the log: the consensus core does. */
#ifndef QC_REPLICA_H
#define QC_REPLICA_H

#include <ev.h>
#include <stdint.h>

#include "core/kv.h"
#include "core/raft.h"
#include "core/view.h"
#include "store/store.h"
#include "store/walq.h"

typedef struct qc_replica qc_replica;

/* Applied changes, for hooks. key/value valid during the call only. */
typedef void qc_replica_change_fn(void *ud, const uint8_t *key, size_t klen, const uint8_t *value,
                                  size_t vlen, int has_value, uint64_t revision);

typedef struct qc_replica_config {
    const char *dir; /* the node's data_dir */
    qc_store *store; /* where the writer thread saves the hard state */
    /* Runs on the loop when queued writes became durable or failed: read
     * qc_replica_progress() (ud below). */
    void (*on_durable)(void *ud);
    int threadless;            /* no writer thread: the loop writes and fsyncs (walq.h) */
    uint64_t self_id;          /* origin of this node's proposals */
    uint64_t snapshot_every;   /* entries applied between snapshots; 0: 100000 */
    size_t max_key, max_value; /* KV limits; 0: the defaults */
    double request_timeout_s;  /* a write or read not answered by then: QC_EBUSY */
    qc_replica_change_fn *on_change;
    /* Hands an encoded command to the leader (0: on its way); NULL: none. */
    int (*forward)(void *ud, const uint8_t *cmd, size_t len);
    /* Asks the leader for a read point for request id (0: asked); the
     * answer comes back through qc_replica_read_point(). NULL: none. */
    int (*ask_read_point)(void *ud, uint64_t id);
    void *ud;
} qc_replica_config;

/* Opens (and recovers) the log and the state machine. On QC_ECORRUPT or
 * QC_EIO writes the reason, naming the file, into err. */
int qc_replica_open(struct ev_loop *loop, const qc_replica_config *cfg, qc_replica **out, char *err,
                    size_t errlen);
/* Answers every waiting request with QC_EBUSY and closes the files. */
void qc_replica_close(qc_replica *rp);
/* Gives the recovered log to a fresh core (right after qc_raft_new). */
int qc_replica_restore(qc_replica *rp, qc_raft *r);

/* Queues the install of rd's snapshot (taken from the core) on the writer
 * thread, before rd's writes; *seq: its write's number (0: no snapshot).
 * Messages that depend on it wait for seq like any write's. QC_ENOMEM,
 * QC_EIO once a write failed. */
int qc_replica_persist(qc_replica *rp, qc_raft *r, const qc_ready *rd, uint64_t *seq);
/* Writes up to seq are durable: the installs among them replace the state
 * machine (call before qc_raft_persisted for them, outside a ready). An
 * install that could not parse the leader's data: QC_ECORRUPT or
 * QC_ENOMEM, logged; the node must stop. */
int qc_replica_installed(qc_replica *rp, qc_raft *r, uint64_t seq, uint64_t now);
/* Queues rd's entries and hard state for the writer thread, after the
 * snapshot (*seq: the write's number, 0 when there was nothing to write).
 * QC_EIO once a write failed, QC_ENOMEM. */
int qc_replica_submit(qc_replica *rp, const qc_ready *rd, uint64_t *seq);
/* How far the writes are durable (qc_walq_progress_get). */
void qc_replica_progress(qc_replica *rp, qc_walq_progress *out);
/* qc_walq_drain: 1 when every write and install queued so far is durable
 * or failed, made so on this thread if it takes one fsync (a new term or
 * vote: rare); 0 when an install or the writer thread is ahead. */
int qc_replica_drain(qc_replica *rp);
/* Attaches the snapshot to outgoing snapshot messages. */
void qc_replica_prepare(qc_replica *rp, qc_ready *rd);
/* Applies rd's committed entries and marks whoever waited on them. */
void qc_replica_apply(qc_replica *rp, qc_raft *r, const qc_ready *rd, uint64_t now);
/* Answers the requests marked (after qc_raft_advance: an answer may bring
 * the next request, which the core must take outside its ready). */
void qc_replica_deliver(qc_replica *rp);
/* After advance: installs a finished background snapshot (compacting the
 * core's log and the WAL), or starts one in a forked child once this node's
 * next snapshot point is applied (see qc_replica_snapshot_point). One at a
 * time; a failed one is logged and tried again later. */
void qc_replica_maybe_snapshot(qc_replica *rp, qc_raft *r);
/* The index at which a node takes its next snapshot after one at last,
 * every entries apart on average but offset by a function of its id, so
 * that the nodes of a cluster snapshot at different points. */
uint64_t qc_replica_snapshot_point(uint64_t self_id, uint64_t every, uint64_t last);

/* Client requests (the qc_view KV functions). */
void qc_replica_write(qc_replica *rp, qc_raft *r, int op, const uint8_t *key, size_t klen,
                      const uint8_t *value, size_t vlen, int64_t cas, uint64_t now,
                      qc_kv_done_fn *done, void *arg);
void qc_replica_get(qc_replica *rp, qc_raft *r, const uint8_t *key, size_t klen, int stale,
                    uint64_t now, qc_kv_done_fn *done, void *arg);
void qc_replica_list(qc_replica *rp, qc_raft *r, const uint8_t *prefix, size_t plen, int stale,
                     uint64_t now, qc_kv_each_fn *each, qc_kv_done_fn *done, void *arg);

/* The leader's answer to ask_read_point: ok and the index to wait for. */
void qc_replica_read_point(qc_replica *rp, uint64_t id, int ok, uint64_t index);

uint64_t qc_replica_applied(const qc_replica *rp);

#endif
