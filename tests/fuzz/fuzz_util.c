/* The helpers of fuzz.h: scratch files for the targets that read files
 * (config, WAL). Test-only; it must never touch anything outside the
 * scratch directory it made. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

static char scratch[64];

static int remove_tree(const char *path, int keep_top)
{
    DIR *d = opendir(path);
    if (!d) return errno == ENOTDIR ? unlink(path) : (errno == ENOENT ? 0 : -1);
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[512];
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= sizeof sub) {
            rc = -1;
            continue;
        }
        if (remove_tree(sub, 0) != 0) rc = -1;
    }
    closedir(d);
    if (!keep_top && rmdir(path) != 0) rc = -1;
    return rc;
}

static void scratch_cleanup(void)
{
    if (scratch[0]) remove_tree(scratch, 0);
}

const char *fuzz_scratch_dir(void)
{
    if (scratch[0]) return scratch;
    const char *bases[] = {"/dev/shm", "/tmp"};
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
        snprintf(scratch, sizeof scratch, "%s/qcfuzz.XXXXXX", bases[i]);
        if (mkdtemp(scratch)) {
            atexit(scratch_cleanup);
            return scratch;
        }
    }
    scratch[0] = '\0';
    return NULL;
}

int fuzz_write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            close(fd);
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return close(fd);
}

int fuzz_clear_dir(const char *dir) { return remove_tree(dir, 1); }
