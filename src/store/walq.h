/* The WAL's writer thread: takes batches of entries and hard states from
 * the loop, writes everything queued meanwhile with one fsync (group
 * commit), then the newest hard state, and hands back how far it is
 * durable through an ev_async. Threadless, each submit writes and fsyncs
 * on the caller's (the loop's) thread before it returns, and reports
 * through the same ev_async. A second thread deletes the files that
 * compactions drop (qc_wal_empty_trash), so that no write waits for the
 * unlinks. It decides nothing about what may be sent: the loop holds back
 * what must wait (raft.h, msgs_early). */
#ifndef QC_WALQ_H
#define QC_WALQ_H

#include <ev.h>
#include <stdint.h>

#include "core/raft.h"
#include "store/store.h"
#include "store/wal.h"

typedef struct qc_walq qc_walq;

/* Called on the loop thread when writes became durable or failed. */
typedef void qc_walq_done_fn(void *ud);

/* fsync durations handed back per call of qc_walq_progress (older ones
 * are dropped once this many wait). */
#define QC_WALQ_SYNCS 64

typedef struct qc_walq_progress {
    uint64_t seq;                /* every write up to this one is durable */
    uint64_t index, term;        /* the newest entry written so far (0: none) */
    int failed;                  /* a write or fsync failed: nothing more is written */
    int err;                     /* its errno */
    double syncs[QC_WALQ_SYNCS]; /* seconds of the log fsyncs since the last call */
    size_t n_syncs;
} qc_walq_progress;

/* Starts the threads over wal and store (borrowed; they must outlive q);
 * threadless: none, the writes happen inside the submits. done runs on
 * loop's thread, from the loop, never inside a submit. QC_ENOMEM, QC_EIO. */
int qc_walq_new(struct ev_loop *loop, qc_wal *wal, qc_store *store, int threadless,
                qc_walq_done_fn *done, void *ud, qc_walq **out);
/* Writes out what is queued, stops the thread and frees q (NULL is fine). */
void qc_walq_free(qc_walq *q);
/* Queues n entries (copied) and hs (NULL: unchanged) as one write; *seq is
 * its number (writes complete in that order). QC_ENOMEM, QC_EIO after a
 * failure. */
int qc_walq_submit(qc_walq *q, const qc_entry *entries, size_t n, const qc_hard_state *hs,
                   uint64_t *seq);
/* A job for the writer (thread), run in its turn among the writes (after
 * every write queued before it is durable, before any queued after): 0, or
 * QC_EIO (errno set), which fails the writer as a failed write does. */
typedef int qc_walq_job_fn(void *arg);
/* Queues job(arg) (arg stays the caller's; the job has run once *seq is
 * durable). The newest entry written (qc_walq_progress) starts again from
 * none after it. QC_ENOMEM, QC_EIO after a failure (job never runs). */
int qc_walq_submit_job(qc_walq *q, qc_walq_job_fn *job, void *arg, uint64_t *seq);
/* Queues the install of the snapshot file at index (written and durable,
 * qc_wal_write_snapshot) as the log's snapshot, then the compaction of the
 * log up to it (qc_wal_add_snapshot, qc_wal_compact), after the writes
 * queued before it. Off the loop: both take the log's lock, which the
 * writer holds across its fsyncs, and unlink files. The newest entry
 * written stays as it is. QC_ENOMEM, QC_EIO after a failure; a failed
 * disk then fails the writer as a failed write does. */
int qc_walq_submit_compact(qc_walq *q, uint64_t index, uint64_t term);
/* Makes every queued write durable on the calling (loop's) thread when
 * the writer thread is idle and only writes are queued; 1 then, or when
 * everything is durable or failed already. 0, at once, when a job, a
 * compaction or the writer's own work is ahead: the caller learns of it
 * through done, as of any write. Never waits for the writer thread. */
int qc_walq_drain(qc_walq *q);
/* What completed (see qc_walq_progress); takes the fsync durations. */
void qc_walq_progress_get(qc_walq *q, qc_walq_progress *out);

#endif
