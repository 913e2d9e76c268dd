/* libqcluster's version and error codes: what every layer of QCluster
 * shares, its pure core included, without the rest of the SDK
 * (include/qcluster.h includes this file, as lua.h includes luaconf.h). */

#ifndef QCLUSTER_ERRORS_H
#define QCLUSTER_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

#define QCLUSTER_VERSION "0.1.0"

/* Every function that can fail returns 0 or one of these; qc_strerror()
 * names them. */
enum {
    QC_OK = 0,
    QC_ENOMEM = -1,     /* allocation failed */
    QC_EINVAL = -2,     /* bad argument or malformed input */
    QC_EIO = -3,        /* system call failed; errno tells more */
    QC_ENOLEADER = -4,  /* no leader is known */
    QC_ENOTFOUND = -5,  /* no such peer, key, ... */
    QC_ETOOBIG = -6,    /* input over a size limit */
    QC_EBUSY = -7,      /* an operation of that kind is in progress */
    QC_ECORRUPT = -8,   /* durable data failed its check */
    QC_ENOTLEADER = -9, /* operation needs the leader */
};

/* Static text for a QC_E... code. */
const char *qc_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
