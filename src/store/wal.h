/* The write-ahead log of raft entries and the state-machine snapshots, under
 * one directory: dir/wal/<first index>.seg segments and dir/snap/ snapshots.
 * Pure POSIX file I/O: no event loop, no Lua, no global state (the store's
 * lock on data_dir keeps a second agent out). Append, sync, truncate,
 * save_snapshot and compact each hold the log's mutex: the writer thread
 * (walq.h) and the loop may call them at once. It must never report a sync
 * done before the data is on disk, nor skip a bad record. */
#ifndef QC_WAL_H
#define QC_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/raft.h"

typedef struct qc_wal qc_wal;

#define QC_WAL_SEGMENT_SIZE (64u << 20) /* default roll-over size: 64 MiB */
#define QC_WAL_SNAP_KEEP 2              /* snapshot files kept on disk */
#define QC_WAL_MAX_DATA (64u << 20)     /* largest entry accepted */
#define QC_WAL_MAX_SNAPSHOT (1u << 30)  /* largest snapshot: a whole store */

typedef struct qc_wal_options {
    uint64_t segment_size; /* a new segment once the current one passes it; 0: default */
    /* Makes fd durable: 0, or -1 with errno. NULL: fdatasync(). Tests inject
     * failures here; the agent leaves it NULL. */
    int (*sync)(int fd, void *arg);
    void *sync_arg;
} qc_wal_options;

/* What qc_wal_open() found. Owns its memory: release with
 * qc_wal_recovery_free(); a caller may take entries[i].data (set it NULL). */
typedef struct qc_wal_recovery {
    uint64_t snap_index, snap_term; /* newest valid snapshot; 0, 0 when none */
    uint8_t *snap_data;             /* malloc'd; NULL when none or empty */
    size_t snap_len;
    qc_entry *entries; /* every entry after snap_index, in order; data malloc'd */
    size_t n_entries;
    uint64_t torn_bytes; /* bytes of a torn tail cut from the last segment */
    char note[256];      /* what recovery cut or passed over; "" when nothing */
    char error[256];     /* why qc_wal_open() failed: file, offset and reason */
} qc_wal_recovery;

/* Opens (creating dir, dir/wal and dir/snap as needed) and recovers: cuts a
 * torn tail of the last segment (reported, never an error); QC_ECORRUPT for
 * a bad record elsewhere, a gap, an overlap or no valid snapshot among
 * several, QC_EIO (errno kept), QC_ENOMEM. rec may be NULL; otherwise it is
 * filled on success, holds only error on failure, and is the caller's to
 * free either way. *out is the caller's to qc_wal_close(). opt may be NULL. */
int qc_wal_open(const char *dir, const qc_wal_options *opt, qc_wal **out, qc_wal_recovery *rec);

/* Whether dir holds what qc_wal_open() creates (wal/ or snap/, even empty):
 * 1 yes, 0 neither, QC_ENOMEM, QC_EIO (errno kept). Creates nothing. */
int qc_wal_present(const char *dir);

/* Closes the files and frees w (NULL is fine). Does not sync. */
void qc_wal_close(qc_wal *w);

/* Frees what rec holds and zeroes it (NULL is fine). */
void qc_wal_recovery_free(qc_wal_recovery *rec);

/* Writes n entries (copied; the caller keeps its memory) without fsync.
 * Their indexes must run on from some i, snap_index < i <= last+1, else
 * QC_EINVAL. i <= last first drops every entry from i on, durably (raft's
 * conflict resolution). Rolling to a new segment fsyncs the finished one.
 * QC_EIO when a write failed now or before. */
int qc_wal_append(qc_wal *w, const qc_entry *entries, size_t n);

/* One fsync for everything appended since the last sync, plus the directory
 * when a segment was created. QC_EIO (errno kept) on failure, and from then
 * on every write refuses with QC_EIO until reopened: a failed fsync may have
 * dropped dirty pages, so retrying it would lie. */
int qc_wal_sync(qc_wal *w);

/* Durably drops every entry after index (snap_index <= index). Append does
 * this itself on a conflict; use it when an installed snapshot does not
 * match the log. QC_EINVAL, QC_EIO. */
int qc_wal_truncate(qc_wal *w, uint64_t index);

/* Durably writes snap/<index>-<term>.snap (temp file, fsync, rename, fsync
 * of the directory) from parts (borrowed, concatenated), keeping the newest
 * QC_WAL_SNAP_KEEP. index must not go below the current snapshot's. When
 * index is past the last entry the log continues at index+1; when the log
 * holds another entry at index (a leader's snapshot over a diverged log),
 * it is durably cut from index on first. QC_EINVAL, QC_ETOOBIG, QC_EIO
 * (w then refuses every write, as after a failed qc_wal_sync). */
int qc_wal_save_snapshot(qc_wal *w, uint64_t index, uint64_t term, const struct iovec *parts,
                         int n);

/* The first half of qc_wal_save_snapshot, for a background snapshot: writes
 * the file from parts (borrowed, concatenated) durably, but changes nothing
 * in w, so it may run in a forked child or on another thread while the loop
 * uses w. A failure removes the temp file (a crash leaves it for the next
 * qc_wal_open to remove) and leaves w usable: the caller may try again.
 * QC_EINVAL, QC_ETOOBIG, QC_EIO (errno kept). */
int qc_wal_write_snapshot(const qc_wal *w, uint64_t index, uint64_t term, const struct iovec *parts,
                          int n);
/* The second half, on the loop: the file qc_wal_write_snapshot wrote is the
 * newest snapshot (the log may now be compacted up to index; cut from index
 * on when it holds another entry there, as qc_wal_save_snapshot does); older
 * files are pruned. QC_EINVAL when index is below the current snapshot's. */
int qc_wal_add_snapshot(qc_wal *w, uint64_t index, uint64_t term);

/* A snapshot file mapped read-only: data/len are its data (after the
 * header, not checked against the CRC: for sending what this node wrote). */
typedef struct qc_wal_map {
    void *map;
    size_t map_len;
    const uint8_t *data;
    size_t len;
} qc_wal_map;
/* Maps snap/<index>-<term>.snap; QC_EIO, QC_ECORRUPT (header disagrees).
 * Release with qc_wal_unmap_snapshot (a zeroed map is fine). Deleting the
 * file does not end the mapping. */
int qc_wal_map_snapshot(const qc_wal *w, uint64_t index, uint64_t term, qc_wal_map *out);
void qc_wal_unmap_snapshot(qc_wal_map *m);

/* Drops the segments whose entries are all <= index, keeping the one that
 * holds index+1. index must be covered by a snapshot, else QC_EINVAL. Their
 * files (and the snapshots a save pruned) wait for qc_wal_empty_trash. */
int qc_wal_compact(qc_wal *w, uint64_t index);
/* Unlinks the files compactions and prunes dropped, holding the log's lock
 * only to take the list: deleting a 64 MiB segment took 40 to 150 ms, which
 * no write should wait for. Not fsynced: a file that comes back after a
 * crash is passed over at start and dropped again later. QC_EIO when an
 * unlink failed (the file stays, harmlessly). qc_wal_close empties it too. */
int qc_wal_empty_trash(qc_wal *w);

/* The first and last index the log answers for: first is past the snapshot
 * (first > last when no entry is held); last counts the snapshot. */
uint64_t qc_wal_first_index(const qc_wal *w);
uint64_t qc_wal_last_index(const qc_wal *w);
uint64_t qc_wal_snapshot_index(const qc_wal *w);

/* Seconds the fsyncs of the last qc_wal_sync() that had work took: for the
 * qcluster_fsync_duration_seconds histogram. */
double qc_wal_last_sync_seconds(const qc_wal *w);

/* Segment files on disk, for metrics and tests. */
size_t qc_wal_segment_count(const qc_wal *w);

/* The descriptor of snap/: the only one qc_wal_write_snapshot uses, for a
 * forked child that closes every other. */
int qc_wal_snapshot_dir_fd(const qc_wal *w);

#endif
