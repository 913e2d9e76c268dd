/* Cluster transport security on libsodium: the cluster keys derived from
 * the shared secrets, the challenge tags, the ephemeral X25519 key exchange
 * of each connection (crypto_kx) mixed with a cluster key into its session
 * keys, and the XChaCha20-Poly1305-IETF AEAD that seals frames (see wire.h
 * for the format). No hand-written crypto, no sockets, no state between
 * calls. */
#ifndef QC_AUTH_H
#define QC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "core/wire.h"

#define QC_AUTH_KEY 32    /* cluster and session keys */
#define QC_AUTH_SHARED 64 /* what a key exchange yields: two raw keys */

/* Who made a tag or a sealed frame: part of every tag's input and of every
 * AEAD nonce, so that one made for one purpose never verifies as another. */
enum {
    QC_AUTH_DIR_CHALLENGE = 'C', /* the acceptor's CHALLENGE tags, under a cluster key */
    QC_AUTH_DIR_DIALER = 'D',    /* frames from the dialer, under its session key */
    QC_AUTH_DIR_ACCEPTOR = 'A',  /* frames from the acceptor (a JOIN answer) */
};

/* One side's ephemeral X25519 key pair for one connection. */
typedef struct qc_auth_kx {
    uint8_t pk[QC_WIRE_KX];
    uint8_t sk[QC_WIRE_KX];
} qc_auth_kx;

/* Initializes libsodium (idempotent); QC_EIO when it cannot. */
int qc_auth_init(void);
/* The cluster key of a secret of len bytes (len > 0): BLAKE2b-256 of the
 * secret, personalized for this protocol. */
void qc_auth_derive(const void *secret, size_t len, uint8_t key[QC_AUTH_KEY]);
/* Fills out with n random bytes (randombytes_buf). */
void qc_auth_random(void *out, size_t n);
/* A keyed BLAKE2b-256 tag over dir, seq (8 bytes, big-endian) and len bytes
 * of data: the CHALLENGE's proof that its key pair comes from a holder of
 * the cluster key. */
void qc_auth_tag(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, const uint8_t *data,
                 size_t len, uint8_t tag[QC_WIRE_TAG]);
/* 0 when tag is the tag of (dir, seq, data) under key (constant time),
 * else QC_ECORRUPT. */
int qc_auth_check_tag(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq,
                      const uint8_t *data, size_t len, const uint8_t tag[QC_WIRE_TAG]);
/* A fresh ephemeral key pair (crypto_kx_keypair). */
void qc_auth_kx_keypair(qc_auth_kx *kx);
/* The X25519 exchange of one connection (crypto_kx_client_session_keys for
 * the dialer, crypto_kx_server_session_keys for the acceptor): shared gets
 * the raw key of the dialer's frames, then that of the acceptor's, alike
 * on both sides. QC_ECORRUPT for a bad peer key; the caller wipes kx. */
int qc_auth_kx_shared(int dialer, const qc_auth_kx *kx, const uint8_t peer_pk[QC_WIRE_KX],
                      uint8_t shared[QC_AUTH_SHARED]);
/* The session keys of a connection, from its exchange and a cluster key:
 * each BLAKE2b-256 keyed with the cluster key over a label and one raw key
 * (the pre-shared key mixed into the Diffie-Hellman result, as WireGuard
 * mixes its PSK), so that they need both the secret and the ephemeral keys. */
void qc_auth_session_keys(const uint8_t key[QC_AUTH_KEY], const uint8_t shared[QC_AUTH_SHARED],
                          uint8_t key_d[QC_AUTH_KEY], uint8_t key_a[QC_AUTH_KEY]);
/* Seals the version-1 frame that starts at out->data[start] and runs to the
 * end of out: sets its version to QC_WIRE_VERSION_SEALED and its CRC field
 * to 0, encrypts what follows its first ad bytes (QC_WIRE_HEADER: the
 * payload; the whole frame: nothing, for AUTH) in place with
 * XChaCha20-Poly1305-IETF, the first ad bytes as associated data and nonce
 * (dir, seq), and appends the QC_WIRE_MAC-byte MAC. QC_ENOMEM (out
 * unchanged but for the version and CRC) or 0. */
int qc_auth_seal(qc_buf *out, size_t start, size_t ad, const uint8_t key[QC_AUTH_KEY], uint8_t dir,
                 uint64_t seq);
/* Opens a sealed frame of len bytes (header and payload) at frame, its MAC
 * after it: 0 and the payload decrypted in place when it verifies as
 * sealed with (key, dir, seq, ad), else QC_ECORRUPT and frame unchanged. */
int qc_auth_open(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, size_t ad,
                 uint8_t *frame, size_t len, const uint8_t mac[QC_WIRE_MAC]);
/* Zeroes n bytes of key material in a way the compiler keeps. */
void qc_auth_wipe(void *p, size_t n);

#endif
