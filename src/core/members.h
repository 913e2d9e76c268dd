/* The replicated member list (identifier, address, role, priority, metadata
 * of every member) as it travels in Raft CONFIG entries, plus the JSON
 * payloads of the MEMBER and JOIN frames. Pure code: no I/O, no globals, no
 * knowledge of the agent; every decoder takes arbitrary bytes. */
#ifndef QC_MEMBERS_H
#define QC_MEMBERS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/raft.h"
#include "core/wire.h"

/* What a node asked to be. A witness votes but never leads; a learner
 * receives the log and neither votes nor leads. */
enum { QC_MROLE_VOTER = 0, QC_MROLE_WITNESS = 1, QC_MROLE_LEARNER = 2 };

#define QC_MEMBER_ID_MAX 255             /* identifier bytes */
#define QC_MEMBER_HOST_MAX 255           /* host bytes */
#define QC_MEMBER_PRIORITY_MAX 1000000   /* as lua/config.lua allows */
#define QC_MEMBER_META_MAX (64u * 1024u) /* compact metadata text bytes */
#define QC_MEMBER_META_DEPTH 32          /* nesting, the metadata object being 1 */

typedef struct qc_member_rec {
    char *identifier; /* owned; 1..QC_MEMBER_ID_MAX bytes */
    char *host;       /* owned; the cluster address */
    int port;         /* 1..65535 */
    int role;         /* QC_MROLE_...: what the node asked to be */
    int priority;     /* 0 never leads; higher preferred */
    char *metadata;   /* owned JSON object text; never NULL after decode */
    int voting;       /* a voter now (voters and witnesses being caught up are not yet) */
} qc_member_rec;

/* A member list in CONFIG order. Owns its records; {NULL, 0} is empty. */
typedef struct qc_members {
    qc_member_rec *v;
    size_t n;
} qc_members;

/* "voter", "witness", "learner"; "?" for anything else. Inline so that the
 * config loader needs no link to members.c. */
static inline const char *qc_member_role_name(int role)
{
    static const char *const names[] = {"voter", "witness", "learner"};
    return role >= 0 && role <= QC_MROLE_LEARNER ? names[role] : "?";
}

/* QC_MROLE_... of a role name; -1 when unknown (or NULL). */
static inline int qc_member_role_parse(const char *name)
{
    for (int r = QC_MROLE_VOTER; name && r <= QC_MROLE_LEARNER; r++)
        if (strcmp(name, qc_member_role_name(r)) == 0) return r;
    return -1;
}

/* The core's flags of a member: QC_MEMBER_VOTER when voting, QC_MEMBER_NO_LEAD
 * when a witness, a learner or priority 0. */
uint8_t qc_member_flags(const qc_member_rec *m);

/* 0 when m may be a member: identifier 1..255 bytes of UTF-8 with a non-zero
 * qc_hash_id, host 1..255 bytes, port 1..65535, a known role, priority
 * 0..QC_MEMBER_PRIORITY_MAX, a learner not voting, metadata NULL or a JSON
 * object (at most QC_MEMBER_META_DEPTH deep and QC_MEMBER_META_MAX bytes
 * compact). QC_EINVAL otherwise (QC_ENOMEM if parsing metadata ran out). */
int qc_member_rec_validate(const qc_member_rec *m);
/* Frees the strings of m (not m itself) and zeroes it. */
void qc_member_rec_free(qc_member_rec *m);
/* Deep copy of src into *dst (caller frees with qc_member_rec_free); metadata
 * becomes its compact text ("{}" when NULL). QC_EINVAL unless src validates;
 * *dst is zeroed on failure. */
int qc_member_rec_copy(const qc_member_rec *src, qc_member_rec *dst);

/* ---- the list ---------------------------------------------------------- */

/* Appends the whole CONFIG entry data to out: the core's list
 * (qc_raft_conf_write: qc_hash_id(identifier) and qc_member_flags, in list
 * order) then a compact JSON array of records {"identifier", "host", "port",
 * "role", "priority", "metadata", "voting"}. QC_EINVAL if a record does not
 * validate, an identifier (or its id) repeats, or there are more than
 * QC_RAFT_MAX_MEMBERS members or QC_RAFT_MAX_VOTERS voting; out is left as
 * it was on any failure. */
int qc_members_encode(const qc_members *ms, qc_buf *out);
/* Decodes CONFIG entry data into *out (caller frees with qc_members_free;
 * empty on failure). QC_EINVAL when malformed, when a record does not
 * validate or repeats, or when the core's list and the JSON disagree (same
 * ids and flags in the same order); QC_ENOMEM. Unknown record keys are
 * ignored; role, priority, metadata and voting default to voter, 1, {} and
 * false. */
int qc_members_decode(const uint8_t *data, size_t len, qc_members *out);
/* Frees every record and the array; ms is empty afterwards. */
void qc_members_free(qc_members *ms);
/* Deep copy (dst is overwritten, not freed first; empty on failure). */
int qc_members_copy(const qc_members *src, qc_members *dst);
/* Index of the member named identifier, or -1. */
int qc_members_find(const qc_members *ms, const char *identifier);
/* Index of the member whose qc_hash_id is id, or -1. */
int qc_members_find_id(const qc_members *ms, uint64_t id);
/* Adds a deep copy of rec at the end, or replaces the member of that
 * identifier in place. QC_EINVAL if rec does not validate or its id is
 * another member's; QC_ETOOBIG past QC_RAFT_MAX_MEMBERS members or
 * QC_RAFT_MAX_VOTERS voting. ms is unchanged on failure. */
int qc_members_put(qc_members *ms, const qc_member_rec *rec);
/* Removes (and frees) the member named identifier, keeping the order of
 * the others; QC_ENOTFOUND when there is none. */
int qc_members_remove(qc_members *ms, const char *identifier);

/* ---- MEMBER frames: a member asks the leader for a change ------------- */

enum { QC_MEMBER_OP_JOIN = 1, QC_MEMBER_OP_LEAVE = 2, QC_MEMBER_OP_UPDATE = 3 };

typedef struct qc_member_request {
    int op;            /* QC_MEMBER_OP_... */
    uint64_t id;       /* the asker's request id, to match the outcome */
    qc_member_rec rec; /* leave: only identifier is set (metadata "{}") */
} qc_member_request;

/* Appends {"op": "join"|"leave"|"update", "member": {...}, "id": N} to out
 * (for leave, member holds the identifier alone). QC_EINVAL for an unknown
 * op or a record that does not validate (leave: a bad identifier). */
int qc_member_request_encode(const qc_member_request *req, qc_buf *out);
/* Decodes a MEMBER payload into *out (caller frees with
 * qc_member_request_free; zeroed on failure). QC_EINVAL when malformed. */
int qc_member_request_decode(const uint8_t *data, size_t len, qc_member_request *out);
void qc_member_request_free(qc_member_request *req);

/* ---- JOIN frames ------------------------------------------------------- */

/* The request of a joining node is its record alone (the list's object
 * shape): appends it to out; QC_EINVAL unless rec validates. */
int qc_member_rec_encode(const qc_member_rec *rec, qc_buf *out);
/* Decodes one record (caller frees with qc_member_rec_free; zeroed on
 * failure). QC_EINVAL when malformed or when it does not validate. */
int qc_member_rec_decode(const uint8_t *data, size_t len, qc_member_rec *out);

/* The answer a member sends back on the joiner's connection. */
typedef struct qc_join_answer {
    int ok;       /* the joiner is in (its CONFIG entry committed) */
    int retry;    /* worth asking again (no leader yet, a change in progress) */
    char *error;  /* owned; NULL when none */
    char *leader; /* owned "host:port" of the leader's cluster address; NULL if unknown */
    /* With ok: the members as the leader knows them, so that the joiner
     * knows who will send it the log (owned; may be empty). */
    qc_members members;
} qc_join_answer;

/* Appends {"ok", "error", "leader", "retry"} (NULL strings as null).
 * QC_EINVAL for text that is not UTF-8 or a leader that is not host:port. */
int qc_join_answer_encode(const qc_join_answer *a, qc_buf *out);
/* Decodes a JOIN answer (caller frees with qc_join_answer_free; zeroed on
 * failure). "ok" is required; the others may be absent or null. */
int qc_join_answer_decode(const uint8_t *data, size_t len, qc_join_answer *out);
void qc_join_answer_free(qc_join_answer *a);

/* Splits "host:port" ("[v6]:port" too, brackets dropped) into host (room
 * for hostlen bytes with the NUL) and *port. QC_EINVAL when malformed, the
 * port is not 1..65535 or the host does not fit. */
int qc_member_split_addr(const char *addr, char *host, size_t hostlen, int *port);

#endif
