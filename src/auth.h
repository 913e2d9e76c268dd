/* Frame authentication for the cluster transport, on libsodium: the cluster
 * key derived from the shared secret, per-connection session keys from two
 * nonces, and the keyed BLAKE2b tags that seal frames (see wire.h for the
 * format). No hand-written crypto, no sockets, no state between calls. */
#ifndef QC_AUTH_H
#define QC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define QC_AUTH_KEY 32 /* cluster and session keys */

/* Who made a tag: part of every tag's input, so that a frame sealed for one
 * purpose never verifies as another. */
enum {
    QC_AUTH_DIR_CHALLENGE = 'C', /* the acceptor's CHALLENGE, under the cluster key */
    QC_AUTH_DIR_DIALER = 'D',    /* frames from the dialer, under the session key */
    QC_AUTH_DIR_ACCEPTOR = 'A',  /* frames from the acceptor (a JOIN answer), session key */
};

/* Initializes libsodium (idempotent); QC_EIO when it cannot. */
int qc_auth_init(void);
/* The cluster key of a secret of len bytes (len > 0): BLAKE2b-256 of the
 * secret, personalized for this protocol. */
void qc_auth_derive(const void *secret, size_t len, uint8_t key[QC_AUTH_KEY]);
/* The session key of one connection: BLAKE2b-256 keyed with the cluster key
 * over a label, the acceptor's challenge nonce and the dialer's nonce. */
void qc_auth_session(const uint8_t key[QC_AUTH_KEY], const uint8_t nonce_a[QC_WIRE_NONCE],
                     const uint8_t nonce_d[QC_WIRE_NONCE], uint8_t out[QC_AUTH_KEY]);
/* Fills out with n random bytes (randombytes_buf). */
void qc_auth_random(void *out, size_t n);
/* The tag of one frame (header and payload, len bytes): keyed BLAKE2b-256
 * over dir, seq (8 bytes, big-endian) and the frame. */
void qc_auth_tag(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, const uint8_t *frame,
                 size_t len, uint8_t tag[QC_WIRE_TAG]);
/* Seals the version-1 frame that starts at out->data[start] and runs to the
 * end of out: sets its version to QC_WIRE_VERSION_AUTH and appends its tag.
 * QC_ENOMEM (out unchanged but for the version byte) or 0. */
int qc_auth_seal(qc_buf *out, size_t start, const uint8_t key[QC_AUTH_KEY], uint8_t dir,
                 uint64_t seq);
/* Checks the tag that follows the len bytes of frame, in constant time: 0
 * when it is the tag of (dir, seq, frame) under key, else QC_ECORRUPT. */
int qc_auth_verify(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, const uint8_t *frame,
                   size_t len, const uint8_t *tag);
/* Zeroes n bytes of key material in a way the compiler keeps. */
void qc_auth_wipe(void *p, size_t n);

#endif
