/* Durable state in data_dir: the hard state (term, vote, commit), saved
 * in place into the older of two slots with one fdatasync (the file is
 * written whole, through a rename, only the first time), and a lock that
 * keeps two agents off one data_dir. It must never report a write done
 * before it is on disk. */
#ifndef QC_STORE_H
#define QC_STORE_H

#include "core/raft.h"

typedef struct qc_store qc_store;

/* Creates dir (and parents) if needed, takes its lock. QC_EBUSY when another
 * process holds it, QC_EIO otherwise (errno tells). */
int qc_store_open(const char *dir, qc_store **out);
void qc_store_close(qc_store *s);
/* Reads the hard state, the newest valid slot: 0 and *hs, QC_ENOTFOUND
 * when fresh, QC_ECORRUPT when no slot passes its check (never silently
 * reset), QC_EIO when it cannot be read or made durable (it may be in the
 * page cache only, after a crash before a save's fdatasync). Saves go in
 * place only after a load found the two-slot file. */
int qc_store_load(qc_store *s, qc_hard_state *hs);
/* Durably replaces the hard state; 0 once it is on disk, else QC_EIO. A
 * save torn by a crash leaves the state before it. */
int qc_store_save(qc_store *s, const qc_hard_state *hs);
/* Path of the data directory (owned by the store). */
const char *qc_store_dir(const qc_store *s);

#endif
