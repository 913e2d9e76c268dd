/* The replicated key-value state machine: fed committed raft entries in log
 * order, it applies put/delete commands (with compare-and-set) to an ordered
 * in-memory map and serialises it to snapshots. Pure and deterministic: no
 * I/O, no clock, no global state; equal command streams give equal stores. */
#ifndef QC_KV_H
#define QC_KV_H

#include <stddef.h>
#include <stdint.h>

#include "base/common.h" /* qc_buf */

#define QC_KV_MAX_KEY_DEFAULT 1024u             /* 1 KiB */
#define QC_KV_MAX_VALUE_DEFAULT (1024u * 1024u) /* 1 MiB */
#define QC_KV_CMD_VERSION 1

typedef struct qc_kv qc_kv;

typedef struct qc_kv_config {
    size_t max_key;   /* 0: QC_KV_MAX_KEY_DEFAULT; at most UINT32_MAX */
    size_t max_value; /* 0: QC_KV_MAX_VALUE_DEFAULT; at most UINT32_MAX */
} qc_kv_config;

/* Outcome of one applied entry. Every node reaches the same outcome. */
enum {
    QC_KV_OK = 0,       /* applied; the store changed */
    QC_KV_CONFLICT = 1, /* cas did not hold; nothing changed */
    QC_KV_NOTFOUND = 2, /* delete of a missing key; nothing changed */
    QC_KV_INVALID = 3,  /* malformed command, consumed as a no-op */
    QC_KV_TOOBIG = 4,   /* key or value over this store's limits; no-op */
};

enum { QC_KV_OP_NONE = 0, QC_KV_OP_PUT = 1, QC_KV_OP_DELETE = 2 };

/* cas values: any other negative number is malformed. */
#define QC_KV_CAS_NONE (-1) /* unconditional */
#define QC_KV_CAS_ABSENT 0  /* only if the key does not exist */

/* A decoded command. key and value point into the encoded bytes. */
typedef struct qc_kv_cmd {
    int op; /* QC_KV_OP_PUT or QC_KV_OP_DELETE */
    uint64_t request_id, origin;
    int64_t cas; /* QC_KV_CAS_NONE, QC_KV_CAS_ABSENT or a revision */
    const uint8_t *key;
    size_t klen;
    const uint8_t *value; /* put only; NULL for delete */
    size_t vlen;
} qc_kv_cmd;

typedef struct qc_kv_result {
    int status;     /* QC_KV_OK, _CONFLICT, _NOTFOUND, _INVALID, _TOOBIG */
    int op;         /* QC_KV_OP_*; NONE for an invalid command or a no-op */
    uint64_t index; /* the entry's raft index */
    /* OK: the new revision (= index). CONFLICT: the key's current revision,
     * 0 when it is absent. Otherwise 0. */
    uint64_t revision;
    uint64_t request_id, origin; /* 0 when the command could not be decoded */
    /* The key (all but INVALID) and, for an applied put, the new value.
     * Point into the store or into the caller's cmd; valid until the next
     * qc_kv_apply/_apply_noop/_restore/_free and while cmd lives. value is
     * NULL after a delete. */
    const uint8_t *key;
    size_t klen;
    const uint8_t *value;
    size_t vlen;
} qc_kv_result;

typedef struct qc_kv_stats {
    uint64_t keys;          /* live keys */
    uint64_t bytes;         /* sum of key and value lengths of live keys */
    uint64_t applied_index; /* last entry applied, commands and no-ops */
    uint64_t revision;      /* index of the last entry that changed the store */
    uint64_t puts, deletes, conflicts, notfound, invalid; /* by this object; not in snapshots */
} qc_kv_stats;

/* Creates an empty store; cfg may be NULL for the defaults. Free with
 * qc_kv_free(). 0, QC_EINVAL (limit over UINT32_MAX) or QC_ENOMEM. */
int qc_kv_new(const qc_kv_config *cfg, qc_kv **out);
/* Frees the store and everything it holds; NULL is fine. */
void qc_kv_free(qc_kv *kv);

/* Append one encoded command to out (the caller owns out's memory).
 * QC_EINVAL: empty key, a length over UINT32_MAX or cas < -1; QC_ENOMEM.
 * Store limits are not checked here: see qc_kv_check(). */
int qc_kv_encode_put(qc_buf *out, uint64_t request_id, uint64_t origin, const void *key,
                     size_t klen, const void *value, size_t vlen, int64_t cas);
int qc_kv_encode_delete(qc_buf *out, uint64_t request_id, uint64_t origin, const void *key,
                        size_t klen, int64_t cas);
/* Parses cmd[0..len) into out (pointers into cmd). 0 or QC_EINVAL on any
 * malformed input; never reads outside cmd. */
int qc_kv_decode(const uint8_t *cmd, size_t len, qc_kv_cmd *out);
/* Would a put of these sizes pass this store's limits? (vlen 0 for a
 * delete.) 0, QC_EINVAL (empty key) or QC_ETOOBIG. For proposers. */
int qc_kv_check(const qc_kv *kv, size_t klen, size_t vlen);

/* Applies the committed entry at index (which must exceed the applied
 * index; gaps are allowed). A malformed command is consumed as a no-op and
 * reported QC_KV_INVALID. res may be NULL. Returns 0 when the entry was
 * consumed, whatever its status; QC_EINVAL for an index not above the
 * applied one, QC_ENOMEM with the store unchanged (the caller may retry). */
int qc_kv_apply(qc_kv *kv, uint64_t index, const uint8_t *cmd, size_t len, qc_kv_result *res);
/* Consumes an entry that carries no command (raft no-op, config change). */
int qc_kv_apply_noop(qc_kv *kv, uint64_t index);

/* Looks a key up. 0 and the value (pointing into the store, valid until
 * the next mutating call) with its mod revision; QC_ENOTFOUND. Outputs may
 * be NULL. */
int qc_kv_get(const qc_kv *kv, const void *key, size_t klen, const uint8_t **value, size_t *vlen,
              uint64_t *revision);

/* Called for each listed key; the pointers are valid during the call only.
 * Return 0 to continue, anything else to stop the listing with that value.
 * It must not modify the store. */
typedef int (*qc_kv_list_fn)(void *arg, const uint8_t *key, size_t klen, const uint8_t *value,
                             size_t vlen, uint64_t revision);
/* Calls fn for every key starting with prefix (plen 0: all keys) in
 * bytewise key order. 0, or the first non-zero value fn returned. */
int qc_kv_list(const qc_kv *kv, const void *prefix, size_t plen, qc_kv_list_fn fn, void *arg);

/* Counters for tests and metrics. */
void qc_kv_stats_get(const qc_kv *kv, qc_kv_stats *out);
uint64_t qc_kv_applied_index(const qc_kv *kv);
/* Checks the whole tree by a full walk (O(keys)), for tests: key order,
 * stored heights, AVL balance, key and byte counts. 0 and the height;
 * QC_ECORRUPT at the first violation. */
int qc_kv_verify(const qc_kv *kv, uint64_t *height);

/* Appends a snapshot of the whole state (applied index, revision, every key
 * with its value and revision; CRC-32C checked) to out (caller-owned).
 * 0 or QC_ENOMEM/QC_ETOOBIG, out unchanged on failure. */
int qc_kv_snapshot(const qc_kv *kv, qc_buf *out);
/* Replaces the whole state by a snapshot's. data is only read, not kept.
 * 0; QC_ECORRUPT (bad checksum, framing or order) or QC_ENOMEM, both
 * leaving the old state intact. Limits are not applied to restored keys. */
int qc_kv_restore(qc_kv *kv, const uint8_t *data, size_t len);

#endif
