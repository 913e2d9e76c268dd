/* Durable hard state: one file of two slots, each a line "qcluster-state v2
 * SEQ TERM VOTE COMMIT CRC" in a block of its own. A save overwrites the
 * older slot in place and flushes it with one fdatasync; a crash that tears
 * it leaves the other slot, the state before a save that never returned.
 * A file with no valid slot (torn, edited) is refused with a clear error,
 * never taken for a fresh start (that could vote twice in a term). */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/common.h"
#include "core/wire.h"

/* Slot k is at k * QC_STORE_BLOCK, so that writing one never rewrites the
 * block of the other; each is QC_STORE_SLOT bytes, the line zero-padded. */
#define QC_STORE_BLOCK 4096
#define QC_STORE_SLOT 128
#define QC_STORE_SIZE (QC_STORE_BLOCK + QC_STORE_SLOT)

struct qc_store {
    char *dir;
    char *state_path;
    char *tmp_path;
    int lock_fd;
    int dir_fd;
    int state_fd; /* the two-slot file, once loaded or written whole; else -1 */
    uint64_t seq; /* of the newest valid slot: the next save goes to seq + 1 */
    int slot;     /* which slot that is: the next save overwrites the other */
};

static int mkdir_p(const char *path)
{
    if (!*path) return QC_EINVAL;
    char *p = strdup(path);
    if (!p) return QC_ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) goto fail;
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) goto fail;
    free(p);
    return QC_OK;
fail:
    free(p);
    return QC_EIO;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* The lock, waiting out a holder that is going away: a killed agent's
 * snapshot child (replica.c) shares the lock's open file until it runs and
 * dies of its parent's death, which at its low priority can take a moment
 * after the agent itself is gone. An agent that really runs keeps it. */
#define LOCK_TRIES 40 /* 2 s in all */
static int take_lock(int fd)
{
    for (int tries = 0;; tries++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) return QC_OK;
        if (errno != EWOULDBLOCK) return QC_EIO;
        if (tries == LOCK_TRIES) return QC_EBUSY;
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

int qc_store_open(const char *dir, qc_store **out)
{
    int rc = mkdir_p(dir);
    if (rc) return rc;
    qc_store *s = calloc(1, sizeof *s);
    if (!s) return QC_ENOMEM;
    s->lock_fd = s->dir_fd = s->state_fd = -1;
    s->dir = strdup(dir);
    s->state_path = join(dir, "state");
    s->tmp_path = join(dir, "state.tmp");
    char *lock_path = join(dir, "lock");
    if (!s->dir || !s->state_path || !s->tmp_path || !lock_path) {
        free(lock_path);
        qc_store_close(s);
        return QC_ENOMEM;
    }
    s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    free(lock_path);
    s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->lock_fd < 0 || s->dir_fd < 0) {
        qc_store_close(s);
        return QC_EIO;
    }
    if ((rc = take_lock(s->lock_fd)) != QC_OK) {
        qc_store_close(s);
        return rc;
    }
    *out = s;
    return QC_OK;
}

void qc_store_close(qc_store *s)
{
    if (!s) return;
    if (s->lock_fd >= 0) close(s->lock_fd);
    if (s->dir_fd >= 0) close(s->dir_fd);
    if (s->state_fd >= 0) close(s->state_fd);
    free(s->dir);
    free(s->state_path);
    free(s->tmp_path);
    free(s);
}

const char *qc_store_dir(const qc_store *s) { return s->dir; }

/* The slot line of hs as save number seq, zero-padded to QC_STORE_SLOT. */
static int format_state(const qc_hard_state *hs, uint64_t seq, char *buf)
{
    memset(buf, 0, QC_STORE_SLOT);
    int n = snprintf(buf, QC_STORE_SLOT,
                     "qcluster-state v2 %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, seq,
                     hs->term, hs->vote, hs->commit);
    if (n < 0 || (size_t)n + 11 >= QC_STORE_SLOT) return -1;
    uint32_t crc = qc_crc32c(0, buf, (size_t)n);
    return n + snprintf(buf + n, QC_STORE_SLOT - (size_t)n, " %08" PRIx32 "\n", crc);
}

/* The state in one slot: 0, or -1 when it is not exactly what a save of
 * its fields writes (never written, torn or edited). A v1 line (one line,
 * written whole by older agents) counts as save number 0. */
static int parse_slot(const char *slot, qc_hard_state *hs, uint64_t *seq)
{
    char buf[QC_STORE_SLOT + 1] = {0};
    memcpy(buf, slot, QC_STORE_SLOT);
    qc_hard_state got = {0};
    uint64_t n = 0;
    uint32_t crc = 0;
    if (sscanf(buf, "qcluster-state v2 %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNx32,
               &n, &got.term, &got.vote, &got.commit, &crc) != 5) {
        char v1[QC_STORE_SLOT];
        if (sscanf(buf, "qcluster-state v1 %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNx32, &got.term,
                   &got.vote, &got.commit, &crc) != 4)
            return -1;
        int len = snprintf(v1, sizeof v1, "qcluster-state v1 %" PRIu64 " %" PRIu64 " %" PRIu64,
                           got.term, got.vote, got.commit);
        if (len < 0 || (size_t)len >= sizeof v1) return -1;
        snprintf(v1 + len, sizeof v1 - (size_t)len, " %08" PRIx32 "\n",
                 qc_crc32c(0, v1, (size_t)len));
        if (strcmp(v1, buf) != 0) return -1;
    } else {
        char expect[QC_STORE_SLOT];
        if (format_state(&got, n, expect) < 0 || memcmp(expect, slot, QC_STORE_SLOT) != 0)
            return -1;
    }
    *hs = got;
    *seq = n;
    return 0;
}

int qc_store_load(qc_store *s, qc_hard_state *hs)
{
    int fd = open(s->state_path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? QC_ENOTFOUND : QC_EIO;
    char buf[QC_STORE_SIZE] = {0};
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (n < 0) {
        close(fd);
        return QC_EIO;
    }
    int whole = n == (ssize_t)sizeof buf; /* else a v1 file: its next save rewrites it whole */
    qc_hard_state got[2];
    uint64_t seq[2];
    int ok0 = parse_slot(buf, &got[0], &seq[0]) == 0;
    int ok1 = whole && parse_slot(buf + QC_STORE_BLOCK, &got[1], &seq[1]) == 0;
    if (!ok0 && !ok1) {
        close(fd);
        return QC_ECORRUPT;
    }
    /* A save killed before its fdatasync (or a first save before its
     * directory's fsync) leaves what was just read in the page cache only;
     * the node acts on it from here on (a vote), so it is made durable. */
    if (fdatasync(fd) != 0 || fsync(s->dir_fd) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return QC_EIO;
    }
    int k = ok1 && (!ok0 || seq[1] > seq[0]);
    *hs = got[k];
    s->seq = seq[k];
    s->slot = k;
    if (s->state_fd >= 0) close(s->state_fd);
    s->state_fd = whole ? fd : -1;
    if (!whole) close(fd);
    return QC_OK;
}

/* Writes the two-slot file whole (a fresh start, or after a v1 file):
 * temp file, fsync, rename, fsync of the directory. */
static int save_whole(qc_store *s, const char *line)
{
    char buf[QC_STORE_SIZE] = {0};
    memcpy(buf, line, QC_STORE_SLOT); /* slot 0; slot 1 never written */
    int fd = open(s->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return QC_EIO;
    ssize_t w = write(fd, buf, sizeof buf);
    if (w != (ssize_t)sizeof buf || fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        errno = w == (ssize_t)sizeof buf ? saved : (w < 0 ? saved : ENOSPC);
        return QC_EIO;
    }
    if (rename(s->tmp_path, s->state_path) != 0 || fsync(s->dir_fd) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return QC_EIO;
    }
    if (s->state_fd >= 0) close(s->state_fd);
    s->state_fd = fd;
    return QC_OK;
}

int qc_store_save(qc_store *s, const qc_hard_state *hs)
{
    char line[QC_STORE_SLOT];
    uint64_t seq = s->seq + 1;
    if (format_state(hs, seq, line) < 0) return QC_EINVAL;
    if (s->state_fd < 0) {
        int rc = save_whole(s, line);
        if (rc == QC_OK) {
            s->seq = seq;
            s->slot = 0;
        }
        return rc;
    }
    /* The file's size and blocks stay as they are: one data flush, no
     * journal commit, where a rename costs two (measured 0.3 against 4.5
     * ms at p50 on the project's test machine, its disk shared and busy).
     * Never over the newest slot: a torn save must leave it. */
    int slot = !s->slot;
    off_t at = (off_t)slot * QC_STORE_BLOCK;
    ssize_t w = pwrite(s->state_fd, line, QC_STORE_SLOT, at);
    if (w != QC_STORE_SLOT || fdatasync(s->state_fd) != 0) {
        if (w >= 0 && w != QC_STORE_SLOT) errno = ENOSPC;
        return QC_EIO;
    }
    s->seq = seq;
    s->slot = slot;
    return QC_OK;
}
