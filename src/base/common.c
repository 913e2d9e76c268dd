/* Shared basics: error texts, clocks, the identifier hash, buffers, the
 * failure of an invariant. */
#include "base/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/assert.h"

const char *qc_strerror(int code)
{
    switch (code) {
    case QC_OK: return "ok";
    case QC_ENOMEM: return "out of memory";
    case QC_EINVAL: return "invalid argument";
    case QC_EIO: return "input/output error";
    case QC_ENOLEADER: return "no leader";
    case QC_ENOTFOUND: return "not found";
    case QC_ETOOBIG: return "too big";
    case QC_EBUSY: return "busy";
    case QC_ECORRUPT: return "corrupt data";
    case QC_ENOTLEADER: return "not the leader";
    default: return "unknown error";
    }
}

_Noreturn void qc_assert_fail(const char *file, int line, const char *cond)
{
    /* stderr is unbuffered: the line is out before abort() ends us. */
    fprintf(stderr, "qcluster: %s:%d: invariant failed: %s\n", file, line, cond);
    abort();
}

uint64_t qc_now_ms(void)
{
    struct timespec ts;
    /* BOOTTIME keeps counting while the host is suspended, so a lease
     * cannot outlive a suspend; MONOTONIC would stop. */
#ifdef CLOCK_BOOTTIME
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
#endif
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double qc_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t qc_hash_id(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h ? h : 1; /* 0 means "nobody" in the raft core */
}

/* ---- growable buffer ---- */

int qc_buf_reserve(qc_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len) return QC_OK;
    if (extra > SIZE_MAX / 2 - b->len) return QC_ETOOBIG;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return QC_ENOMEM;
    b->data = p;
    b->cap = cap;
    return QC_OK;
}

int qc_buf_append(qc_buf *b, const void *p, size_t n)
{
    if (n == 0) return QC_OK;
    int rc = qc_buf_reserve(b, n);
    if (rc) return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return QC_OK;
}

void qc_buf_free(qc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
