/* The replicated state: WAL, KV state machine, snapshots, and the client
 * requests waiting on them (see replica.h). Order is everything here: the
 * log is on disk before a message leaves, entries are applied only once
 * committed, and a read waits until what was committed when it came in
 * has been applied. */
#define _GNU_SOURCE /* pipe2, NSIG */
#include "store/replica.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/common.h"
#include "base/log.h"
#include "store/wal.h"
#include "store/walq.h"

typedef struct waiter waiter;

/* A doubly linked list of waiters, in the order they joined it. */
typedef struct wlist {
    waiter *head, *tail;
} wlist;

struct waiter {
    waiter *prev, *next;
    wlist *on; /* the list it is on */
    qc_replica *rp;
    int kind;            /* WAIT_WRITE, WAIT_GET, WAIT_LIST */
    uint64_t request_id; /* writes */
    uint64_t index;      /* reads: answer once applied >= index; 0: not known yet */
    uint8_t *key;        /* reads: key or prefix, owned */
    size_t klen;
    qc_kv_each_fn *each;
    qc_kv_done_fn *done;
    void *arg;
    ev_timer timer;
    int remote; /* a follower's read: the index comes from the leader */
    int status; /* once settled: answered by qc_replica_deliver(), outside the core's ready */
    uint64_t revision;
};

enum { WAIT_WRITE = 1, WAIT_GET, WAIT_LIST };

/* A background snapshot: a forked child writes the file; the loop learns
 * the outcome from a pipe (one byte on success, end of file either way). */
typedef struct snap_job {
    pid_t pid; /* 0: none running */
    ev_io pipe_w;
    uint64_t index, term;
    int done, ok;    /* the child finished; the file is durable */
    double retry_at; /* after a failure: no new one before (ev_now) */
    double backoff;  /* seconds to the next retry after a failure */
    double started;  /* ev_time() at the fork, for the log */
    double fork_s;   /* how long the loop spent forking */
} snap_job;

/* The newest snapshot of our own, whose raft log is dropped a slice at a
 * time; the figures are for the log line once done. */
typedef struct compaction {
    uint64_t index; /* 0: none */
    double took, fork_s;
} compaction;

struct qc_replica {
    struct ev_loop *loop;
    qc_replica_config cfg;
    qc_wal *wal;
    qc_walq *walq; /* writes entries and hard state off the loop */
    qc_kv *kv;
    qc_wal_recovery rec; /* until restore hands it to the core */
    /* The newest snapshot, for followers that need it: its file mapped
     * read-only (the page cache holds it, not our heap), the KV data and
     * the membership kept with it pointing into the mapping. */
    qc_wal_map snap_map;
    const uint8_t *snap;
    size_t snap_len;
    uint64_t snap_index, snap_term;
    qc_entry snap_conf;           /* none: len 0 */
    uint64_t snap_next;           /* take the next one once this much is applied */
    snap_job job;                 /* the one background snapshot (pid 0: none) */
    compaction compacting;        /* raft's log, up to the newest snapshot */
    ev_idle compact_w;            /* goes on with it while the loop is quiet */
    qc_raft *raft;                /* the core, from qc_replica_restore on */
    struct install_job *installs; /* the leader's snapshots queued, oldest first */
    const char *install_hold;     /* QC_TEST_INSTALL_HOLD (install_hold) */
    const char *sync_hold;        /* QC_TEST_SYNC_HOLD (sync_hold) */
    pid_t pid;                    /* the agent's, for sync_hold */
    uint64_t next_request;
    /* Per put, settling and answering take and remove one waiter among
     * as many as there are connections: lists by kind, not one list
     * scanned per entry and per answer. Writes are in request order, the
     * order their entries commit in (mostly: at the head). */
    wlist writes, reads;
    wlist settled; /* for qc_replica_deliver(), in the order settled */
};

/* ---- waiters ------------------------------------------------------------ */

static void wlist_remove(waiter *w)
{
    wlist *l = w->on;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
    w->on = NULL;
}

static void wlist_append(wlist *l, waiter *w)
{
    w->prev = l->tail;
    w->next = NULL;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    w->on = l;
}

/* Marks w answerable by qc_replica_deliver(). */
static void settle(waiter *w, int status, uint64_t revision)
{
    w->status = status;
    w->revision = revision;
    wlist_remove(w);
    wlist_append(&w->rp->settled, w);
}

/* Takes w off its list; the caller answers and frees it. */
static void unlink_waiter(qc_replica *rp, waiter *w)
{
    wlist_remove(w);
    ev_timer_stop(rp->loop, &w->timer);
}

static void answer(waiter *w, int status, uint64_t revision)
{
    qc_replica *rp = w->rp;
    unlink_waiter(rp, w);
    qc_kv_answer a = {.status = status, .revision = revision};
    w->done(w->arg, &a);
    free(w->key);
    free(w);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    answer(t->data, QC_EBUSY, 0);
}

static waiter *wait_for(qc_replica *rp, int kind, qc_kv_done_fn *done, void *arg)
{
    waiter *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    *w = (waiter){.rp = rp, .kind = kind, .done = done, .arg = arg};
    ev_timer_init(&w->timer, on_timeout, rp->cfg.request_timeout_s, 0);
    w->timer.data = w;
    ev_timer_start(rp->loop, &w->timer);
    wlist_append(kind == WAIT_WRITE ? &rp->writes : &rp->reads, w);
    return w;
}

static void fail(qc_kv_done_fn *done, void *arg, int status)
{
    qc_kv_answer a = {.status = status};
    done(arg, &a);
}

/* ---- reads -------------------------------------------------------------- */

static void read_get(qc_replica *rp, const uint8_t *key, size_t klen, qc_kv_done_fn *done,
                     void *arg)
{
    qc_kv_answer a = {.status = QC_KV_OK};
    if (qc_kv_get(rp->kv, key, klen, &a.value, &a.vlen, &a.revision) != QC_OK)
        a = (qc_kv_answer){.status = QC_KV_NOTFOUND};
    done(arg, &a);
}

typedef struct list_ctx {
    qc_kv_each_fn *each;
    void *arg;
} list_ctx;

static int list_one(void *arg, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                    uint64_t revision)
{
    list_ctx *c = arg;
    return c->each(c->arg, key, klen, value, vlen, revision);
}

static void read_list(qc_replica *rp, const uint8_t *prefix, size_t plen, qc_kv_each_fn *each,
                      qc_kv_done_fn *done, void *arg)
{
    list_ctx c = {.each = each, .arg = arg};
    int rc = qc_kv_list(rp->kv, prefix, plen, list_one, &c);
    qc_kv_answer a = {.status = rc == QC_OK ? QC_KV_OK : rc};
    done(arg, &a);
}

/* Answers a waiting read from the state machine; the caller frees w. */
static void read_now(qc_replica *rp, waiter *w)
{
    if (w->kind == WAIT_GET)
        read_get(rp, w->key, w->klen, w->done, w->arg);
    else
        read_list(rp, w->key, w->klen, w->each, w->done, w->arg);
    free(w->key);
}

/* A linearizable read: the leader's commit index when it came in (known
 * once this term's first entry committed), then wait for it to apply. */
static int read_point(qc_raft *r, uint64_t now, uint64_t *index)
{
    /* A follower has no read point: stale reads, or ask the leader. */
    return qc_raft_read_index(r, now, index);
}

/* Marks reads whose point has been applied (or that can have none now). */
static void settle_reads(qc_replica *rp, qc_raft *r, uint64_t now)
{
    uint64_t applied = qc_kv_applied_index(rp->kv);
    waiter *next;
    for (waiter *w = rp->reads.head; w; w = next) {
        next = w->next; /* settle() moves w to the settled list */
        if (w->remote) {
            if (w->index && w->index <= applied) settle(w, QC_KV_OK, 0);
            continue;
        }
        int rc = w->index ? QC_OK : read_point(r, now, &w->index);
        if (rc == QC_ENOTLEADER)
            settle(w, QC_ENOTLEADER, 0);
        else if (rc == QC_OK && w->index <= applied)
            settle(w, QC_KV_OK, 0);
    }
}

void qc_replica_deliver(qc_replica *rp)
{
    for (;;) {
        waiter *w = rp->settled.head;
        if (!w) return;
        if (w->kind == WAIT_WRITE || w->status != QC_KV_OK) {
            answer(w, w->status, w->revision);
            continue;
        }
        unlink_waiter(rp, w);
        read_now(rp, w);
        free(w);
    }
}

static void read_request(qc_replica *rp, qc_raft *r, int kind, const uint8_t *key, size_t klen,
                         int stale, uint64_t now, qc_kv_each_fn *each, qc_kv_done_fn *done,
                         void *arg)
{
    if (stale) {
        if (kind == WAIT_GET)
            read_get(rp, key, klen, done, arg);
        else
            read_list(rp, key, klen, each, done, arg);
        return;
    }
    uint64_t index = 0;
    int rc = read_point(r, now, &index);
    uint64_t id = 0;
    if (rc == QC_ENOTLEADER) { /* a follower asks the leader for the point */
        id = ++rp->next_request;
        if (!rp->cfg.ask_read_point || rp->cfg.ask_read_point(rp->cfg.ud, id) != 0) {
            fail(done, arg, QC_ENOTLEADER);
            return;
        }
    }
    if (rc == QC_OK && index <= qc_kv_applied_index(rp->kv)) {
        read_request(rp, r, kind, key, klen, 1, now, each, done, arg);
        return;
    }
    waiter *w = wait_for(rp, kind, done, arg);
    uint8_t *copy = klen ? malloc(klen) : NULL;
    if (!w || (klen && !copy)) {
        free(copy);
        if (w)
            answer(w, QC_ENOMEM, 0);
        else
            fail(done, arg, QC_ENOMEM);
        return;
    }
    if (klen) memcpy(copy, key, klen);
    w->key = copy;
    w->klen = klen;
    w->each = each;
    w->index = rc == QC_OK ? index : 0;
    w->remote = id != 0;
    w->request_id = id;
}

void qc_replica_read_point(qc_replica *rp, uint64_t id, int ok, uint64_t index)
{
    for (waiter *w = rp->reads.head; w; w = w->next) {
        if (!w->remote || w->request_id != id) continue;
        if (!ok) {
            settle(w, QC_ENOTLEADER, 0);
        } else {
            w->index = index ? index : 1;
            if (w->index <= qc_kv_applied_index(rp->kv)) settle(w, QC_KV_OK, 0);
        }
        break;
    }
    qc_replica_deliver(rp);
}

void qc_replica_get(qc_replica *rp, qc_raft *r, const uint8_t *key, size_t klen, int stale,
                    uint64_t now, qc_kv_done_fn *done, void *arg)
{
    read_request(rp, r, WAIT_GET, key, klen, stale, now, NULL, done, arg);
}

void qc_replica_list(qc_replica *rp, qc_raft *r, const uint8_t *prefix, size_t plen, int stale,
                     uint64_t now, qc_kv_each_fn *each, qc_kv_done_fn *done, void *arg)
{
    read_request(rp, r, WAIT_LIST, prefix, plen, stale, now, each, done, arg);
}

/* ---- writes ------------------------------------------------------------- */

void qc_replica_write(qc_replica *rp, qc_raft *r, int op, const uint8_t *key, size_t klen,
                      const uint8_t *value, size_t vlen, int64_t cas, uint64_t now,
                      qc_kv_done_fn *done, void *arg)
{
    int rc = qc_kv_check(rp->kv, klen, op == QC_KV_OP_PUT ? vlen : 0);
    if (rc) {
        fail(done, arg, rc == QC_ETOOBIG ? QC_KV_TOOBIG : QC_KV_INVALID);
        return;
    }
    qc_buf cmd = {0};
    uint64_t id = ++rp->next_request;
    rc = op == QC_KV_OP_PUT
             ? qc_kv_encode_put(&cmd, id, rp->cfg.self_id, key, klen, value, vlen, cas)
             : qc_kv_encode_delete(&cmd, id, rp->cfg.self_id, key, klen, cas);
    if (rc == QC_OK) rc = qc_raft_propose(r, cmd.data, cmd.len, now, NULL);
    /* A follower forwards it; it learns the outcome when the entry applies. */
    if (rc == QC_ENOTLEADER && rp->cfg.forward &&
        rp->cfg.forward(rp->cfg.ud, cmd.data, cmd.len) == 0)
        rc = QC_OK;
    qc_buf_free(&cmd);
    if (rc) {
        fail(done, arg, rc == QC_EINVAL ? QC_KV_INVALID : rc);
        return;
    }
    waiter *w = wait_for(rp, WAIT_WRITE, done, arg);
    if (!w) {
        fail(done, arg, QC_ENOMEM); /* it may still commit: nobody waits */
        return;
    }
    w->request_id = id;
}

static void settle_write(qc_replica *rp, const qc_kv_result *res)
{
    if (res->origin != rp->cfg.self_id) return;
    for (waiter *w = rp->writes.head; w; w = w->next) {
        if (w->request_id != res->request_id) continue;
        settle(w, res->status, res->revision);
        return;
    }
}

/* ---- persisting and applying --------------------------------------------- */

/* A snapshot file holds the membership in effect at its index, then the
 * KV data: "QCSN", the CONFIG entry's length, index and term, its data,
 * then the KV snapshot. A file without the magic is KV data alone (older
 * agents), with the membership of the config file. */
#define SNAP_MAGIC "QCSN"
#define SNAP_HEAD (4 + 4 + 8 + 8)

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = v << 8 | p[i];
    return v;
}

/* The envelope before the KV data: head (SNAP_HEAD bytes) and conf. */
static void snap_head(uint8_t *head, const qc_entry *conf)
{
    memcpy(head, SNAP_MAGIC, 4);
    put_be(head + 4, conf->len, 4);
    put_be(head + 8, conf->index, 8);
    put_be(head + 16, conf->term, 8);
}

/* Writes kv with conf as the file of the snapshot at index (durable once
 * it returns 0), without copying either. install (on the loop): it becomes
 * the WAL's snapshot too (qc_wal_save_snapshot). Else only the file, which
 * touches nothing of the loop's: the forked child calls it so. */
static int write_snapshot(qc_wal *w, int install, uint64_t index, uint64_t term,
                          const qc_entry *conf, const uint8_t *kv, size_t kv_len)
{
    uint8_t head[SNAP_HEAD];
    snap_head(head, conf);
    struct iovec parts[3] = {{head, SNAP_HEAD}, {conf->data, conf->len}, {(void *)kv, kv_len}};
    return install ? qc_wal_save_snapshot(w, index, term, parts, 3)
                   : qc_wal_write_snapshot(w, index, term, parts, 3);
}

/* Splits a snapshot file's data into its membership and KV data (pointers
 * into data). QC_ECORRUPT when the envelope does not add up. */
static int split_snapshot(const uint8_t *data, size_t len, qc_entry *conf, const uint8_t **kv,
                          size_t *kv_len)
{
    *conf = (qc_entry){.type = QC_ENTRY_CONFIG};
    if (len < SNAP_HEAD || memcmp(data, SNAP_MAGIC, 4) != 0) {
        *kv = data;
        *kv_len = len;
        return QC_OK;
    }
    uint64_t clen = get_be(data + 4, 4);
    if (clen > len - SNAP_HEAD) return QC_ECORRUPT;
    conf->len = (uint32_t)clen;
    conf->index = get_be(data + 8, 8);
    conf->term = get_be(data + 16, 8);
    conf->data = (uint8_t *)data + SNAP_HEAD;
    *kv = data + SNAP_HEAD + clen;
    *kv_len = len - SNAP_HEAD - clen;
    return QC_OK;
}

/* Maps the snapshot file at index for followers that need it, in place of
 * the older one. Failing (QC_EIO, QC_ECORRUPT, QC_ENOMEM) keeps the older
 * one: followers get that, and the core asks again later. */
static int keep_snapshot(qc_replica *rp, uint64_t index, uint64_t term)
{
    qc_wal_map m;
    int rc = qc_wal_map_snapshot(rp->wal, index, term, &m);
    qc_entry conf;
    const uint8_t *kv;
    size_t kv_len;
    if (rc == QC_OK && (rc = split_snapshot(m.data, m.len, &conf, &kv, &kv_len)) != QC_OK)
        qc_wal_unmap_snapshot(&m);
    if (rc) return rc;
    qc_wal_unmap_snapshot(&rp->snap_map);
    rp->snap_map = m;
    rp->snap = kv;
    rp->snap_len = kv_len;
    rp->snap_index = index;
    rp->snap_term = term;
    rp->snap_conf = conf;
    return QC_OK;
}

static uint64_t next_point(const qc_replica *rp, uint64_t last);

/* ---- installing the leader's snapshot ------------------------------------
 *
 * Off the loop, as a job of the WAL's writer thread, in its turn among the
 * log writes: the entries after the snapshot are written only after it, and
 * the messages that depend on it (the answer to the leader, later append
 * answers) wait for its sequence number like any write's (agent.c). The
 * thread parses the data into a fresh store and writes the file; the loop
 * swaps the store in once the job is durable (qc_replica_installed). Until
 * then the loop serves the old store: the core applies nothing after the
 * snapshot before the writes after it are durable, and a read that needs
 * the snapshot's index waits for the swap. */

typedef struct install_job {
    struct install_job *next;
    qc_replica *rp;
    uint64_t seq, index, term;
    uint8_t *data; /* the KV data, taken from the core */
    size_t len;
    qc_entry conf; /* the membership at index; data owned */
    qc_kv *kv;     /* the thread's result */
    int status;    /* QC_OK, or why kv is not it (QC_ECORRUPT, QC_ENOMEM) */
    double queued; /* ev_time() when queued, for the log */
} install_job;

static void install_free(install_job *j)
{
    qc_kv_free(j->kv);
    free(j->data);
    free(j->conf.data);
    free(j);
}

/* Test hook: while the file QC_TEST_INSTALL_HOLD names exists (at most a
 * minute), an install waits before it starts, so a spec can see the loop
 * serve meanwhile. */
static void install_hold(const char *path)
{
    if (!path) return;
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 6000 && access(path, F_OK) == 0; i++) nanosleep(&tick, NULL);
}

/* On the writer thread: parse into a fresh store, then the file, durably,
 * and the WAL restarts after it (a log that disagrees with the snapshot is
 * dropped, as Raft says). Touches only the job and the WAL. */
static int install_run(void *arg)
{
    install_job *j = arg;
    qc_replica *rp = j->rp;
    install_hold(rp->install_hold);
    qc_kv_config kc = {.max_key = rp->cfg.max_key, .max_value = rp->cfg.max_value};
    j->status = qc_kv_new(&kc, &j->kv);
    if (j->status == QC_OK) j->status = qc_kv_restore(j->kv, j->data, j->len);
    if (j->status != QC_OK) return QC_OK; /* the loop stops the node; the disk is untouched */
    /* The save cuts a log of another history from index on before the file
     * lands, so that a crash at any point restarts the node from a log
     * that continues its snapshot. */
    if (write_snapshot(rp->wal, 1, j->index, j->term, &j->conf, j->data, j->len) != QC_OK ||
        qc_wal_compact(rp->wal, j->index) != QC_OK)
        return QC_EIO;
    return QC_OK;
}

/* Queues the install of rd's snapshot; *seq is its write's number. */
static int install_snapshot(qc_replica *rp, qc_raft *r, const qc_ready *rd, uint64_t *seq)
{
    install_job *j = calloc(1, sizeof *j);
    if (!j) return QC_ENOMEM;
    *j = (install_job){.rp = rp,
                       .index = rd->snapshot_index,
                       .term = rd->snapshot_term,
                       .len = rd->snapshot_len,
                       .conf = *rd->snapshot_conf,
                       .queued = ev_time()};
    j->conf.data = NULL;
    if (j->conf.len && !(j->conf.data = malloc(j->conf.len))) {
        install_free(j);
        return QC_ENOMEM;
    }
    if (j->conf.len) memcpy(j->conf.data, rd->snapshot_conf->data, j->conf.len);
    j->data = qc_raft_take_snapshot(r);
    int rc = qc_walq_submit_job(rp->walq, install_run, j, &j->seq);
    if (rc) {
        install_free(j);
        return rc;
    }
    *seq = j->seq;
    qc_log(QC_LOG_INFO, "store",
           "installing the leader's snapshot at %llu (%zu bytes) in the background",
           (unsigned long long)j->index, j->len);
    install_job **tail = &rp->installs;
    while (*tail) tail = &(*tail)->next;
    *tail = j;
    return QC_OK;
}

int qc_replica_persist(qc_replica *rp, qc_raft *r, const qc_ready *rd, uint64_t *seq)
{
    *seq = 0;
    if (!rd->has_snapshot) return QC_OK;
    int rc = install_snapshot(rp, r, rd, seq);
    return rc == QC_ENOMEM ? QC_ENOMEM : rc ? QC_EIO : QC_OK;
}

/* The job is durable: its store replaces ours. */
static void install_finish(qc_replica *rp, install_job *j)
{
    qc_kv *old = rp->kv;
    rp->kv = j->kv;
    j->kv = old; /* freed with the job */
    keep_snapshot(rp, j->index, j->term);
    rp->snap_next = next_point(rp, j->index);
    qc_log(QC_LOG_INFO, "store",
           "installed the leader's snapshot at %llu (%zu bytes, %.0f ms in the background)",
           (unsigned long long)j->index, j->len, (ev_time() - j->queued) * 1000);
}

int qc_replica_installed(qc_replica *rp, qc_raft *r, uint64_t seq, uint64_t now)
{
    int any = 0;
    while (rp->installs && rp->installs->seq <= seq) {
        install_job *j = rp->installs;
        rp->installs = j->next;
        int rc = j->status;
        if (rc == QC_OK)
            install_finish(rp, j);
        else
            qc_log(QC_LOG_ERROR, "store",
                   "cannot install the leader's snapshot at %llu: %s; stopping this node "
                   "(nothing is lost: restarted, it asks for the snapshot again)",
                   (unsigned long long)j->index,
                   rc == QC_ECORRUPT ? "its data is corrupt" : qc_strerror(rc));
        install_free(j);
        if (rc) return rc;
        any = 1;
    }
    if (any) settle_reads(rp, r, now);
    return QC_OK;
}

int qc_replica_submit(qc_replica *rp, const qc_ready *rd, uint64_t *seq)
{
    *seq = 0;
    if (!rd->n_entries && !rd->hard_state_changed) return QC_OK;
    int rc = qc_walq_submit(rp->walq, rd->entries, rd->n_entries,
                            rd->hard_state_changed ? &rd->hs : NULL, seq);
    return rc == QC_ENOMEM ? QC_ENOMEM : rc ? QC_EIO : QC_OK;
}

void qc_replica_progress(qc_replica *rp, qc_walq_progress *out)
{
    qc_walq_progress_get(rp->walq, out);
    /* Entries written before a pending install may be dropped by it: they
     * prove nothing until it is done (it resets the walq's newest entry). */
    if (rp->installs && out->seq < rp->installs->seq) out->index = out->term = 0;
}

int qc_replica_drain(qc_replica *rp) { return qc_walq_drain(rp->walq); }

void qc_replica_prepare(qc_replica *rp, qc_ready *rd)
{
    for (size_t i = 0; i < rd->n_msgs; i++) {
        qc_msg *m = &rd->msgs[i];
        if (m->type != QC_MSG_SNAPSHOT || m->n_entries < 2) continue;
        /* The core's slots: [0] our data, [1] the membership at it. */
        m->entries[0] = (qc_entry){.term = rp->snap_term,
                                   .index = rp->snap_index,
                                   .len = (uint32_t)rp->snap_len,
                                   .data = (uint8_t *)rp->snap};
        if (rp->snap_conf.len) m->entries[1] = rp->snap_conf;
        m->index = rp->snap_index;
        m->log_term = rp->snap_term;
    }
}

void qc_replica_apply(qc_replica *rp, qc_raft *r, const qc_ready *rd, uint64_t now)
{
    for (size_t i = 0; i < rd->n_committed; i++) {
        const qc_entry *e = &rd->committed[i];
        if (e->index <= qc_kv_applied_index(rp->kv)) continue; /* in the snapshot */
        if (e->type != QC_ENTRY_DATA) {
            qc_kv_apply_noop(rp->kv, e->index);
            continue;
        }
        qc_kv_result res;
        if (qc_kv_apply(rp->kv, e->index, e->data, e->len, &res) != QC_OK) {
            qc_log(QC_LOG_ERROR, "kv", "out of memory applying entry %llu",
                   (unsigned long long)e->index);
            continue;
        }
        if (res.status == QC_KV_OK && rp->cfg.on_change)
            rp->cfg.on_change(rp->cfg.ud, res.key, res.klen, res.value, res.vlen,
                              res.op == QC_KV_OP_PUT, res.revision);
        settle_write(rp, &res);
    }
    settle_reads(rp, r, now);
}

/* ---- background snapshots ----------------------------------------------
 *
 * A snapshot is taken by a forked child, as Redis's BGSAVE does: fork()
 * gives it a copy-on-write view of the store as it is at the applied
 * index, and the loop goes on applying while the child serialises that
 * view and writes and fsyncs the file. The loop's part is the fork (page
 * tables: about a millisecond per GB) and, later, the install. A thread
 * would need an immutable copy (as long to make as to serialise) or a
 * persistent tree.
 *
 * Only the forking thread exists in the child; the others (the Lua host,
 * health checks, a program embedding the node) may have held locks at the
 * fork, which stay held there. So the child touches no lock: no log, no
 * stdio, no Lua, no libev; it reads the tree (only the loop changes it, and
 * the loop is the thread that forked, between two changes), calls malloc
 * (glibc takes its locks across fork()) and the WAL's write half, which
 * changes nothing in the WAL, and _exit()s. It dies with the thread that
 * forked it (PR_SET_PDEATHSIG), so a killed agent leaves a temp file, which
 * the next start removes, and no child holding data_dir's lock. */

#define SNAP_RETRY_MIN_S 1.0
#define SNAP_RETRY_MAX_S 60.0
#define COMPACT_SLICE 2000 /* raft log entries freed per loop turn: about a millisecond */

/* Where this node takes its next snapshot after one at last: the first
 * index at least half an interval on that is congruent to the node's own
 * offset, derived from its id. Nodes of one cluster thus snapshot at
 * different points (a cluster never pauses together), deterministically. */
uint64_t qc_replica_snapshot_point(uint64_t self_id, uint64_t every, uint64_t last)
{
    if (every < 2) return last + 1;
    uint64_t z = self_id + 0x9e3779b97f4a7c15ull; /* splitmix64: spread close ids */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    uint64_t offset = (z ^ (z >> 31)) % every;
    uint64_t base = last + every / 2 + 1;
    return base + (offset + every - base % every) % every;
}

static uint64_t next_point(const qc_replica *rp, uint64_t last)
{
    return qc_replica_snapshot_point(rp->cfg.self_id, rp->cfg.snapshot_every, last);
}

/* Closes the descriptors from..to (close_range, else one by one). */
static void close_span(unsigned from, unsigned to)
{
    if (from > to || close_range(from, to, 0) == 0) return;
    long max = sysconf(_SC_OPEN_MAX);
    for (unsigned fd = from; fd <= to && (long)fd < max; fd++) close((int)fd);
}

/* Closes every descriptor but the standard ones, a and b. The child shares
 * the agent's open files, close-on-exec or not: holding a socket, it kept
 * a connection the agent closed open at the other end (a peer, an API
 * client) until it ended, and it held data_dir's lock. */
static void close_all_but(int a, int b)
{
    unsigned keep[2] = {(unsigned)(a < b ? a : b), (unsigned)(a < b ? b : a)}, from = 3;
    for (int i = 0; i < 2; i++) {
        if (keep[i] < from) continue;
        close_span(from, keep[i] - 1);
        from = keep[i] + 1;
    }
    close_span(from, ~0u);
}

/* In the child: serialise the view, write the file, report, exit. */
static void snap_child(qc_replica *rp, int fd, pid_t parent, uint64_t index, uint64_t term,
                       const qc_entry *conf)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1); /* the parent went before prctl */
    close_all_but(fd, qc_wal_snapshot_dir_fd(rp->wal));
    /* Inherited handlers would run the loop's code here: the defaults. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    qc_buf data = {0};
    int ok = qc_kv_snapshot(rp->kv, &data) == QC_OK &&
             write_snapshot(rp->wal, 0, index, term, conf, data.data, data.len) == QC_OK;
    if (ok && write(fd, "", 1) != 1) ok = 0;
    _exit(ok ? 0 : 1);
}

static void on_snap_pipe(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    qc_replica *rp = w->data;
    char c;
    ssize_t n = read(w->fd, &c, 1);
    if (n < 0 && errno == EINTR) return;
    if (n == 1) rp->job.ok = 1;
    if (n == 1) return; /* the end of file follows as it exits */
    ev_io_stop(loop, w);
    close(w->fd);
    /* It closed the pipe exiting: a zombie at once, or a moment later. */
    while (waitpid(rp->job.pid, NULL, 0) < 0 && errno == EINTR) {
    }
    rp->job.pid = 0;
    rp->job.done = 1;
}

/* Forks the child for a snapshot at index. 0 or QC_EIO (nothing started). */
static int snap_start(qc_replica *rp, uint64_t index, uint64_t term, const qc_entry *conf)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return QC_EIO;
    pid_t parent = getpid();
    double t0 = ev_time();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        snap_child(rp, fds[1], parent, index, term, conf);
    }
    int saved = errno;
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        errno = saved;
        return QC_EIO;
    }
    /* The child takes 100 to 300 ms of CPU per snapshot at 100k keys:
     * at the lowest priority it runs on what the loops leave. Not
     * SCHED_IDLE, which a busy machine may starve for ever while the
     * log grows. From here, so that it holds from the child's start. */
    if (setpriority(PRIO_PROCESS, (id_t)pid, 19) != 0)
        qc_log(QC_LOG_WARN, "store", "cannot lower the snapshot child's priority: %s",
               strerror(errno));
    rp->job = (snap_job){.pid = pid,
                         .index = index,
                         .term = term,
                         .backoff = rp->job.backoff,
                         .started = t0,
                         .fork_s = ev_time() - t0};
    ev_io_init(&rp->job.pipe_w, on_snap_pipe, fds[0], EV_READ);
    rp->job.pipe_w.data = rp;
    ev_io_start(rp->loop, &rp->job.pipe_w);
    return QC_OK;
}

/* The child finished: on success the file is the newest snapshot, and the
 * log before it goes: the WAL's on its writer thread, raft's a slice per
 * loop turn (compact_core); on failure the next try waits a while. */
static void snap_finish(qc_replica *rp)
{
    snap_job *j = &rp->job;
    j->done = 0;
    double took = ev_time() - j->started;
    if (!j->ok) {
        j->backoff = j->backoff ? j->backoff * 2 : SNAP_RETRY_MIN_S;
        if (j->backoff > SNAP_RETRY_MAX_S) j->backoff = SNAP_RETRY_MAX_S;
        j->retry_at = ev_now(rp->loop) + j->backoff;
        qc_log(QC_LOG_WARN, "store",
               "background snapshot at %llu failed (the child exited without it); "
               "trying again in %.0f s",
               (unsigned long long)j->index, j->backoff);
        return;
    }
    j->backoff = 0;
    if (j->index <= rp->snap_index) return; /* a newer one came from the leader */
    rp->snap_next = next_point(rp, j->index);
    if (keep_snapshot(rp, j->index, j->term) != QC_OK ||
        qc_walq_submit_compact(rp->walq, j->index, j->term) != QC_OK) {
        qc_log(QC_LOG_WARN, "store", "snapshot at %llu written but not installed: %s",
               (unsigned long long)j->index, strerror(errno));
        return;
    }
    rp->compacting = (compaction){.index = j->index, .took = took, .fork_s = j->fork_s};
    if (!ev_is_active(&rp->compact_w)) {
        ev_idle_start(rp->loop, &rp->compact_w);
        ev_unref(rp->loop); /* it does not keep the loop alive on its own */
    }
}

static void compact_stop(qc_replica *rp)
{
    if (!ev_is_active(&rp->compact_w)) return;
    ev_ref(rp->loop);
    ev_idle_stop(rp->loop, &rp->compact_w);
}

/* Drops the next slice of raft's log up to the newest snapshot: freeing
 * 100000 entries at once held the loop for 11 to 70 ms. */
static void compact_core(qc_replica *rp, qc_raft *r)
{
    compaction *c = &rp->compacting;
    uint64_t done = qc_raft_snapshot_index(r);
    if (c->index <= done) { /* nothing to do, or a leader's snapshot passed it */
        compact_stop(rp);
        return;
    }
    uint64_t to = c->index - done > COMPACT_SLICE ? done + COMPACT_SLICE : c->index;
    if (qc_raft_compact(r, to) != QC_OK) {
        qc_log(QC_LOG_WARN, "store", "cannot compact the log up to %llu", (unsigned long long)to);
        c->index = 0;
        compact_stop(rp);
        return;
    }
    if (to < c->index) return;
    compact_stop(rp);
    qc_log(QC_LOG_INFO, "store",
           "snapshot at %llu (%zu bytes, %.0f ms in the background, %.2f ms to fork); "
           "log compacted",
           (unsigned long long)c->index, rp->snap_len, c->took * 1000, c->fork_s * 1000);
}

static void on_compact_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_replica *rp = w->data;
    compact_core(rp, rp->raft);
}

/* Ends a running child (its temp file goes at the next start). */
static void snap_stop(qc_replica *rp)
{
    if (!rp->job.pid) return;
    ev_io_stop(rp->loop, &rp->job.pipe_w);
    close(rp->job.pipe_w.fd);
    kill(rp->job.pid, SIGKILL);
    while (waitpid(rp->job.pid, NULL, 0) < 0 && errno == EINTR) {
    }
    rp->job.pid = 0;
}

void qc_replica_maybe_snapshot(qc_replica *rp, qc_raft *r)
{
    /* The store is about to be replaced: a snapshot of ours (or the
     * install of one that finished) waits, and is then older than it. */
    if (!rp->installs && rp->job.done) snap_finish(rp);
    compact_core(rp, r); /* a slice a turn while busy; compact_w when quiet */
    if (rp->installs) return;
    if (rp->job.pid || ev_now(rp->loop) < rp->job.retry_at) return;
    uint64_t applied = qc_kv_applied_index(rp->kv);
    if (applied < rp->snap_next || applied <= rp->snap_index) return;
    uint64_t term = qc_raft_term_at(r, applied);
    qc_entry conf;
    if (!term || qc_raft_conf_at(r, applied, &conf) != QC_OK) return;
    if (snap_start(rp, applied, term, &conf) != QC_OK) {
        qc_log(QC_LOG_WARN, "store", "cannot start a snapshot at %llu: %s",
               (unsigned long long)applied, strerror(errno));
        rp->job.retry_at = ev_now(rp->loop) + SNAP_RETRY_MIN_S;
    }
}

/* ---- life cycle --------------------------------------------------------- */

/* Test hook: while the file QC_TEST_SYNC_HOLD names exists (at most a
 * minute), the agent's fsyncs of its log wait first, holding the log's
 * lock as a slow disk does; FILE.held says one waits. A snapshot child
 * (another pid) never waits. */
static int sync_hold(int fd, void *arg)
{
    qc_replica *rp = arg;
    if (getpid() == rp->pid && access(rp->sync_hold, F_OK) == 0) {
        char held[4096];
        snprintf(held, sizeof held, "%s.held", rp->sync_hold);
        int m = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (m >= 0) close(m);
        install_hold(rp->sync_hold);
    }
    return fsync(fd);
}

int qc_replica_open(struct ev_loop *loop, const qc_replica_config *cfg, qc_replica **out, char *err,
                    size_t errlen)
{
    qc_replica *rp = calloc(1, sizeof *rp);
    if (!rp) return QC_ENOMEM;
    rp->loop = loop;
    rp->cfg = *cfg;
    ev_idle_init(&rp->compact_w, on_compact_idle);
    rp->compact_w.data = rp;
    /* Request ids must never repeat across restarts: the log replays the
     * last incarnation's writes, whose ids would settle this one's. */
    if (getrandom(&rp->next_request, sizeof rp->next_request, 0) != sizeof rp->next_request)
        rp->next_request = (uint64_t)time(NULL) << 24;
    rp->next_request &= (1ull << 62) - 1; /* room to count up */
    if (!rp->cfg.snapshot_every) rp->cfg.snapshot_every = 100000;
    rp->install_hold = getenv("QC_TEST_INSTALL_HOLD");
    rp->sync_hold = getenv("QC_TEST_SYNC_HOLD");
    rp->pid = getpid();
    qc_wal_options wo = {.sync = sync_hold, .sync_arg = rp};
    if (rp->cfg.request_timeout_s <= 0) rp->cfg.request_timeout_s = 5;
    qc_kv_config kc = {.max_key = cfg->max_key, .max_value = cfg->max_value};
    int rc = qc_kv_new(&kc, &rp->kv);
    if (rc == QC_OK) rc = qc_wal_open(cfg->dir, rp->sync_hold ? &wo : NULL, &rp->wal, &rp->rec);
    if (rc == QC_OK)
        rc = qc_walq_new(loop, rp->wal, cfg->store, cfg->threadless, cfg->on_durable, cfg->ud,
                         &rp->walq);
    if (rc != QC_OK) {
        snprintf(err, errlen, "%s", rp->rec.error[0] ? rp->rec.error : qc_strerror(rc));
        qc_replica_close(rp);
        return rc;
    }
    if (rp->rec.note[0]) qc_log(QC_LOG_WARN, "store", "recovery: %s", rp->rec.note);
    qc_entry conf;
    const uint8_t *kv;
    size_t kv_len;
    if (rp->rec.snap_index &&
        (split_snapshot(rp->rec.snap_data, rp->rec.snap_len, &conf, &kv, &kv_len) != QC_OK ||
         qc_kv_restore(rp->kv, kv, kv_len) != QC_OK)) {
        snprintf(err, errlen, "%s/snap: the snapshot at %llu is corrupt", cfg->dir,
                 (unsigned long long)rp->rec.snap_index);
        qc_replica_close(rp);
        return QC_ECORRUPT;
    }
    if (rp->rec.snap_index) keep_snapshot(rp, rp->rec.snap_index, rp->rec.snap_term);
    rp->snap_next = next_point(rp, rp->rec.snap_index);
    *out = rp;
    return QC_OK;
}

int qc_replica_restore(qc_replica *rp, qc_raft *r)
{
    rp->raft = r;
    int rc = rp->snap_conf.len ? qc_raft_set_base_conf(r, &rp->snap_conf) : QC_OK;
    if (rc == QC_OK)
        rc = qc_raft_restore(r, rp->rec.snap_index, rp->rec.snap_term, rp->rec.entries,
                             rp->rec.n_entries);
    qc_log(QC_LOG_INFO, "store", "log recovered: snapshot at %llu, %zu entries after it",
           (unsigned long long)rp->rec.snap_index, rp->rec.n_entries);
    qc_wal_recovery_free(&rp->rec);
    memset(&rp->rec, 0, sizeof rp->rec);
    return rc;
}

void qc_replica_close(qc_replica *rp)
{
    if (!rp) return;
    wlist *lists[] = {&rp->settled, &rp->writes, &rp->reads};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++)
        while (lists[i]->head) answer(lists[i]->head, QC_EBUSY, 0);
    snap_stop(rp);
    compact_stop(rp);
    qc_walq_free(rp->walq); /* writes out what it holds first */
    while (rp->installs) {
        struct install_job *j = rp->installs;
        rp->installs = j->next;
        install_free(j);
    }
    if (rp->wal) qc_wal_close(rp->wal);
    qc_wal_recovery_free(&rp->rec);
    qc_kv_free(rp->kv);
    qc_wal_unmap_snapshot(&rp->snap_map);
    free(rp);
}

uint64_t qc_replica_applied(const qc_replica *rp) { return qc_kv_applied_index(rp->kv); }
