/* The WAL's writer (see walq.h): on a thread of its own, or threadless, on
 * the loop's thread inside each submit. The loop thread only queues and
 * reads progress under the mutex; the writer alone writes the log and the
 * state file, but for a drain that finds it idle with only writes queued:
 * the loop then writes them itself (one batch list at a time either way).
 * The loop never waits for the writer: a drain behind a job or a busy
 * writer returns at once, and the loop holds what depends on it.
 * Both modes take the same steps and report through the same ev_async, so
 * the loop sees one order: a write or job reported durable after
 * everything queued before it, messages held until then (agent.c).
 * Threadless, a submit returns once its write is fsynced, and the loop
 * learns it at its next turn as it would from the thread; it is for hosts
 * that must stay on one thread (the Lua module). Every write is durable
 * before it is reported, and a failure is final: a failed fsync may have
 * dropped pages, so nothing after it is written or reported durable. */
#include "store/walq.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/common.h"

typedef struct batch {
    struct batch *next;
    uint64_t seq;
    qc_walq_job_fn *job; /* a job instead of a write (qc_walq_submit_job) */
    void *job_arg;
    int compact; /* a compaction instead (qc_walq_submit_compact) */
    uint64_t snap_index, snap_term;
    int has_hs;
    qc_hard_state hs;
    size_t n;
    qc_entry *entries; /* one block with their data */
} batch;

struct qc_walq {
    struct ev_loop *loop;
    ev_async async;
    qc_wal *wal;
    qc_store *store;
    qc_walq_done_fn *done;
    void *ud;
    int threaded; /* a writer thread runs (else submits write at once) */
    pthread_t thread;
    pthread_t reaper; /* deletes the files compactions dropped (qc_wal_empty_trash) */
    pthread_mutex_t mu;
    pthread_cond_t work, reap;
    /* Under mu. */
    batch *head, *tail;
    int busy, stop;
    int reap_pending; /* the WAL's trash may hold files */
    uint64_t next_seq, done_seq, index, term;
    int failed, err;
    double syncs[QC_WALQ_SYNCS];
    size_t n_syncs;
};

static void free_batches(batch *b)
{
    while (b) {
        batch *next = b->next;
        free(b->entries);
        free(b);
        b = next;
    }
}

/* Writes the batches: entries in order, one fsync, then the newest hard
 * state. Fills *last with the newest entry written; 0 or QC_E... */
static int write_batches(qc_walq *q, const batch *b, qc_entry *last, double *sync)
{
    const qc_hard_state *hs = NULL;
    int rc = QC_OK, any = 0;
    for (; b && !rc; b = b->next) {
        if (b->n) {
            rc = qc_wal_append(q->wal, b->entries, b->n);
            *last = b->entries[b->n - 1];
            any = 1;
        }
        if (b->has_hs) hs = &b->hs;
    }
    if (!rc && any) {
        rc = qc_wal_sync(q->wal);
        *sync = qc_wal_last_sync_seconds(q->wal);
    }
    if (!rc && hs) rc = qc_store_save(q->store, hs);
    if (rc && !errno) errno = EIO;
    return rc;
}

/* Publishes that everything up to seq is durable (or that it failed);
 * idle: nothing of the taken batches is left to do. */
static void report(qc_walq *q, uint64_t seq, int rc, const qc_entry *last, double sync, int idle)
{
    pthread_mutex_lock(&q->mu);
    if (rc) {
        q->failed = 1;
        q->err = errno;
    } else {
        /* Durable in order, never back, never past what was queued; and
         * no entry counts durable before an fsync covered it. */
        qc_assert(seq > q->done_seq && seq <= q->next_seq);
        qc_assert(!last->index || sync >= 0);
        q->done_seq = seq;
        if (last->index) {
            q->index = last->index;
            q->term = last->term;
        }
        if (sync >= 0 && q->n_syncs < QC_WALQ_SYNCS) q->syncs[q->n_syncs++] = sync;
    }
    if (idle) q->busy = 0;
    pthread_mutex_unlock(&q->mu);
    ev_async_send(q->loop, &q->async);
}

static int runs_alone(const batch *b) { return b->job || b->compact; }

/* Cuts todo after its first job or compaction, or before it: a run of
 * writes shares one fsync, the others run alone, in order. Returns the
 * rest. */
static batch *take_step(batch *todo)
{
    batch *b = todo;
    if (!runs_alone(b))
        while (b->next && !runs_alone(b->next)) b = b->next;
    batch *rest = b->next;
    b->next = NULL;
    return rest;
}

/* Has the files a job or compaction dropped deleted: by the reaper thread,
 * so that the next writes wait for none of it; threadless, at once. */
static void empty_trash(qc_walq *q)
{
    if (!q->wal) return; /* a writer of jobs only (tests/c/qcwal.c) */
    if (!q->threaded) {
        qc_wal_empty_trash(q->wal); /* a file it could not unlink is harmless */
        return;
    }
    pthread_mutex_lock(&q->mu);
    q->reap_pending = 1;
    pthread_cond_signal(&q->reap);
    pthread_mutex_unlock(&q->mu);
}

/* Runs a job: the log may have changed under it (a snapshot restarts it),
 * so nothing written before it counts as the newest entry any more. */
static int run_job(qc_walq *q, const batch *b)
{
    int rc = b->job(b->job_arg);
    pthread_mutex_lock(&q->mu);
    q->index = q->term = 0;
    pthread_mutex_unlock(&q->mu);
    empty_trash(q); /* an install prunes older snapshots */
    if (rc && !errno) errno = EIO;
    return rc;
}

/* Makes the snapshot the log's and drops the entries it covers. Only a
 * failed disk fails the writer: without memory the log keeps its older
 * segments until the next snapshot, which is harmless. */
static int run_compact(qc_walq *q, const batch *b)
{
    int rc = qc_wal_add_snapshot(q->wal, b->snap_index, b->snap_term);
    if (rc == QC_OK) rc = qc_wal_compact(q->wal, b->snap_index);
    empty_trash(q);
    if (rc != QC_EIO) return QC_OK;
    if (!errno) errno = EIO;
    return rc;
}

/* Writes the batches taken, step by step, reporting each; failed: the
 * writer failed before, so none is written. */
static void write_taken(qc_walq *q, batch *todo, int failed)
{
    while (todo) {
        batch *rest = take_step(todo);
        uint64_t seq = todo->seq;
        for (const batch *b = todo; b; b = b->next) seq = b->seq;
        qc_entry last = {0};
        double sync = -1;
        errno = 0;
        int rc = failed          ? QC_EIO
                 : todo->job     ? run_job(q, todo)
                 : todo->compact ? run_compact(q, todo)
                                 : write_batches(q, todo, &last, &sync);
        if (rc) failed = 1;
        free_batches(todo);
        report(q, seq, rc, &last, sync, rest == NULL);
        todo = rest;
    }
}

/* Takes what is queued (under mu): the writer is busy with it. */
static batch *take_queued(qc_walq *q, int *failed)
{
    batch *todo = q->head;
    *failed = q->failed;
    q->head = q->tail = NULL;
    q->busy = 1;
    return todo;
}

/* Takes what is queued and writes it. */
static void write_queued(qc_walq *q)
{
    pthread_mutex_lock(&q->mu);
    int failed = 0;
    /* None: a draining loop took it, and busy is its own. */
    batch *todo = q->head ? take_queued(q, &failed) : NULL;
    pthread_mutex_unlock(&q->mu);
    write_taken(q, todo, failed);
}

static void *writer_main(void *arg)
{
    qc_walq *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stop) pthread_cond_wait(&q->work, &q->mu);
        int done = !q->head; /* stopping, all written */
        pthread_mutex_unlock(&q->mu);
        if (done) return NULL;
        write_queued(q);
    }
}

static void *reaper_main(void *arg)
{
    qc_walq *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->reap_pending && !q->stop) pthread_cond_wait(&q->reap, &q->mu);
        int go = q->reap_pending;
        q->reap_pending = 0;
        pthread_mutex_unlock(&q->mu);
        if (!go) return NULL; /* stopping: qc_wal_close empties what is left */
        qc_wal_empty_trash(q->wal);
    }
}

/* Stops the writer (after it wrote what is queued) and the reaper. */
static void stop_threads(qc_walq *q, int reaper)
{
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_signal(&q->work);
    pthread_cond_signal(&q->reap);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    if (reaper) pthread_join(q->reaper, NULL);
}

/* 0, or pthread_create's error with no thread left running. */
static int start_threads(qc_walq *q)
{
    int err = pthread_create(&q->thread, NULL, writer_main, q);
    if (err) return err;
    err = pthread_create(&q->reaper, NULL, reaper_main, q);
    if (err) stop_threads(q, 0);
    return err;
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_walq *q = w->data;
    q->done(q->ud);
}

int qc_walq_new(struct ev_loop *loop, qc_wal *wal, qc_store *store, int threadless,
                qc_walq_done_fn *done, void *ud, qc_walq **out)
{
    qc_walq *q = calloc(1, sizeof *q);
    if (!q) return QC_ENOMEM;
    *q = (qc_walq){.loop = loop, .wal = wal, .store = store, .done = done, .ud = ud};
    if (pthread_mutex_init(&q->mu, NULL) != 0) {
        free(q);
        return QC_ENOMEM;
    }
    if (pthread_cond_init(&q->work, NULL) != 0 || pthread_cond_init(&q->reap, NULL) != 0) {
        pthread_mutex_destroy(&q->mu);
        free(q); /* a cond that did init holds nothing on Linux */
        return QC_ENOMEM;
    }
    ev_async_init(&q->async, on_async);
    q->async.data = q;
    ev_async_start(loop, &q->async);
    ev_unref(loop); /* it does not keep the loop alive on its own */
    int err = threadless ? 0 : start_threads(q);
    q->threaded = !threadless;
    if (err) {
        ev_ref(loop);
        ev_async_stop(loop, &q->async);
        pthread_cond_destroy(&q->work);
        pthread_cond_destroy(&q->reap);
        pthread_mutex_destroy(&q->mu);
        free(q);
        errno = err;
        return QC_EIO;
    }
    *out = q;
    return QC_OK;
}

void qc_walq_free(qc_walq *q)
{
    if (!q) return;
    if (q->threaded) stop_threads(q, 1);
    ev_ref(q->loop);
    ev_async_stop(q->loop, &q->async);
    free_batches(q->head);
    pthread_cond_destroy(&q->work);
    pthread_cond_destroy(&q->reap);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* A batch owning a copy of the entries (one block: entries, then data). */
static batch *new_batch(const qc_entry *entries, size_t n, const qc_hard_state *hs)
{
    batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    if (hs) {
        b->has_hs = 1;
        b->hs = *hs;
    }
    if (!n) return b;
    size_t bytes = n * sizeof *entries;
    for (size_t i = 0; i < n; i++) bytes += entries[i].len;
    b->entries = malloc(bytes);
    if (!b->entries) {
        free(b);
        return NULL;
    }
    uint8_t *data = (uint8_t *)(b->entries + n);
    for (size_t i = 0; i < n; i++) {
        b->entries[i] = entries[i];
        b->entries[i].data = data;
        if (entries[i].len) memcpy(data, entries[i].data, entries[i].len);
        data += entries[i].len;
    }
    b->n = n;
    return b;
}

/* Queues b (taken) as the next write, and threadless writes it at once;
 * QC_EIO (b freed) after a failure. */
static int enqueue(qc_walq *q, batch *b, uint64_t *seq)
{
    pthread_mutex_lock(&q->mu);
    int failed = q->failed;
    if (!failed) {
        b->seq = *seq = ++q->next_seq;
        if (q->tail)
            q->tail->next = b;
        else
            q->head = b;
        q->tail = b;
        pthread_cond_signal(&q->work);
    }
    pthread_mutex_unlock(&q->mu);
    if (failed) {
        free_batches(b);
        return QC_EIO;
    }
    if (!q->threaded) write_queued(q); /* its failure is reported as the thread's */
    return QC_OK;
}

int qc_walq_submit(qc_walq *q, const qc_entry *entries, size_t n, const qc_hard_state *hs,
                   uint64_t *seq)
{
    batch *b = new_batch(entries, n, hs);
    if (!b) return QC_ENOMEM;
    return enqueue(q, b, seq);
}

int qc_walq_submit_job(qc_walq *q, qc_walq_job_fn *job, void *arg, uint64_t *seq)
{
    batch *b = calloc(1, sizeof *b);
    if (!b) return QC_ENOMEM;
    b->job = job;
    b->job_arg = arg;
    return enqueue(q, b, seq);
}

int qc_walq_submit_compact(qc_walq *q, uint64_t index, uint64_t term)
{
    batch *b = calloc(1, sizeof *b);
    if (!b) return QC_ENOMEM;
    b->compact = 1;
    b->snap_index = index;
    b->snap_term = term;
    uint64_t seq;
    return enqueue(q, b, &seq);
}

static int writes_only(const batch *b)
{
    for (; b; b = b->next)
        if (runs_alone(b)) return 0;
    return 1;
}

int qc_walq_drain(qc_walq *q)
{
    /* The writer idle: waking it and waiting for it to wake us costs two
     * thread switches, each up to a scheduler slice on a busy machine,
     * on the election path (a new term or vote is drained), so the loop
     * writes the queue itself. Never a job or a compaction (an install
     * parses a whole store, and a test holds it), and never a wait for
     * the writer: the loop would stall behind whatever it runs. Only the
     * loop queues, so nothing is queued behind what this takes. */
    pthread_mutex_lock(&q->mu);
    int done = q->failed || (!q->head && !q->busy);
    int failed = 0;
    batch *todo = NULL;
    if (!done && q->threaded && !q->busy && writes_only(q->head)) todo = take_queued(q, &failed);
    pthread_mutex_unlock(&q->mu);
    if (todo) write_taken(q, todo, failed);
    return done || todo;
}

void qc_walq_progress_get(qc_walq *q, qc_walq_progress *out)
{
    pthread_mutex_lock(&q->mu);
    out->seq = q->done_seq;
    out->index = q->index;
    out->term = q->term;
    out->failed = q->failed;
    out->err = q->err;
    out->n_syncs = q->n_syncs;
    memcpy(out->syncs, q->syncs, q->n_syncs * sizeof *q->syncs);
    q->n_syncs = 0;
    pthread_mutex_unlock(&q->mu);
}
