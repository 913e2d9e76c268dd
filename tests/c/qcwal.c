/* Test-only Lua module over the write-ahead log (src/store/wal.c): open a WAL and
 * get its recovery as a table, append, sync, truncate, snapshot, compact,
 * and make the next fsyncs (or waits for a snapshot's write-back) fail;
 * over the hard state (src/store/store.c);
 * and which thread runs the writer's work when the loop drains
 * (src/store/walq.c). Never linked into the agent; the only state is in
 * each WAL's userdata. */
#define _GNU_SOURCE /* sync_file_range */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/common.h"
#include "lua_fields.h"
#include "store/store.h"
#include "store/wal.h"
#include "store/walq.h"

#define QCWAL_MT "qcwal.wal"
#define QCSTORE_MT "qcwal.store"

typedef struct lwal {
    qc_wal *w;
    int fail_sync; /* the next fsyncs fail with EIO */
    lua_Integer syncs;
    lua_Integer unwritten; /* pages of the last file synced still to write then; -1: unknown */
} lwal;

/* cachestat(2) (Linux 6.5), which libc does not wrap yet: the same number
 * on every architecture. */
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
struct qc_cachestat_range {
    uint64_t off, len;
};
struct qc_cachestat {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* Pages of the regular file fd that are dirty or being written: what its
 * fsync still has to write. -1 when the kernel cannot tell. */
static lua_Integer unwritten_pages(int fd)
{
    struct qc_cachestat_range all = {0, 0}; /* len 0: to the end */
    struct qc_cachestat cs;
    if (syscall(SYS_cachestat, fd, &all, &cs, 0) != 0) return -1;
    return (lua_Integer)(cs.nr_dirty + cs.nr_writeback);
}

/* Waits for write-back fail with EIO while set (linked with
 * --wrap=sync_file_range): a disk error the kernel reports there, and so no
 * longer to the fsync after it. */
static int fail_writeback;

int __real_sync_file_range(int fd, off_t off, off_t n, unsigned int flags);
int __wrap_sync_file_range(int fd, off_t off, off_t n, unsigned int flags);
int __wrap_sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    if (fail_writeback && (flags & SYNC_FILE_RANGE_WAIT_AFTER)) {
        errno = EIO;
        return -1;
    }
    return __real_sync_file_range(fd, off, n, flags);
}

static int test_sync(int fd, void *arg)
{
    lwal *l = arg;
    l->syncs++;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) l->unwritten = unwritten_pages(fd);
    if (l->fail_sync) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static const char *code_name(int rc)
{
    switch (rc) {
    case QC_ENOMEM: return "ENOMEM";
    case QC_EINVAL: return "EINVAL";
    case QC_EIO: return "EIO";
    case QC_ETOOBIG: return "ETOOBIG";
    case QC_ECORRUPT: return "ECORRUPT";
    case QC_ENOTFOUND: return "ENOTFOUND";
    case QC_EBUSY: return "EBUSY";
    default: return "E?";
    }
}

/* nil, message, code name, errno text */
static int push_fail(lua_State *L, int rc, const char *msg)
{
    int saved = errno;
    lua_pushnil(L);
    lua_pushstring(L, msg && *msg ? msg : qc_strerror(rc));
    lua_pushstring(L, code_name(rc));
    lua_pushstring(L, rc == QC_EIO ? strerror(saved) : "");
    return 4;
}

static int push_rc(lua_State *L, int rc)
{
    if (rc) return push_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static lwal *check_wal(lua_State *L)
{
    lwal *l = luaL_checkudata(L, 1, QCWAL_MT);
    if (!l->w) luaL_error(L, "wal is closed");
    return l;
}

static void push_recovery(lua_State *L, const qc_wal_recovery *rec)
{
    lua_createtable(L, 0, 8);
    set_int(L, "snap_index", (lua_Integer)rec->snap_index);
    set_int(L, "snap_term", (lua_Integer)rec->snap_term);
    set_int(L, "torn_bytes", (lua_Integer)rec->torn_bytes);
    lua_pushlstring(L, rec->snap_data ? (const char *)rec->snap_data : "", rec->snap_len);
    lua_setfield(L, -2, "snap_data");
    lua_pushstring(L, rec->note);
    lua_setfield(L, -2, "note");
    lua_createtable(L, (int)rec->n_entries, 0);
    for (size_t i = 0; i < rec->n_entries; i++) {
        const qc_entry *e = &rec->entries[i];
        lua_createtable(L, 0, 4);
        set_int(L, "term", (lua_Integer)e->term);
        set_int(L, "index", (lua_Integer)e->index);
        set_int(L, "type", (lua_Integer)e->type);
        lua_pushlstring(L, e->data ? (const char *)e->data : "", e->len);
        lua_setfield(L, -2, "data");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "entries");
}

/* qcwal.open(dir [, {segment_size=, plain_sync=, fail_sync=}]) -> wal,
 * recovery | nil, msg, code. plain_sync: the WAL's own fdatasync
 * (benchmarks); fail_sync and the sync count then do nothing. fail_sync:
 * the fsyncs fail from the open's own on. */
static int l_open(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    qc_wal_options opt = {0};
    int plain = 0, fail = 0;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "segment_size");
        lua_getfield(L, 2, "plain_sync");
        lua_getfield(L, 2, "fail_sync");
        opt.segment_size = (uint64_t)luaL_optinteger(L, -3, 0);
        plain = lua_toboolean(L, -2);
        fail = lua_toboolean(L, -1);
        lua_pop(L, 3);
    }
    lwal *l = lua_newuserdatauv(L, sizeof *l, 0);
    memset(l, 0, sizeof *l);
    l->fail_sync = fail;
    l->unwritten = -1;
    luaL_setmetatable(L, QCWAL_MT);
    opt.sync = plain ? NULL : test_sync;
    opt.sync_arg = l;
    qc_wal_recovery rec;
    int rc = qc_wal_open(dir, &opt, &l->w, &rec);
    if (rc) {
        int n = push_fail(L, rc, rec.error);
        qc_wal_recovery_free(&rec);
        return n;
    }
    push_recovery(L, &rec);
    qc_wal_recovery_free(&rec);
    return 2;
}

/* Reads {{term=, index=, type=, data=}, ...}; data points into strings the
 * argument table keeps alive for the call. */
static size_t read_entries(lua_State *L, int idx, qc_entry **out)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    size_t n = (size_t)luaL_len(L, idx);
    qc_entry *v = lua_newuserdatauv(L, (n ? n : 1) * sizeof *v, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_getfield(L, -1, "term");
        lua_getfield(L, -2, "index");
        lua_getfield(L, -3, "type");
        lua_getfield(L, -4, "data");
        size_t len = 0;
        const char *d = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &len);
        v[i].term = (uint64_t)luaL_checkinteger(L, -4);
        v[i].index = (uint64_t)luaL_checkinteger(L, -3);
        v[i].type = (uint32_t)luaL_optinteger(L, -2, QC_ENTRY_DATA);
        v[i].len = (uint32_t)len;
        v[i].data = (uint8_t *)d;
        lua_pop(L, 5);
    }
    *out = v;
    return n;
}

static int l_append(lua_State *L)
{
    lwal *l = check_wal(L);
    qc_entry *v;
    size_t n = read_entries(L, 2, &v);
    return push_rc(L, qc_wal_append(l->w, v, n));
}

static int l_sync(lua_State *L) { return push_rc(L, qc_wal_sync(check_wal(L)->w)); }

static int l_truncate(lua_State *L)
{
    lwal *l = check_wal(L);
    return push_rc(L, qc_wal_truncate(l->w, (uint64_t)luaL_checkinteger(L, 2)));
}

static int l_save_snapshot(lua_State *L)
{
    lwal *l = check_wal(L);
    uint64_t index = (uint64_t)luaL_checkinteger(L, 2);
    uint64_t term = (uint64_t)luaL_checkinteger(L, 3);
    size_t len = 0;
    const char *data = luaL_optlstring(L, 4, "", &len);
    struct iovec part = {.iov_base = (void *)data, .iov_len = len};
    return push_rc(L, qc_wal_save_snapshot(l->w, index, term, &part, 1));
}

static int l_compact(lua_State *L)
{
    lwal *l = check_wal(L);
    return push_rc(L, qc_wal_compact(l->w, (uint64_t)luaL_checkinteger(L, 2)));
}

static int l_empty_trash(lua_State *L) { return push_rc(L, qc_wal_empty_trash(check_wal(L)->w)); }

static int l_fail_sync(lua_State *L)
{
    check_wal(L)->fail_sync = lua_toboolean(L, 2);
    return 0;
}

static int l_fail_writeback(lua_State *L)
{
    check_wal(L);
    fail_writeback = lua_toboolean(L, 2);
    return 0;
}

static int l_info(lua_State *L)
{
    lwal *l = check_wal(L);
    lua_createtable(L, 0, 7);
    set_int(L, "first", (lua_Integer)qc_wal_first_index(l->w));
    set_int(L, "last", (lua_Integer)qc_wal_last_index(l->w));
    set_int(L, "snap_index", (lua_Integer)qc_wal_snapshot_index(l->w));
    set_int(L, "segments", (lua_Integer)qc_wal_segment_count(l->w));
    set_int(L, "syncs", l->syncs);
    set_int(L, "unwritten", l->unwritten);
    lua_pushnumber(L, qc_wal_last_sync_seconds(l->w));
    lua_setfield(L, -2, "last_sync_seconds");
    return 1;
}

/* qcwal.unwritten(path) -> pages of the file still to write back (dirty or
 * being written), -1 when the kernel cannot tell | nil, msg */
static int l_unwritten(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return luaL_fileresult(L, 0, path);
    lua_pushinteger(L, unwritten_pages(fd));
    close(fd);
    return 1;
}

static int l_close(lua_State *L)
{
    lwal *l = luaL_checkudata(L, 1, QCWAL_MT);
    qc_wal_close(l->w);
    l->w = NULL;
    return 0;
}

/* ---- the hard state (src/store.c) ---- */

static qc_store **check_store(lua_State *L)
{
    qc_store **st = luaL_checkudata(L, 1, QCSTORE_MT);
    if (!*st) luaL_error(L, "store is closed");
    return st;
}

/* qcwal.store(dir) -> store | nil, msg, code (takes dir's lock) */
static int l_store(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    qc_store **st = lua_newuserdatauv(L, sizeof *st, 0);
    *st = NULL;
    luaL_setmetatable(L, QCSTORE_MT);
    int rc = qc_store_open(dir, st);
    return rc ? push_fail(L, rc, NULL) : 1;
}

/* store:load() -> {term, vote, commit} | nil, msg, code */
static int l_store_load(lua_State *L)
{
    qc_hard_state hs;
    int rc = qc_store_load(*check_store(L), &hs);
    if (rc) return push_fail(L, rc, NULL);
    lua_createtable(L, 0, 3);
    set_int(L, "term", (lua_Integer)hs.term);
    set_int(L, "vote", (lua_Integer)hs.vote);
    set_int(L, "commit", (lua_Integer)hs.commit);
    return 1;
}

/* store:save(term, vote, commit) -> true | nil, msg, code */
static int l_store_save(lua_State *L)
{
    qc_store **st = check_store(L);
    qc_hard_state hs = {.term = (uint64_t)luaL_checkinteger(L, 2),
                        .vote = (uint64_t)luaL_checkinteger(L, 3),
                        .commit = (uint64_t)luaL_checkinteger(L, 4)};
    return push_rc(L, qc_store_save(*st, &hs));
}

static int l_store_close(lua_State *L)
{
    qc_store **st = luaL_checkudata(L, 1, QCSTORE_MT);
    qc_store_close(*st);
    *st = NULL;
    return 0;
}

/* ---- the writer's drain (src/walq.c) ---- */

static void no_progress(void *ud) { (void)ud; }

/* The WAL's sync hook: notes the syncing thread, then fsyncs. */
static int note_sync(int fd, void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return fsync(fd);
}

/* qcwal.drain_runs_here(dir, n) -> writes reported durable, writes synced
 * on this thread by its drain: n one-entry writes to a WAL in dir, each
 * queued to a threaded writer that is idle, drained at once, and waited
 * for (it may have woken first and taken it: the drain then answers 0). */
static int l_drain_runs_here(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    pthread_t on = pthread_self();
    qc_wal_options opt = {.sync = note_sync, .sync_arg = &on};
    qc_wal *w;
    qc_wal_recovery rec;
    int rc = qc_wal_open(dir, &opt, &w, &rec);
    uint64_t next = rec.n_entries ? rec.entries[rec.n_entries - 1].index + 1 : 1;
    qc_wal_recovery_free(&rec);
    if (rc) return luaL_error(L, "cannot open the WAL: %s", qc_strerror(rc));
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    qc_walq *q;
    if (!loop || qc_walq_new(loop, w, NULL, 0, no_progress, NULL, &q) != QC_OK) {
        if (loop) ev_loop_destroy(loop);
        qc_wal_close(w);
        return luaL_error(L, "no writer thread");
    }
    lua_Integer ran = 0, here = 0;
    for (lua_Integer i = 0; i < n; i++) {
        uint8_t data[] = "x";
        qc_entry e = {.term = 1, .index = next++, .type = QC_ENTRY_DATA, .len = 1, .data = data};
        uint64_t seq;
        on = (pthread_t){0};
        if (qc_walq_submit(q, &e, 1, NULL, &seq) != QC_OK) break;
        int drained = qc_walq_drain(q);
        qc_walq_progress p;
        qc_walq_progress_get(q, &p);
        if (drained) here += p.seq == seq && pthread_equal(on, pthread_self()) != 0;
        struct timespec tick = {0, 1000 * 1000};
        for (int k = 0; k < 10000 && p.seq < seq && !p.failed; k++) {
            nanosleep(&tick, NULL);
            qc_walq_progress_get(q, &p);
        }
        ran += p.seq == seq && !p.failed;
    }
    qc_walq_free(q);
    ev_loop_destroy(loop);
    qc_wal_close(w);
    lua_pushinteger(L, ran);
    lua_pushinteger(L, here);
    return 2;
}

typedef struct held_job {
    atomic_int release, finished;
    pthread_t on;
} held_job;

/* Waits until released (at most 10 s: a drain that waits for it must come
 * back, and fail the spec, rather than hang it). */
static int held_job_run(void *arg)
{
    held_job *h = arg;
    h->on = pthread_self();
    struct timespec tick = {0, 1000 * 1000};
    for (int i = 0; i < 10000 && !atomic_load(&h->release); i++) nanosleep(&tick, NULL);
    atomic_store(&h->finished, 1);
    return 0;
}

/* qcwal.drain_behind_job() -> the drain's answer, whether the job had
 * finished when it answered, whether the job ran on the draining thread,
 * whether everything was reported durable in the end: a job that waits
 * to be released is queued to an idle threaded writer, then drained. */
static int l_drain_behind_job(lua_State *L)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) return luaL_error(L, "no event loop");
    qc_walq *q;
    if (qc_walq_new(loop, NULL, NULL, 0, no_progress, NULL, &q) != QC_OK) {
        ev_loop_destroy(loop);
        return luaL_error(L, "no writer thread");
    }
    held_job h = {.on = pthread_self()};
    uint64_t seq = 0;
    int drained = -1, finished = 0;
    if (qc_walq_submit_job(q, held_job_run, &h, &seq) == QC_OK) {
        drained = qc_walq_drain(q);
        finished = atomic_load(&h.finished);
    }
    atomic_store(&h.release, 1);
    qc_walq_free(q); /* runs what is queued first */
    ev_loop_destroy(loop);
    lua_pushinteger(L, drained);
    lua_pushboolean(L, finished);
    lua_pushboolean(L, seq && pthread_equal(h.on, pthread_self()));
    lua_pushboolean(L, seq && atomic_load(&h.finished));
    return 4;
}

static const luaL_Reg store_methods[] = {
    {"load", l_store_load},
    {"save", l_store_save},
    {"close", l_store_close},
    {NULL, NULL},
};

static const luaL_Reg wal_methods[] = {
    {"append", l_append},
    {"sync", l_sync},
    {"truncate", l_truncate},
    {"save_snapshot", l_save_snapshot},
    {"compact", l_compact},
    {"empty_trash", l_empty_trash},
    {"fail_sync", l_fail_sync},
    {"fail_writeback", l_fail_writeback},
    {"info", l_info},
    {"close", l_close},
    {NULL, NULL},
};

int luaopen_qcwal(lua_State *L)
{
    luaL_newmetatable(L, QCWAL_MT);
    luaL_newlib(L, wal_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, QCSTORE_MT);
    luaL_newlib(L, store_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_store_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_createtable(L, 0, 5);
    lua_pushcfunction(L, l_drain_runs_here);
    lua_setfield(L, -2, "drain_runs_here");
    lua_pushcfunction(L, l_drain_behind_job);
    lua_setfield(L, -2, "drain_behind_job");
    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "open");
    lua_pushcfunction(L, l_store);
    lua_setfield(L, -2, "store");
    lua_pushcfunction(L, l_unwritten);
    lua_setfield(L, -2, "unwritten");
    lua_pushinteger(L, QC_WAL_SEGMENT_SIZE);
    lua_setfield(L, -2, "SEGMENT_SIZE");
    return 1;
}
