/* Linked into node_test with -Wl,--wrap for each call below: every
 * descriptor libqcluster creates is looked at the moment the call returns,
 * before anything else could run, and counted when it was born without
 * FD_CLOEXEC. A fork in another thread at that instant would hand it to an
 * unrelated program; this finds such a descriptor every time, where a racing
 * fork (case fork) finds it only when the timing falls so. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd_birth.h"

int __real_socket(int domain, int type, int protocol);
int __real_accept(int fd, struct sockaddr *addr, socklen_t *len);
int __real_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int __real_pipe(int p[2]);
int __real_pipe2(int p[2], int flags);
int __real_open(const char *path, int flags, ...);
int __real_openat(int dir, const char *path, int flags, ...);
FILE *__real_fopen(const char *path, const char *mode);
DIR *__real_opendir(const char *path);

static int misses;
static char first[128];

/* Counts fd when it lacks FD_CLOEXEC; returns it. */
static int note(int fd, const char *call)
{
    if (fd < 0 || (fcntl(fd, F_GETFD) & FD_CLOEXEC)) return fd;
    if (__atomic_fetch_add(&misses, 1, __ATOMIC_SEQ_CST) == 0)
        snprintf(first, sizeof first, "fd %d from %s", fd, call);
    return fd;
}

int fd_birth_misses(const char **what)
{
    int n = __atomic_load_n(&misses, __ATOMIC_SEQ_CST);
    *what = n ? first : "";
    return n;
}

int __wrap_socket(int domain, int type, int protocol)
{
    return note(__real_socket(domain, type, protocol), "socket()");
}

int __wrap_accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    return note(__real_accept(fd, addr, len), "accept()");
}

int __wrap_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return note(__real_accept4(fd, addr, len, flags), "accept4()");
}

int __wrap_pipe(int p[2])
{
    int rc = __real_pipe(p);
    if (rc == 0) note(p[0], "pipe()"), note(p[1], "pipe()");
    return rc;
}

int __wrap_pipe2(int p[2], int flags)
{
    int rc = __real_pipe2(p, flags);
    if (rc == 0) note(p[0], "pipe2()"), note(p[1], "pipe2()");
    return rc;
}

/* The mode argument is there only with O_CREAT or O_TMPFILE. */
#define NEEDS_MODE(flags) (((flags)&O_CREAT) || ((flags)&O_TMPFILE) == O_TMPFILE)

int __wrap_open(const char *path, int flags, ...)
{
    int mode = 0;
    if (NEEDS_MODE(flags)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, int);
        va_end(ap);
    }
    return note(__real_open(path, flags, mode), "open()");
}

int __wrap_openat(int dir, const char *path, int flags, ...)
{
    int mode = 0;
    if (NEEDS_MODE(flags)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, int);
        va_end(ap);
    }
    return note(__real_openat(dir, path, flags, mode), "openat()");
}

FILE *__wrap_fopen(const char *path, const char *mode)
{
    FILE *f = __real_fopen(path, mode);
    if (f) note(fileno(f), "fopen()");
    return f;
}

DIR *__wrap_opendir(const char *path)
{
    DIR *d = __real_opendir(path);
    if (d) note(dirfd(d), "opendir()");
    return d;
}
