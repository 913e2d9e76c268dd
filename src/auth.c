/* Frame authentication on libsodium: key derivation, nonces and frame tags
 * with keyed BLAKE2b (crypto_generichash), compared with crypto_verify_32.
 * It must hold no state, log nothing and never implement a primitive. */
#include "auth.h"

#include <sodium.h>
#include <string.h>

#include "common.h"

/* crypto_generichash_blake2b's personalization is exactly 16 bytes. */
static const uint8_t personal[crypto_generichash_blake2b_PERSONALBYTES] = "qcluster-net-v1";
static const uint8_t session_label[16] = "qcluster session";

int qc_auth_init(void) { return sodium_init() < 0 ? QC_EIO : QC_OK; }

void qc_auth_derive(const void *secret, size_t len, uint8_t key[QC_AUTH_KEY])
{
    (void)crypto_generichash_blake2b_salt_personal(key, QC_AUTH_KEY, secret, len, NULL, 0, NULL,
                                                   personal);
}

void qc_auth_session(const uint8_t key[QC_AUTH_KEY], const uint8_t nonce_a[QC_WIRE_NONCE],
                     const uint8_t nonce_d[QC_WIRE_NONCE], uint8_t out[QC_AUTH_KEY])
{
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, key, QC_AUTH_KEY, QC_AUTH_KEY);
    (void)crypto_generichash_update(&st, session_label, sizeof session_label);
    (void)crypto_generichash_update(&st, nonce_a, QC_WIRE_NONCE);
    (void)crypto_generichash_update(&st, nonce_d, QC_WIRE_NONCE);
    (void)crypto_generichash_final(&st, out, QC_AUTH_KEY);
    sodium_memzero(&st, sizeof st);
}

void qc_auth_random(void *out, size_t n) { randombytes_buf(out, n); }

void qc_auth_tag(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, const uint8_t *frame,
                 size_t len, uint8_t tag[QC_WIRE_TAG])
{
    uint8_t pre[9];
    pre[0] = dir;
    for (int i = 0; i < 8; i++) pre[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, key, QC_AUTH_KEY, QC_WIRE_TAG);
    (void)crypto_generichash_update(&st, pre, sizeof pre);
    (void)crypto_generichash_update(&st, frame, len);
    (void)crypto_generichash_final(&st, tag, QC_WIRE_TAG);
    sodium_memzero(&st, sizeof st);
}

int qc_auth_seal(qc_buf *out, size_t start, const uint8_t key[QC_AUTH_KEY], uint8_t dir,
                 uint64_t seq)
{
    if (start > out->len || out->len - start < QC_WIRE_HEADER) return QC_EINVAL;
    int rc = qc_buf_reserve(out, QC_WIRE_TAG);
    if (rc) return rc;
    out->data[start + 2] = QC_WIRE_VERSION_AUTH;
    qc_auth_tag(key, dir, seq, out->data + start, out->len - start, out->data + out->len);
    out->len += QC_WIRE_TAG;
    return QC_OK;
}

int qc_auth_verify(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, const uint8_t *frame,
                   size_t len, const uint8_t *tag)
{
    uint8_t want[QC_WIRE_TAG];
    qc_auth_tag(key, dir, seq, frame, len, want);
    int bad = crypto_verify_32(want, tag);
    sodium_memzero(want, sizeof want);
    return bad ? QC_ECORRUPT : QC_OK;
}

void qc_auth_wipe(void *p, size_t n) { sodium_memzero(p, n); }
