/* Durable hard state: one small file, "qcluster-state v1 TERM VOTE COMMIT
 * CRC", replaced atomically. A torn or edited file is refused with a clear
 * error, never taken for a fresh start (that could vote twice in a term). */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/common.h"
#include "core/wire.h"

struct qc_store {
    char *dir;
    char *state_path;
    char *tmp_path;
    int lock_fd;
    int dir_fd;
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

int qc_store_open(const char *dir, qc_store **out)
{
    int rc = mkdir_p(dir);
    if (rc) return rc;
    qc_store *s = calloc(1, sizeof *s);
    if (!s) return QC_ENOMEM;
    s->lock_fd = s->dir_fd = -1;
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
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? QC_EBUSY : QC_EIO;
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
    free(s->dir);
    free(s->state_path);
    free(s->tmp_path);
    free(s);
}

const char *qc_store_dir(const qc_store *s) { return s->dir; }

static int format_state(const qc_hard_state *hs, char *buf, size_t len)
{
    int n = snprintf(buf, len, "qcluster-state v1 %" PRIu64 " %" PRIu64 " %" PRIu64, hs->term,
                     hs->vote, hs->commit);
    if (n < 0 || (size_t)n + 12 >= len) return -1;
    uint32_t crc = qc_crc32c(0, buf, (size_t)n);
    return n + snprintf(buf + n, len - (size_t)n, " %08" PRIx32 "\n", crc);
}

int qc_store_load(qc_store *s, qc_hard_state *hs)
{
    FILE *f = fopen(s->state_path, "re");
    if (!f) return errno == ENOENT ? QC_ENOTFOUND : QC_EIO;
    char buf[256] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int err = ferror(f);
    fclose(f);
    if (err) return QC_EIO;
    qc_hard_state got = {0};
    uint32_t crc = 0;
    if (n == 0 || sscanf(buf, "qcluster-state v1 %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNx32,
                         &got.term, &got.vote, &got.commit, &crc) != 4)
        return QC_ECORRUPT;
    char expect[256];
    if (format_state(&got, expect, sizeof expect) < 0 || strcmp(expect, buf) != 0)
        return QC_ECORRUPT;
    *hs = got;
    return QC_OK;
}

int qc_store_save(qc_store *s, const qc_hard_state *hs)
{
    char buf[256];
    int n = format_state(hs, buf, sizeof buf);
    if (n < 0) return QC_EINVAL;
    int fd = open(s->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return QC_EIO;
    ssize_t w = write(fd, buf, (size_t)n);
    if (w != n || fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        errno = w == n ? saved : (w < 0 ? saved : ENOSPC);
        return QC_EIO;
    }
    if (close(fd) != 0) return QC_EIO;
    if (rename(s->tmp_path, s->state_path) != 0) return QC_EIO;
    return fsync(s->dir_fd) == 0 ? QC_OK : QC_EIO;
}
