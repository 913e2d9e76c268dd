/* The cluster wire format: frames of header (magic "QC", version, type,
 * payload length, CRC-32C of the payload) plus payload, and the codecs of
 * the raft messages and the hello that opens every connection. Pure code:
 * no sockets, no allocation beyond what the caller frees.
 *
 * Without a secret every frame is version 1: header and payload, nothing
 * more. With a secret (src/net/auth.h) every frame after the handshake is
 * version 3, sealed: the same 12-byte header (version byte 3, CRC field 0)
 * in clear as associated data, the payload encrypted with
 * XChaCha20-Poly1305-IETF under a key of the connection and the direction
 * and a sequence number both sides count (never sent) as nonce, then a
 * QC_WIRE_MAC-byte MAC. A connection opens so:
 *   acceptor -> dialer: CHALLENGE (version 3), payload its ephemeral X25519
 *                       public key pk_a, then one QC_WIRE_TAG-byte tag of
 *                       pk_a per cluster key it takes (the current secret's,
 *                       then the previous one's): keyed BLAKE2b, 'C', seq 0
 *   dialer -> acceptor: AUTH, payload its own ephemeral public key pk_d, in
 *                       clear but sealed whole (all of it associated data,
 *                       nothing encrypted) as direction 'D' seq 0 under the
 *                       session key of the dialer's frames: crypto_kx of the
 *                       two key pairs, mixed with the cluster key whose tag
 *                       the dialer verified (auth.h); the acceptor finds
 *                       which of its keys by trying each. Then the dialer's
 *                       frames (HELLO, RAFT, ... or one JOIN), seq 1, 2, ...
 *   acceptor -> dialer: the JOIN answer, if any, under the acceptor's
 *                       session key, direction 'A' seq 0.
 * Both sides wipe their ephemeral secret keys as soon as the session keys
 * are made. A frame that does not open (other secret, tampered, replayed,
 * reordered, or from another connection) closes the connection. Version 2
 * (authenticated frames in clear, before encryption) is recognized only to
 * say so. Versions never mix: a node with a secret and one without never
 * talk. */
#ifndef QC_WIRE_H
#define QC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/common.h" /* qc_buf */
#include "core/raft.h"

#define QC_WIRE_MAGIC0 'Q'
#define QC_WIRE_MAGIC1 'C'
#define QC_WIRE_VERSION 1
#define QC_WIRE_VERSION_AUTH 2   /* older nodes' tagged frames: recognized, refused */
#define QC_WIRE_VERSION_SEALED 3 /* an encrypted frame followed by its MAC */
#define QC_WIRE_HEADER 12
#define QC_WIRE_TAG 32                 /* bytes of a CHALLENGE's tag (a version-2 frame's) */
#define QC_WIRE_MAC 16                 /* bytes of MAC after a version-3 frame */
#define QC_WIRE_KX 32                  /* an ephemeral X25519 public key */
#define QC_WIRE_MAX_PAYLOAD (8u << 20) /* 8 MiB: the frame size limit */
/* A raft message larger than QC_WIRE_PART_MAX (a big snapshot, say) travels
 * as a run of PART frames of at most that much of its payload each, the last
 * one flagged; the receiver joins them, up to QC_WIRE_MAX_MESSAGE. */
#define QC_WIRE_PART_MAX (1u << 20)
#define QC_WIRE_MAX_MESSAGE (1u << 30)

/* FORWARD: a follower hands the leader an encoded KV command to propose;
 * the follower learns the outcome by applying the committed entry. */
/* READ_INDEX: a follower asks the leader for a read point and gets it back,
 * for a linearizable read served by the follower. */
/* PART: one byte (1 on the last part, else 0) and a piece of a raft
 * message's payload. MEMBER: a member asks the leader for a membership
 * change (the agent's payload). JOIN: a node that is not a member yet asks
 * a member to let it in, on a connection of its own; the member answers
 * with one JOIN frame on that same connection. CHALLENGE and AUTH open a
 * connection with a secret (above); they exist in versions 2 and 3 only. HEALTH:
 * a node tells a peer its health (README "Health checks"), so that every
 * node knows every member's health without a log entry per flap. */
enum {
    QC_FRAME_HELLO = 1,
    QC_FRAME_RAFT = 2,
    QC_FRAME_FORWARD = 3,
    QC_FRAME_READ_INDEX = 4,
    QC_FRAME_PART = 5,
    QC_FRAME_MEMBER = 6,
    QC_FRAME_JOIN = 7,
    QC_FRAME_CHALLENGE = 8,
    QC_FRAME_AUTH = 9,
    QC_FRAME_HEALTH = 10, /* both versions: after AUTH, so the enum could not stay dense */
};

typedef struct qc_hello {
    char *identifier; /* owned */
    char *metadata;   /* owned; a JSON object text */
} qc_hello;

/* The payload size of m's encoding; QC_ETOOBIG over QC_WIRE_MAX_MESSAGE. */
int qc_wire_msg_size(const qc_msg *m, size_t *size);
/* Appends one whole frame (header and payload) to out; QC_ETOOBIG when the
 * payload is over QC_WIRE_MAX_PAYLOAD. */
int qc_wire_encode_msg(const qc_msg *m, qc_buf *out);
/* Appends m's payload alone (no header), to be sent as PART frames. */
int qc_wire_encode_msg_payload(const qc_msg *m, qc_buf *out);
/* Appends a PART frame carrying len (at most QC_WIRE_PART_MAX) bytes. */
int qc_wire_encode_part(const uint8_t *data, size_t len, int last, qc_buf *out);
int qc_wire_encode_hello(const char *identifier, const char *metadata, qc_buf *out);
/* The payload of a READ_INDEX frame: a follower asks (answer 0) with its
 * request id; the leader answers (answer 1) ok and the index to wait for. */
typedef struct qc_read_index {
    uint8_t answer, ok;
    uint64_t id, index;
} qc_read_index;
#define QC_WIRE_READ_INDEX_LEN 18

void qc_wire_pack_read_index(const qc_read_index *ri, uint8_t out[QC_WIRE_READ_INDEX_LEN]);
/* QC_EINVAL unless payload is exactly one well-formed READ_INDEX. */
int qc_wire_unpack_read_index(const uint8_t *payload, size_t len, qc_read_index *out);

/* The payload of a HEALTH frame: the sender's health and its checks. seq
 * grows with every frame a sender sends (a receiver ignores one not newer
 * than the last it took). Encoded big-endian as seq (8 bytes), healthy (0
 * or 1), the number of checks (at most QC_WIRE_HEALTH_CHECKS), then per
 * check the name's length (1..QC_WIRE_HEALTH_NAME), the name ([A-Za-z0-9_.-],
 * as the config allows) and passing (0 or 1): at most about 4 KiB. */
#define QC_WIRE_HEALTH_CHECKS 64 /* as lua/config.lua allows */
#define QC_WIRE_HEALTH_NAME 64
typedef struct qc_wire_health_check {
    char name[QC_WIRE_HEALTH_NAME + 1];
    uint8_t passing;
} qc_wire_health_check;
typedef struct qc_wire_health {
    uint64_t seq;
    uint8_t healthy;
    uint8_t n_checks;
    qc_wire_health_check checks[QC_WIRE_HEALTH_CHECKS];
} qc_wire_health;

/* Appends h's payload (no header) to out. QC_EINVAL when h breaks a rule
 * above (a bad name, a repeated one, too many checks); out is unchanged. */
int qc_wire_encode_health(const qc_wire_health *h, qc_buf *out);
/* QC_EINVAL unless payload is exactly one well-formed HEALTH payload. */
int qc_wire_decode_health(const uint8_t *payload, size_t len, qc_wire_health *out);

/* Appends a frame of type (FORWARD, READ_INDEX) carrying payload as it is. */
int qc_wire_encode_frame(uint8_t type, const void *payload, size_t len, qc_buf *out);

/* Parses the header in buf[0..QC_WIRE_HEADER) of version 1. 0 and *type,
 * *payload_len when valid (types HELLO to JOIN, and HEALTH); QC_EINVAL (bad
 * magic/version/type), QC_ETOOBIG (length). */
int qc_wire_header(const uint8_t *buf, uint8_t *type, uint32_t *payload_len);
/* As qc_wire_header, for any version: *version is QC_WIRE_VERSION (types
 * HELLO to JOIN, and HEALTH), QC_WIRE_VERSION_AUTH or QC_WIRE_VERSION_SEALED
 * (HELLO to HEALTH). The tag or MAC after the payload is not part of
 * *payload_len. */
int qc_wire_header_v(const uint8_t *buf, uint8_t *version, uint8_t *type, uint32_t *payload_len);
/* Checks the payload's CRC against the header; 0 or QC_ECORRUPT. */
int qc_wire_check(const uint8_t *header, const uint8_t *payload, uint32_t len);

/* Decodes a payload. The message's entries (and their data) are malloc'd:
 * release with qc_wire_msg_free(). QC_EINVAL on any malformed input. */
int qc_wire_decode_msg(const uint8_t *payload, uint32_t len, qc_msg *out);
void qc_wire_msg_free(qc_msg *m);
int qc_wire_decode_hello(const uint8_t *payload, uint32_t len, qc_hello *out);
void qc_wire_hello_free(qc_hello *h);

uint32_t qc_crc32c(uint32_t crc, const void *data, size_t len);

#endif
