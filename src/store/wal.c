/* Segmented write-ahead log and snapshot files (see wal.h). Records are
 * magic, payload length, CRC-32C of both plus the payload; the payload is a
 * qc_entry (term, index, type, len, data), all big-endian. Only the tail of
 * the last segment may be torn by a crash; anything else that fails a check
 * is refused with the file and offset, never skipped. No global state. */
#define _GNU_SOURCE /* sync_file_range */
#include "store/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "base/assert.h"
#include "base/common.h"
#include "core/wire.h"

#define WAL_MAGIC 0x51435731u  /* "QCW1" */
#define SNAP_MAGIC 0x51435331u /* "QCS1" */
#define REC_HEADER 12          /* magic, payload length, crc */
#define REC_FIXED 24           /* payload: term, index, type, len */
#define SNAP_HEADER 32         /* magic, index, term, len, crc */
#define SECTOR 512             /* unit of a torn write */
#define FLUSH_AT (1u << 20)    /* write out a batch every MiB */
#define SNAP_STEP (1u << 20)   /* a snapshot file is written back 1 MiB at a time */
#define NAME_LEN 64

typedef struct wal_seg {
    uint64_t first; /* index of its first record; also its file name */
    uint64_t size;  /* bytes of whole records on disk */
    uint64_t *off;  /* off[k]: offset of the record of index first+k */
    uint64_t *term; /* term[k]: its term, so appends can be checked against it */
    size_t n, cap;
} wal_seg;

/* A file a compaction or a prune dropped, for qc_wal_empty_trash. */
typedef struct trash_item {
    int in_snap; /* snap/, else wal/ */
    char name[NAME_LEN];
} trash_item;

struct qc_wal {
    char *wal_path, *snap_path;
    int wal_fd, snap_fd; /* the directories, for fsync */
    int fd;              /* the last segment; -1 when there is none */
    wal_seg *segs;
    size_t n_segs, cap_segs;
    uint64_t segment_size;
    uint64_t snap_index, snap_term;
    int (*sync)(int fd, void *arg);
    void *sync_arg;
    int dirty, dir_dirty;
    int failed, failed_errno; /* a write or fsync failed: refuse until reopened */
    double last_sync;
    qc_buf buf;        /* records encoded but not yet written to the last segment */
    trash_item *trash; /* files no longer part of the log, still to unlink */
    size_t n_trash, cap_trash;
    /* Serialises the changes: the writer thread appends and syncs while the
     * loop (or a snapshot worker) saves snapshots and compacts. */
    pthread_mutex_t lock;
};

enum { REC_OK = 0, REC_SHORT, REC_MAGIC, REC_LENGTH, REC_CRC, REC_FIELD };

/* ---- byte order, names, small helpers ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) << 32 | get_u32(p + 4); }

static void seg_name(char *buf, uint64_t first)
{
    snprintf(buf, NAME_LEN, "%016" PRIx64 ".seg", first);
}

static void snap_name(char *buf, uint64_t index, uint64_t term, const char *suffix)
{
    snprintf(buf, NAME_LEN, "%016" PRIx64 "-%016" PRIx64 ".snap%s", index, term, suffix);
}

static int parse_hex16(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return 0;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return 1;
}

static int seg_parse_name(const char *name, uint64_t *first)
{
    return strlen(name) == 20 && strcmp(name + 16, ".seg") == 0 && parse_hex16(name, first) &&
           *first > 0;
}

static int snap_parse_name(const char *name, uint64_t *index, uint64_t *term)
{
    return strlen(name) == 38 && name[16] == '-' && strcmp(name + 33, ".snap") == 0 &&
           parse_hex16(name, index) && parse_hex16(name + 17, term) && *index > 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p) return QC_ENOMEM;
    int rc = QC_OK;
    for (char *s = p + 1; *s && !rc; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) rc = QC_EIO;
        *s = '/';
    }
    if (!rc && mkdir(p, 0755) != 0 && errno != EEXIST) rc = QC_EIO;
    free(p);
    return rc;
}

/* Sets rec->error; keeps errno for the caller. */
static int fail_msg(qc_wal_recovery *rec, int rc, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rec->error, sizeof rec->error, fmt, ap);
    va_end(ap);
    errno = saved;
    return rc;
}

static int fail_sys(qc_wal_recovery *rec, const char *where, const char *name, const char *what)
{
    return fail_msg(rec, QC_EIO, "%s/%s: %s: %s", where, name, what, strerror(errno));
}

/* ---- file I/O ---- */

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) {
            errno = EIO; /* the file shrank under us */
            return -1;
        }
        p += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = pwrite(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        p += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

static int do_sync(const qc_wal *w, int fd, int is_dir)
{
    if (w->sync) return w->sync(fd, w->sync_arg);
    return is_dir ? fsync(fd) : fdatasync(fd);
}

/* Marks w failed for good (see qc_wal_sync in wal.h); errno is kept. */
static int wal_fail(qc_wal *w)
{
    w->failed = 1;
    w->failed_errno = errno ? errno : EIO;
    return QC_EIO;
}

static int wal_refuse(const qc_wal *w)
{
    errno = w->failed_errno;
    return QC_EIO;
}

typedef int (*name_fn)(const char *name, void *arg);

/* Calls fn on every entry of the directory but "." and "..". */
static int list_dir(const char *path, name_fn fn, void *arg)
{
    DIR *d = opendir(path);
    if (!d) return QC_EIO;
    int rc = QC_OK;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) rc = QC_EIO;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        rc = fn(de->d_name, arg);
        if (rc) break;
    }
    int saved = errno;
    closedir(d);
    errno = saved;
    return rc;
}

typedef struct u64_list {
    uint64_t *v;
    size_t n, cap;
} u64_list;

static int u64_push(u64_list *l, uint64_t x)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) return QC_ENOMEM;
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = x;
    return QC_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- segments in memory ---- */

static wal_seg *seg_last(qc_wal *w) { return w->n_segs ? &w->segs[w->n_segs - 1] : NULL; }

static uint64_t seg_end(const wal_seg *s) { return s->first + s->n - 1; } /* first-1 if empty */

static uint64_t log_last(const qc_wal *w)
{
    return w->n_segs ? seg_end(&w->segs[w->n_segs - 1]) : 0;
}

static wal_seg *seg_push(qc_wal *w, uint64_t first)
{
    if (w->n_segs == w->cap_segs) {
        size_t cap = w->cap_segs ? w->cap_segs * 2 : 8;
        wal_seg *v = realloc(w->segs, cap * sizeof *v);
        if (!v) return NULL;
        w->segs = v, w->cap_segs = cap;
    }
    wal_seg *s = &w->segs[w->n_segs++];
    memset(s, 0, sizeof *s);
    s->first = first;
    return s;
}

static int seg_add(wal_seg *s, uint64_t off, uint64_t term)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        uint64_t *v = realloc(s->off, cap * sizeof *v);
        if (!v) return QC_ENOMEM;
        s->off = v;
        v = realloc(s->term, cap * sizeof *v);
        if (!v) return QC_ENOMEM;
        s->term = v, s->cap = cap;
    }
    s->off[s->n] = off;
    s->term[s->n++] = term;
    return QC_OK;
}

static void seg_free(wal_seg *s)
{
    free(s->off);
    free(s->term);
}

static void close_current(qc_wal *w)
{
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    w->dirty = 0; /* what was written is synced by the caller or deleted */
}

/* Drops the last segment's file; the directory fsync is the caller's. */
static int seg_unlink_last(qc_wal *w)
{
    wal_seg *s = seg_last(w);
    char name[NAME_LEN];
    seg_name(name, s->first);
    close_current(w);
    if (unlinkat(w->wal_fd, name, 0) != 0 && errno != ENOENT) return wal_fail(w);
    seg_free(s);
    w->n_segs--;
    return QC_OK;
}

/* Hands a file that is no longer part of the log to qc_wal_empty_trash;
 * without memory for that, unlinks it now. */
static int trash_add(qc_wal *w, int in_snap, const char *name)
{
    if (w->n_trash == w->cap_trash) {
        size_t cap = w->cap_trash ? w->cap_trash * 2 : 8;
        trash_item *v = realloc(w->trash, cap * sizeof *v);
        if (!v) {
            int rc = unlinkat(in_snap ? w->snap_fd : w->wal_fd, name, 0);
            return rc == 0 || errno == ENOENT ? QC_OK : wal_fail(w);
        }
        w->trash = v, w->cap_trash = cap;
    }
    trash_item *t = &w->trash[w->n_trash++];
    t->in_snap = in_snap;
    snprintf(t->name, sizeof t->name, "%s", name);
    return QC_OK;
}

/* Drops the first segment from the log; its file goes to the trash. */
static int seg_unlink_first(qc_wal *w)
{
    char name[NAME_LEN];
    seg_name(name, w->segs[0].first);
    if (w->n_segs == 1) close_current(w);
    if (trash_add(w, 0, name) != QC_OK) return QC_EIO;
    seg_free(&w->segs[0]);
    memmove(w->segs, w->segs + 1, (w->n_segs - 1) * sizeof *w->segs);
    w->n_segs--;
    return QC_OK;
}

/* Keeps w->fd open on the last segment. */
static int open_current(qc_wal *w)
{
    if (w->fd >= 0 || !w->n_segs) return QC_OK;
    char name[NAME_LEN];
    seg_name(name, seg_last(w)->first);
    w->fd = openat(w->wal_fd, name, O_RDWR | O_CLOEXEC);
    return w->fd < 0 ? wal_fail(w) : QC_OK;
}

/* ---- records ---- */

static uint32_t rec_crc(const uint8_t *rec, uint32_t plen)
{
    return qc_crc32c(qc_crc32c(0, rec, 8), rec + REC_HEADER, plen);
}

static int rec_encode(qc_buf *b, const qc_entry *e)
{
    uint32_t plen = REC_FIXED + e->len;
    int rc = qc_buf_reserve(b, REC_HEADER + (size_t)plen);
    if (rc) return rc;
    uint8_t *p = b->data + b->len;
    put_u32(p, WAL_MAGIC);
    put_u32(p + 4, plen);
    put_u64(p + 12, e->term);
    put_u64(p + 20, e->index);
    put_u32(p + 28, e->type);
    put_u32(p + 32, e->len);
    if (e->len) memcpy(p + REC_HEADER + REC_FIXED, e->data, e->len);
    put_u32(p + 8, rec_crc(p, plen));
    b->len += REC_HEADER + (size_t)plen;
    return QC_OK;
}

/* Checks the record at p (avail bytes left in the file); *size: its length
 * when the header is readable. */
static int rec_check(const uint8_t *p, size_t avail, size_t *size)
{
    *size = 0;
    if (avail < REC_HEADER) return REC_SHORT;
    if (get_u32(p) != WAL_MAGIC) return REC_MAGIC;
    uint32_t plen = get_u32(p + 4);
    if (plen < REC_FIXED || plen - REC_FIXED > QC_WAL_MAX_DATA) return REC_LENGTH;
    *size = REC_HEADER + (size_t)plen;
    if (avail < *size) return REC_SHORT;
    if (rec_crc(p, plen) != get_u32(p + 8)) return REC_CRC;
    if (get_u32(p + 32) != plen - REC_FIXED) return REC_FIELD;
    return REC_OK;
}

static const char *rec_problem(int st)
{
    switch (st) {
    case REC_SHORT: return "runs past the end of the file";
    case REC_MAGIC: return "bad magic";
    case REC_LENGTH: return "implausible length";
    case REC_CRC: return "checksum mismatch";
    default: return "entry length disagrees with record length";
    }
}

/* A whole, valid record somewhere in buf[from..size): then a record that
 * "runs past the end" had its length corrupted, it was not torn. */
static int valid_record_after(const uint8_t *buf, size_t size, size_t from)
{
    size_t rsz;
    for (size_t o = from; o + REC_HEADER <= size; o++)
        if (buf[o] == (WAL_MAGIC >> 24) && rec_check(buf + o, size - o, &rsz) == REC_OK) return 1;
    return 0;
}

/* A record whose sectors did not all reach the disk shows a zero-filled one
 * (the file size was updated, the data was not); etcd's check, same idea. */
static int has_zero_sector(const uint8_t *buf, size_t off, size_t len)
{
    size_t end = off + len;
    for (size_t s = off - off % SECTOR; s < end; s += SECTOR) {
        size_t a = s > off ? s : off, b = s + SECTOR < end ? s + SECTOR : end;
        if (all_zero(buf + a, b - a)) return 1;
    }
    return 0;
}

/* Whether a bad record at off of the last segment is a torn write. */
static int is_torn(const uint8_t *buf, size_t size, size_t off, int st, size_t rsz)
{
    if (all_zero(buf + off, size - off)) return 1;
    if (st == REC_SHORT) return !valid_record_after(buf, size, off + 1);
    /* Zeros where a record should start: sectors that never reached the
     * disk, followed by a partial write. Torn, unless a whole record
     * follows (then the zeros are damage inside the log). */
    if ((st == REC_MAGIC || st == REC_LENGTH) && buf[off] == 0)
        return !valid_record_after(buf, size, off + 1);
    if (st != REC_CRC) return 0;
    return all_zero(buf + off + rsz, size - off - rsz) && has_zero_sector(buf, off, rsz);
}

/* ---- recovery: snapshots ---- */

typedef struct snap_ref {
    uint64_t index, term;
} snap_ref;

typedef struct snap_list {
    snap_ref *v;
    size_t n, cap;
    qc_wal *w;
    int drop_tmp; /* at recovery only: later a snapshot child may be writing one */
} snap_list;

static int snap_collect(const char *name, void *arg)
{
    snap_list *l = arg;
    snap_ref r;
    if (ends_with(name, ".snap.tmp")) { /* a save that never finished */
        if (!l->drop_tmp) return QC_OK;
        if (unlinkat(l->w->snap_fd, name, 0) != 0 && errno != ENOENT) return QC_EIO;
        return QC_OK;
    }
    if (!snap_parse_name(name, &r.index, &r.term)) return QC_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        snap_ref *v = realloc(l->v, cap * sizeof *v);
        if (!v) return QC_ENOMEM;
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = r;
    return QC_OK;
}

static int cmp_snap_desc(const void *a, const void *b)
{
    const snap_ref *x = a, *y = b;
    if (x->index != y->index) return x->index < y->index ? 1 : -1;
    return x->term < y->term ? 1 : x->term > y->term ? -1 : 0;
}

/* The snapshots on disk, newest first; drop_tmp: and remove temp files. */
static int snap_list_load(qc_wal *w, snap_list *l, int drop_tmp)
{
    memset(l, 0, sizeof *l);
    l->w = w;
    l->drop_tmp = drop_tmp;
    int rc = list_dir(w->snap_path, snap_collect, l);
    if (rc) {
        free(l->v);
        l->v = NULL;
        return rc;
    }
    if (l->n) qsort(l->v, l->n, sizeof *l->v, cmp_snap_desc);
    return QC_OK;
}

/* A snapshot header that disagrees with its name or file size: the problem. */
static const char *snap_header_problem(const uint8_t *h, const snap_ref *r, uint64_t size)
{
    if (get_u32(h) != SNAP_MAGIC || get_u64(h + 4) != r->index || get_u64(h + 12) != r->term)
        return "bad header";
    uint64_t len = get_u64(h + 20);
    if (len != size - SNAP_HEADER || len > QC_WAL_MAX_SNAPSHOT)
        return "length disagrees with file size";
    return NULL;
}

/* Reads the data after a good header and checks the CRC over both. */
static int snap_read_data(int fd, const uint8_t *h, qc_wal_recovery *rec, const char *name,
                          const char **problem)
{
    size_t len = (size_t)get_u64(h + 20);
    uint8_t *data = len ? malloc(len) : NULL;
    if (len && !data) return QC_ENOMEM;
    if (pread_all(fd, data, len, SNAP_HEADER) != 0) {
        free(data);
        return fail_sys(rec, "snap", name, "read");
    }
    if (qc_crc32c(qc_crc32c(0, h, 28), data, len) != get_u32(h + 28)) {
        free(data);
        *problem = "checksum mismatch";
        return QC_OK;
    }
    rec->snap_data = data;
    rec->snap_len = len;
    return QC_OK;
}

/* Reads and checks one snapshot file; problem set when it is bad. */
static int snap_read(qc_wal *w, const snap_ref *r, qc_wal_recovery *rec, const char **problem)
{
    char name[NAME_LEN];
    snap_name(name, r->index, r->term, "");
    *problem = NULL;
    int fd = openat(w->snap_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_sys(rec, "snap", name, "open");
    struct stat st;
    uint8_t h[SNAP_HEADER];
    int rc = QC_OK;
    if (fstat(fd, &st) != 0)
        rc = fail_sys(rec, "snap", name, "stat");
    else if ((uint64_t)st.st_size < SNAP_HEADER)
        *problem = "shorter than its header";
    else if (pread_all(fd, h, SNAP_HEADER, 0) != 0)
        rc = fail_sys(rec, "snap", name, "read");
    else if (!(*problem = snap_header_problem(h, r, (uint64_t)st.st_size)))
        rc = snap_read_data(fd, h, rec, name, problem);
    close(fd);
    return rc;
}

/* Loads the newest valid snapshot; an older one stands in for a bad newer
 * one (noted), but with no valid one at all the node must not start. */
static int recover_snapshot(qc_wal *w, qc_wal_recovery *rec)
{
    snap_list l;
    int rc = snap_list_load(w, &l, 1);
    if (rc == QC_EIO) return fail_msg(rec, rc, "%s: list: %s", w->snap_path, strerror(errno));
    if (rc) return rc;
    char first_bad[NAME_LEN] = "";
    const char *first_problem = NULL;
    for (size_t i = 0; i < l.n && !rc; i++) {
        const char *problem = NULL;
        rc = snap_read(w, &l.v[i], rec, &problem);
        if (rc) break;
        if (!problem) {
            w->snap_index = rec->snap_index = l.v[i].index;
            w->snap_term = rec->snap_term = l.v[i].term;
            break;
        }
        if (!first_problem) {
            snap_name(first_bad, l.v[i].index, l.v[i].term, "");
            first_problem = problem;
        }
    }
    free(l.v);
    if (rc || !first_problem) return rc;
    if (!w->snap_index)
        return fail_msg(rec, QC_ECORRUPT, "snap/%s: %s (no valid snapshot left)", first_bad,
                        first_problem);
    char used[NAME_LEN];
    snap_name(used, w->snap_index, w->snap_term, "");
    snprintf(rec->note, sizeof rec->note, "snap/%s: %s; recovered from snap/%s", first_bad,
             first_problem, used);
    return QC_OK;
}

/* ---- recovery: segments ---- */

typedef struct scan {
    qc_wal *w;
    qc_wal_recovery *rec;
    const char *name; /* the segment being read */
    uint64_t prev_term;
    size_t cap_entries;
} scan;

static int seg_collect(const char *name, void *arg)
{
    uint64_t first;
    return seg_parse_name(name, &first) ? u64_push(arg, first) : QC_OK;
}

/* A segment must start right after the previous one, or anywhere the
 * snapshot covers (segments left behind by a compaction or a snapshot jump). */
static int check_boundary(scan *sc, uint64_t first)
{
    uint64_t prev = log_last(sc->w);
    if (first <= prev)
        return fail_msg(sc->rec, QC_ECORRUPT,
                        "wal/%s: starts at index %" PRIu64 ", overlapping entries up to %" PRIu64,
                        sc->name, first, prev);
    if (first > prev + 1 && first > sc->w->snap_index + 1)
        return fail_msg(sc->rec, QC_ECORRUPT,
                        "wal/%s: starts at index %" PRIu64 ", but entries %" PRIu64 "..%" PRIu64
                        " are missing and no snapshot covers them",
                        sc->name, first, prev + 1, first - 1);
    return QC_OK;
}

static int entry_push(scan *sc, const uint8_t *p, uint64_t off)
{
    qc_wal_recovery *rec = sc->rec;
    uint64_t term = get_u64(p + 12);
    if (term < sc->prev_term)
        return fail_msg(rec, QC_ECORRUPT,
                        "wal/%s: record at offset %" PRIu64 ": term %" PRIu64
                        " below the previous term %" PRIu64,
                        sc->name, off, term, sc->prev_term);
    if (rec->n_entries == sc->cap_entries) {
        size_t cap = sc->cap_entries ? sc->cap_entries * 2 : 256;
        qc_entry *v = realloc(rec->entries, cap * sizeof *v);
        if (!v) return QC_ENOMEM;
        rec->entries = v, sc->cap_entries = cap;
    }
    qc_entry *e = &rec->entries[rec->n_entries];
    e->term = term;
    e->index = get_u64(p + 20);
    e->type = get_u32(p + 28);
    e->len = get_u32(p + 32);
    e->data = NULL;
    if (e->len && !(e->data = malloc(e->len))) return QC_ENOMEM;
    if (e->len) memcpy(e->data, p + REC_HEADER + REC_FIXED, e->len);
    rec->n_entries++;
    sc->prev_term = term;
    return QC_OK;
}

/* Takes in the record at off: its index must be next in the segment. */
static int rec_accept(scan *sc, wal_seg *s, const uint8_t *p, uint64_t off)
{
    uint64_t index = get_u64(p + 20), want = s->first + s->n;
    if (index != want)
        return fail_msg(sc->rec, QC_ECORRUPT,
                        "wal/%s: record at offset %" PRIu64 ": index %" PRIu64
                        ", expected %" PRIu64,
                        sc->name, off, index, want);
    int rc = seg_add(s, off, get_u64(p + 12));
    if (rc || index <= sc->w->snap_index) return rc;
    return entry_push(sc, p, off);
}

/* Cuts the torn tail of the last segment at off; sync_recovered makes the
 * cut durable. */
static int cut_tail(scan *sc, int fd, uint64_t off, uint64_t size)
{
    if (ftruncate(fd, (off_t)off) != 0) return fail_sys(sc->rec, "wal", sc->name, "truncate");
    sc->rec->torn_bytes = size - off;
    snprintf(sc->rec->note, sizeof sc->rec->note,
             "wal/%s: cut a torn tail of %" PRIu64 " bytes at offset %" PRIu64, sc->name,
             size - off, off);
    return QC_OK;
}

/* Walks the records of buf[0..size); stops at the first bad one. */
static int seg_parse(scan *sc, wal_seg *s, const uint8_t *buf, size_t size, int is_last, int fd)
{
    size_t off = 0, rsz = 0;
    int st = REC_OK;
    while (off < size && (st = rec_check(buf + off, size - off, &rsz)) == REC_OK) {
        int rc = rec_accept(sc, s, buf + off, off);
        if (rc) return rc;
        off += rsz;
    }
    s->size = off;
    if (off == size) return QC_OK;
    if (is_last && is_torn(buf, size, off, st, rsz)) return cut_tail(sc, fd, off, size);
    return fail_msg(sc->rec, QC_ECORRUPT, "wal/%s: record at offset %zu: %s", sc->name, off,
                    rec_problem(st));
}

static int read_file(int fd, uint8_t **buf, size_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return QC_EIO;
    *size = (size_t)st.st_size;
    *buf = NULL;
    if (!*size) return QC_OK;
    if (!(*buf = malloc(*size))) return QC_ENOMEM;
    return pread_all(fd, *buf, *size, 0) == 0 ? QC_OK : QC_EIO;
}

static int seg_load(scan *sc, uint64_t first, int is_last)
{
    char name[NAME_LEN];
    seg_name(name, first);
    sc->name = name;
    int rc = check_boundary(sc, first);
    if (rc) return rc;
    wal_seg *s = seg_push(sc->w, first);
    if (!s) return QC_ENOMEM;
    int fd = openat(sc->w->wal_fd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0) return fail_sys(sc->rec, "wal", name, "open");
    uint8_t *buf = NULL;
    size_t size = 0;
    rc = read_file(fd, &buf, &size);
    if (rc == QC_EIO) rc = fail_sys(sc->rec, "wal", name, "read");
    if (!rc) rc = seg_parse(sc, s, buf, size, is_last, fd);
    free(buf);
    if (is_last && !rc)
        sc->w->fd = fd;
    else
        close(fd);
    return rc;
}

static int recover_log(qc_wal *w, qc_wal_recovery *rec)
{
    u64_list firsts = {0};
    int rc = list_dir(w->wal_path, seg_collect, &firsts);
    if (rc == QC_EIO) rc = fail_msg(rec, rc, "%s: list: %s", w->wal_path, strerror(errno));
    if (!rc && firsts.n) qsort(firsts.v, firsts.n, sizeof *firsts.v, cmp_u64);
    scan sc = {.w = w, .rec = rec, .prev_term = w->snap_term};
    for (size_t i = 0; i < firsts.n && !rc; i++) rc = seg_load(&sc, firsts.v[i], i + 1 == firsts.n);
    free(firsts.v);
    return rc;
}

/* What recovery read may be in the page cache only: a process killed
 * between a write and its fsync leaves it there, read back while the
 * machine runs and lost if it then loses power, yet the entries count as
 * durable from here on (a follower acknowledges them at once). So they are
 * made durable before they are used: the last segment (a roll syncs each
 * segment before it creates the next, so no earlier one can hold unsynced
 * records) and the directories, whose entries (a segment created or cut
 * off by a truncation, a snapshot renamed in, wal/ and snap/ themselves)
 * each had a window before their fsync. Files already clean cost little. */
static int sync_recovered(qc_wal *w, const char *dir, qc_wal_recovery *rec)
{
    char name[NAME_LEN];
    if (w->fd >= 0) {
        seg_name(name, seg_last(w)->first);
        if (do_sync(w, w->fd, 0) != 0) return fail_sys(rec, "wal", name, "fsync");
    }
    if (do_sync(w, w->wal_fd, 1) != 0)
        return fail_msg(rec, QC_EIO, "%s: fsync: %s", w->wal_path, strerror(errno));
    if (do_sync(w, w->snap_fd, 1) != 0)
        return fail_msg(rec, QC_EIO, "%s: fsync: %s", w->snap_path, strerror(errno));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 || do_sync(w, fd, 1) != 0 ? QC_EIO : QC_OK;
    int saved = errno;
    if (fd >= 0) close(fd);
    errno = saved;
    return rc ? fail_msg(rec, rc, "%s: fsync: %s", dir, strerror(errno)) : QC_OK;
}

/* ---- open / close ---- */

static int open_dir(const char *dir, const char *sub, char **path, int *fd, qc_wal_recovery *rec)
{
    if (!(*path = join(dir, sub))) return QC_ENOMEM;
    if (mkdir(*path, 0755) != 0 && errno != EEXIST)
        return fail_msg(rec, QC_EIO, "%s: mkdir: %s", *path, strerror(errno));
    *fd = open(*path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) return fail_msg(rec, QC_EIO, "%s: open: %s", *path, strerror(errno));
    return QC_OK;
}

static int wal_new(const char *dir, const qc_wal_options *opt, qc_wal **out, qc_wal_recovery *rec)
{
    qc_wal *w = calloc(1, sizeof *w);
    if (!w) return QC_ENOMEM;
    if (pthread_mutex_init(&w->lock, NULL) != 0) {
        free(w);
        return QC_ENOMEM;
    }
    *out = w;
    w->wal_fd = w->snap_fd = w->fd = -1;
    w->segment_size = opt && opt->segment_size ? opt->segment_size : QC_WAL_SEGMENT_SIZE;
    w->sync = opt ? opt->sync : NULL;
    w->sync_arg = opt ? opt->sync_arg : NULL;
    int rc = dir && *dir ? mkdir_p(dir) : QC_EINVAL;
    if (rc == QC_EINVAL) return fail_msg(rec, rc, "no data directory given");
    if (rc == QC_EIO) return fail_msg(rec, rc, "%s: mkdir: %s", dir, strerror(errno));
    if (!rc) rc = open_dir(dir, "wal", &w->wal_path, &w->wal_fd, rec);
    if (!rc) rc = open_dir(dir, "snap", &w->snap_path, &w->snap_fd, rec);
    return rc;
}

/* Frees the data rec holds, leaving note and error. */
static void rec_release(qc_wal_recovery *rec)
{
    for (size_t i = 0; i < rec->n_entries; i++) free(rec->entries[i].data);
    free(rec->entries);
    free(rec->snap_data);
    rec->entries = NULL, rec->n_entries = 0;
    rec->snap_data = NULL, rec->snap_len = 0;
    rec->snap_index = rec->snap_term = rec->torn_bytes = 0;
}

void qc_wal_recovery_free(qc_wal_recovery *rec)
{
    if (!rec) return;
    rec_release(rec);
    memset(rec, 0, sizeof *rec);
}

int qc_wal_open(const char *dir, const qc_wal_options *opt, qc_wal **out, qc_wal_recovery *rec)
{
    qc_wal_recovery local = {0};
    qc_wal_recovery *r = rec ? rec : &local;
    memset(r, 0, sizeof *r);
    qc_wal *w = NULL;
    int rc = wal_new(dir, opt, &w, r);
    if (!rc) rc = recover_snapshot(w, r);
    if (!rc) rc = recover_log(w, r);
    if (!rc) rc = sync_recovered(w, dir, r);
    if (rc == QC_ENOMEM && !r->error[0]) fail_msg(r, rc, "%s: out of memory in recovery", dir);
    if (rc) {
        int saved = errno;
        rec_release(r);
        qc_wal_close(w);
        errno = saved;
        return rc;
    }
    if (!rec) qc_wal_recovery_free(r);
    *out = w;
    return QC_OK;
}

static int sub_present(const char *dir, const char *sub)
{
    char *path = join(dir, sub);
    if (!path) return QC_ENOMEM;
    struct stat st;
    int rc = stat(path, &st) == 0 ? 1 : errno == ENOENT ? 0 : QC_EIO;
    int saved = errno;
    free(path);
    errno = saved;
    return rc;
}

int qc_wal_present(const char *dir)
{
    int rc = sub_present(dir, "wal");
    return rc == 0 ? sub_present(dir, "snap") : rc;
}

void qc_wal_close(qc_wal *w)
{
    if (!w) return;
    qc_wal_empty_trash(w); /* a failure leaves files that are passed over */
    close_current(w);
    if (w->wal_fd >= 0) close(w->wal_fd);
    if (w->snap_fd >= 0) close(w->snap_fd);
    for (size_t i = 0; i < w->n_segs; i++) seg_free(&w->segs[i]);
    free(w->segs);
    free(w->wal_path);
    free(w->snap_path);
    qc_buf_free(&w->buf);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int qc_wal_empty_trash(qc_wal *w)
{
    pthread_mutex_lock(&w->lock);
    trash_item *t = w->trash;
    size_t n = w->n_trash;
    w->trash = NULL;
    w->n_trash = w->cap_trash = 0;
    pthread_mutex_unlock(&w->lock);
    int rc = QC_OK;
    for (size_t i = 0; i < n; i++)
        if (unlinkat(t[i].in_snap ? w->snap_fd : w->wal_fd, t[i].name, 0) != 0 && errno != ENOENT)
            rc = QC_EIO;
    free(t);
    return rc;
}

/* ---- appending ---- */

/* Writes out the encoded records to the last segment. */
static int flush(qc_wal *w)
{
    if (!w->buf.len) return QC_OK;
    wal_seg *s = seg_last(w);
    if (pwrite_all(w->fd, w->buf.data, w->buf.len, s->size) != 0) return wal_fail(w);
    s->size += w->buf.len;
    w->buf.len = 0;
    if (w->buf.cap > 4 * FLUSH_AT) qc_buf_free(&w->buf); /* after a huge entry */
    w->dirty = 1;
    return QC_OK;
}

/* Starts the segment of index first. The finished one is made durable now,
 * so that only the last segment can ever hold a torn tail. */
static int roll(qc_wal *w, uint64_t first)
{
    if (w->fd >= 0 && (w->dirty ? do_sync(w, w->fd, 0) : 0) != 0) return wal_fail(w);
    close_current(w);
    w->dirty = 0;
    char name[NAME_LEN];
    seg_name(name, first);
    int fd = openat(w->wal_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return wal_fail(w);
    if (!seg_push(w, first)) {
        unlinkat(w->wal_fd, name, 0);
        close(fd);
        return QC_ENOMEM;
    }
    w->fd = fd;
    w->dir_dirty = 1;
    return QC_OK;
}

static int need_roll(const qc_wal *w, uint64_t index)
{
    if (!w->n_segs) return 1;
    const wal_seg *s = &w->segs[w->n_segs - 1];
    if (s->first + s->n != index) return 1; /* the log jumped past a snapshot */
    return s->n > 0 && s->size + w->buf.len >= w->segment_size;
}

static int append_one(qc_wal *w, const qc_entry *e)
{
    int rc = QC_OK;
    if (need_roll(w, e->index)) {
        rc = flush(w);
        if (!rc) rc = roll(w, e->index);
        if (rc) return rc;
    }
    wal_seg *s = seg_last(w);
    /* Record k of a segment is index first + k: lookups and cuts count on it. */
    qc_assert(s->first + s->n == e->index);
    rc = seg_add(s, s->size + w->buf.len, e->term);
    if (rc) return rc;
    rc = rec_encode(&w->buf, e);
    if (rc) {
        s->n--; /* the offset went in, the record did not */
        return rc;
    }
    return w->buf.len >= FLUSH_AT ? flush(w) : QC_OK;
}

/* The term of the entry at index (the snapshot's at its point); 0 when the
 * log does not hold it. */
static uint64_t term_at(const qc_wal *w, uint64_t index)
{
    if (index == w->snap_index) return w->snap_term;
    for (size_t i = w->n_segs; i-- > 0;) {
        const wal_seg *s = &w->segs[i];
        if (index >= s->first && index - s->first < s->n) return s->term[index - s->first];
    }
    return 0;
}

/* A batch must continue the log: contiguous indexes, terms never going
 * down, from its first entry's predecessor on (recovery refuses such a log). */
static int check_batch(const qc_wal *w, const qc_entry *e, size_t n)
{
    uint64_t last = qc_wal_last_index(w);
    if (e[0].index <= w->snap_index || e[0].index > last + 1) return QC_EINVAL;
    if (e[0].term < term_at(w, e[0].index - 1)) return QC_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (e[i].len > QC_WAL_MAX_DATA) return QC_ETOOBIG;
        if (e[i].len && !e[i].data) return QC_EINVAL;
        if (i && (e[i].index != e[i - 1].index + 1 || e[i].term < e[i - 1].term)) return QC_EINVAL;
    }
    return QC_OK;
}

/* Drops every entry after index: later segments go, the one holding index
 * is cut; both made durable before anything new lands on top of them. */
static int truncate_after(qc_wal *w, uint64_t index)
{
    int rc = flush(w);
    int removed = 0;
    while (!rc && w->n_segs && seg_last(w)->first > index) {
        rc = seg_unlink_last(w);
        removed = 1;
    }
    if (!rc) rc = open_current(w);
    wal_seg *s = seg_last(w);
    if (!rc && s && seg_end(s) > index) {
        size_t keep = (size_t)(index - s->first + 1);
        if (ftruncate(w->fd, (off_t)s->off[keep]) != 0 || do_sync(w, w->fd, 0) != 0)
            return wal_fail(w);
        s->size = s->off[keep];
        s->n = keep;
    }
    if (!rc && (removed || w->dir_dirty)) {
        if (do_sync(w, w->wal_fd, 1) != 0) return wal_fail(w);
        w->dir_dirty = 0;
    }
    return rc;
}

static int append_locked(qc_wal *w, const qc_entry *entries, size_t n)
{
    if (w->failed) return wal_refuse(w);
    if (n == 0) return QC_OK;
    int rc = check_batch(w, entries, n);
    if (rc) return rc;
    if (entries[0].index <= log_last(w)) rc = truncate_after(w, entries[0].index - 1);
    for (size_t i = 0; i < n && !rc; i++) rc = append_one(w, &entries[i]);
    if (!rc) rc = flush(w);
    if (rc == QC_ENOMEM) { /* half a batch is in: keep it simple, stop writing */
        errno = ENOMEM;
        wal_fail(w);
    }
    return rc;
}

int qc_wal_append(qc_wal *w, const qc_entry *entries, size_t n)
{
    pthread_mutex_lock(&w->lock);
    int rc = append_locked(w, entries, n);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

static int truncate_locked(qc_wal *w, uint64_t index)
{
    if (w->failed) return wal_refuse(w);
    if (index < w->snap_index) return QC_EINVAL;
    if (index >= log_last(w)) return QC_OK;
    return truncate_after(w, index);
}

int qc_wal_truncate(qc_wal *w, uint64_t index)
{
    pthread_mutex_lock(&w->lock);
    int rc = truncate_locked(w, index);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

static int sync_locked(qc_wal *w)
{
    if (w->failed) return wal_refuse(w);
    int rc = flush(w);
    if (rc) return rc;
    if (!w->dirty && !w->dir_dirty) return QC_OK;
    double t0 = mono_seconds();
    if (w->dirty && w->fd >= 0 && do_sync(w, w->fd, 0) != 0) return wal_fail(w);
    if (w->dir_dirty && do_sync(w, w->wal_fd, 1) != 0) return wal_fail(w);
    w->last_sync = mono_seconds() - t0;
    w->dirty = w->dir_dirty = 0;
    return QC_OK;
}

int qc_wal_sync(qc_wal *w)
{
    pthread_mutex_lock(&w->lock);
    int rc = sync_locked(w);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* ---- snapshots and compaction ---- */

/* A snapshot file being written, SNAP_STEP bytes at a time. */
typedef struct snap_out {
    int fd;
    uint64_t off;     /* bytes written */
    uint64_t started; /* bytes whose writeback was started */
} snap_out;

/* Starts the writeback of the step just written and waits for the one
 * before it, as Redis's rdb-save-incremental-fsync does: written at once
 * and fsynced at the end, a 28 MB file was all dirty when its fsync came,
 * and the fdatasyncs of the logs on the same disk (the journal's commits)
 * waited behind it: over 20 ms (up to 120) five times as often as without
 * snapshots (see README, Snapshots). At most two steps are left to the
 * final fsync now; steps of 4 MiB left the logs' syncs waiting three
 * times as long as 1 MiB, and 256 KiB did no better than 1 MiB. Starting
 * a writeback is a hint and its errors are ignored, but the wait reports
 * (and so consumes, for this descriptor) a writeback error the final
 * fsync would no longer see: that one fails the snapshot, unless the file
 * system has no such call. 0 or -1 with errno. */
static int snap_step(snap_out *o)
{
    (void)sync_file_range(o->fd, (off_t)o->started, SNAP_STEP, SYNC_FILE_RANGE_WRITE);
    if (o->started >= SNAP_STEP &&
        sync_file_range(o->fd, (off_t)(o->started - SNAP_STEP), SNAP_STEP,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER) != 0 &&
        errno != EINVAL && errno != ENOSYS && errno != ESPIPE && errno != EOPNOTSUPP)
        return -1;
    o->started += SNAP_STEP;
    return 0;
}

static int snap_out_write(snap_out *o, const uint8_t *p, size_t len)
{
    while (len > 0) {
        size_t n = SNAP_STEP - (size_t)(o->off - o->started); /* to the step's end */
        if (n > len) n = len;
        if (pwrite_all(o->fd, p, n, o->off) != 0) return -1;
        p += n, len -= n, o->off += n;
        if (o->off - o->started == SNAP_STEP && snap_step(o) != 0) return -1;
    }
    return 0;
}

/* Writes the header and parts to tmp and fsyncs it; 0 or -1 with errno. */
static int snap_write(const qc_wal *w, const char *tmp, const uint8_t *h, const struct iovec *parts,
                      int n)
{
    snap_out o = {.fd = openat(w->snap_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (o.fd < 0) return -1;
    int bad = snap_out_write(&o, h, SNAP_HEADER) != 0;
    for (int i = 0; i < n && !bad; i++)
        bad = snap_out_write(&o, parts[i].iov_base, parts[i].iov_len) != 0;
    bad = bad || do_sync(w, o.fd, 0) != 0;
    int saved = errno;
    if (close(o.fd) != 0 && !bad) bad = 1, saved = errno;
    if (!bad) return 0;
    unlinkat(w->snap_fd, tmp, 0);
    errno = saved;
    return -1;
}

/* fsyncs snap/ through a descriptor of its own: an error the fsync reports
 * is then also reported to the loop's descriptor, even when this runs in a
 * forked child that shares that descriptor's error cursor. */
static int snap_dir_sync(const qc_wal *w)
{
    int fd = openat(w->snap_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = do_sync(w, fd, 1);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int qc_wal_write_snapshot(const qc_wal *w, uint64_t index, uint64_t term, const struct iovec *parts,
                          int n)
{
    if (w->failed) return wal_refuse(w);
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (parts[i].iov_len && !parts[i].iov_base) return QC_EINVAL;
        len += parts[i].iov_len;
        if (len > QC_WAL_MAX_SNAPSHOT) return QC_ETOOBIG;
    }
    if (index == 0) return QC_EINVAL;
    uint8_t h[SNAP_HEADER];
    put_u32(h, SNAP_MAGIC);
    put_u64(h + 4, index);
    put_u64(h + 12, term);
    put_u64(h + 20, len);
    uint32_t crc = qc_crc32c(0, h, 28);
    for (int i = 0; i < n; i++) crc = qc_crc32c(crc, parts[i].iov_base, parts[i].iov_len);
    put_u32(h + 28, crc);
    char tmp[NAME_LEN], name[NAME_LEN];
    snap_name(tmp, index, term, ".tmp");
    snap_name(name, index, term, "");
    if (snap_write(w, tmp, h, parts, n) != 0) return QC_EIO;
    if (renameat(w->snap_fd, tmp, w->snap_fd, name) != 0) {
        int saved = errno;
        unlinkat(w->snap_fd, tmp, 0);
        errno = saved;
        return QC_EIO;
    }
    return snap_dir_sync(w) == 0 ? QC_OK : QC_EIO;
}

/* Drops all but the newest QC_WAL_SNAP_KEEP to the trash. Not fsynced: an
 * old snapshot that comes back after a crash is only passed over. */
static int snap_prune(qc_wal *w)
{
    snap_list l;
    int rc = snap_list_load(w, &l, 0);
    for (size_t i = QC_WAL_SNAP_KEEP; i < l.n && !rc; i++) {
        char name[NAME_LEN];
        snap_name(name, l.v[i].index, l.v[i].term, "");
        rc = trash_add(w, 1, name);
    }
    free(l.v);
    return rc;
}

/* A snapshot the log holds another entry for at index (a leader's, that a
 * follower whose log diverged installs) replaces the log from index on:
 * those entries are of another history, so never committed, and left
 * after the snapshot they would come back at the next start (refused
 * there when of a lower term). Durable when it returns 0. */
static int cut_other_history(qc_wal *w, uint64_t index, uint64_t term)
{
    uint64_t t = index > w->snap_index ? term_at(w, index) : 0;
    return t && t != term ? truncate_after(w, index - 1) : QC_OK;
}

static int add_snapshot_locked(qc_wal *w, uint64_t index, uint64_t term)
{
    if (w->failed) return wal_refuse(w);
    if (index == 0 || index < w->snap_index) return QC_EINVAL;
    int rc = cut_other_history(w, index, term);
    if (rc) return rc;
    w->snap_index = index;
    w->snap_term = term;
    return snap_prune(w);
}

int qc_wal_add_snapshot(qc_wal *w, uint64_t index, uint64_t term)
{
    pthread_mutex_lock(&w->lock);
    int rc = add_snapshot_locked(w, index, term);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

static int save_snapshot_locked(qc_wal *w, uint64_t index, uint64_t term, const struct iovec *parts,
                                int n)
{
    if (w->failed) return wal_refuse(w);
    if (index == 0 || index < w->snap_index) return QC_EINVAL;
    /* Before the file: a crash between the two must not leave the other
     * history after a snapshot that is already on disk. */
    int rc = cut_other_history(w, index, term);
    if (rc) return rc;
    rc = qc_wal_write_snapshot(w, index, term, parts, n);
    /* On the loop a failed write or fsync stops the node, as for the log. */
    if (rc == QC_EIO) return wal_fail(w);
    return rc ? rc : add_snapshot_locked(w, index, term);
}

int qc_wal_map_snapshot(const qc_wal *w, uint64_t index, uint64_t term, qc_wal_map *out)
{
    char name[NAME_LEN];
    snap_name(name, index, term, "");
    int fd = openat(w->snap_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return QC_EIO;
    struct stat st;
    uint8_t h[SNAP_HEADER];
    snap_ref r = {.index = index, .term = term};
    int rc = QC_OK;
    if (fstat(fd, &st) != 0 || pread_all(fd, h, SNAP_HEADER, 0) != 0)
        rc = QC_EIO;
    else if ((uint64_t)st.st_size < SNAP_HEADER || snap_header_problem(h, &r, (uint64_t)st.st_size))
        rc = QC_ECORRUPT;
    void *map = NULL;
    if (rc == QC_OK && (size_t)st.st_size > SNAP_HEADER) {
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) rc = QC_EIO;
    }
    int saved = errno;
    close(fd);
    errno = saved;
    if (rc) return rc;
    *out = (qc_wal_map){.map = map,
                        .map_len = map ? (size_t)st.st_size : 0,
                        .data = map ? (const uint8_t *)map + SNAP_HEADER : NULL,
                        .len = map ? (size_t)st.st_size - SNAP_HEADER : 0};
    return QC_OK;
}

void qc_wal_unmap_snapshot(qc_wal_map *m)
{
    if (m->map) munmap(m->map, m->map_len);
    *m = (qc_wal_map){0};
}

int qc_wal_save_snapshot(qc_wal *w, uint64_t index, uint64_t term, const struct iovec *parts, int n)
{
    pthread_mutex_lock(&w->lock);
    int rc = save_snapshot_locked(w, index, term, parts, n);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

static int compact_locked(qc_wal *w, uint64_t index)
{
    if (w->failed) return wal_refuse(w);
    if (index > w->snap_index) return QC_EINVAL;
    int rc = flush(w);
    /* No directory fsync: a segment whose unlink a crash undoes is wholly
     * covered by the snapshot, which recovery passes over, and the next
     * segment's creation syncs the directory anyway. */
    while (!rc && w->n_segs) {
        const wal_seg *s = &w->segs[0];
        int whole = w->n_segs > 1 ? w->segs[1].first <= index + 1
                                  : seg_end(s) <= index && s->first <= index;
        if (!whole) break;
        rc = seg_unlink_first(w);
    }
    return rc;
}

int qc_wal_compact(qc_wal *w, uint64_t index)
{
    pthread_mutex_lock(&w->lock);
    int rc = compact_locked(w, index);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* ---- queries ---- */

uint64_t qc_wal_first_index(const qc_wal *w) { return w->snap_index + 1; }

uint64_t qc_wal_last_index(const qc_wal *w)
{
    uint64_t l = log_last(w);
    return l > w->snap_index ? l : w->snap_index;
}

uint64_t qc_wal_snapshot_index(const qc_wal *w) { return w->snap_index; }

double qc_wal_last_sync_seconds(const qc_wal *w) { return w->last_sync; }

size_t qc_wal_segment_count(const qc_wal *w) { return w->n_segs; }

int qc_wal_snapshot_dir_fd(const qc_wal *w) { return w->snap_fd; }
