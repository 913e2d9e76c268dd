/* Cluster transport security on libsodium: keyed BLAKE2b
 * (crypto_generichash) for key derivation and challenge tags, crypto_kx
 * for the ephemeral exchange, XChaCha20-Poly1305-IETF for frames. It must
 * hold no state, log nothing and never implement a primitive. */
#include "net/auth.h"

#include <sodium.h>
#include <string.h>

#include "base/common.h"

/* crypto_generichash_blake2b's personalization is exactly 16 bytes. */
static const uint8_t personal[crypto_generichash_blake2b_PERSONALBYTES] = "qcluster-net-v1";
static const uint8_t label_d[16] = "qcluster3 dialer";
static const uint8_t label_a[16] = "qcluster3 accept";

_Static_assert(QC_WIRE_KX == crypto_kx_PUBLICKEYBYTES && QC_WIRE_KX == crypto_kx_SECRETKEYBYTES,
               "kx key size");
_Static_assert(QC_AUTH_SHARED == 2 * crypto_kx_SESSIONKEYBYTES, "kx session key size");
_Static_assert(QC_WIRE_MAC == crypto_aead_xchacha20poly1305_ietf_ABYTES, "AEAD MAC size");
_Static_assert(QC_AUTH_KEY == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "AEAD key size");

int qc_auth_init(void) { return sodium_init() < 0 ? QC_EIO : QC_OK; }

void qc_auth_derive(const void *secret, size_t len, uint8_t key[QC_AUTH_KEY])
{
    (void)crypto_generichash_blake2b_salt_personal(key, QC_AUTH_KEY, secret, len, NULL, 0, NULL,
                                                   personal);
}

void qc_auth_random(void *out, size_t n) { randombytes_buf(out, n); }

/* dir then seq, big-endian: the first 9 bytes of tags' input and nonces. */
static void put_dir_seq(uint8_t out[9], uint8_t dir, uint64_t seq)
{
    out[0] = dir;
    for (int i = 0; i < 8; i++) out[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

void qc_auth_tag(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, const uint8_t *data,
                 size_t len, uint8_t tag[QC_WIRE_TAG])
{
    uint8_t pre[9];
    put_dir_seq(pre, dir, seq);
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, key, QC_AUTH_KEY, QC_WIRE_TAG);
    (void)crypto_generichash_update(&st, pre, sizeof pre);
    (void)crypto_generichash_update(&st, data, len);
    (void)crypto_generichash_final(&st, tag, QC_WIRE_TAG);
    sodium_memzero(&st, sizeof st);
}

int qc_auth_check_tag(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq,
                      const uint8_t *data, size_t len, const uint8_t tag[QC_WIRE_TAG])
{
    uint8_t want[QC_WIRE_TAG];
    qc_auth_tag(key, dir, seq, data, len, want);
    int bad = crypto_verify_32(want, tag);
    sodium_memzero(want, sizeof want);
    return bad ? QC_ECORRUPT : QC_OK;
}

void qc_auth_kx_keypair(qc_auth_kx *kx) { (void)crypto_kx_keypair(kx->pk, kx->sk); }

int qc_auth_kx_shared(int dialer, const qc_auth_kx *kx, const uint8_t peer_pk[QC_WIRE_KX],
                      uint8_t shared[QC_AUTH_SHARED])
{
    uint8_t *d = shared, *a = shared + crypto_kx_SESSIONKEYBYTES;
    /* the client's tx is the server's rx: d and a come out alike on both sides */
    int rc = dialer ? crypto_kx_client_session_keys(a, d, kx->pk, kx->sk, peer_pk)
                    : crypto_kx_server_session_keys(d, a, kx->pk, kx->sk, peer_pk);
    if (rc) sodium_memzero(shared, QC_AUTH_SHARED);
    return rc ? QC_ECORRUPT : QC_OK;
}

static void mix(const uint8_t key[QC_AUTH_KEY], const uint8_t label[16], const uint8_t *raw,
                uint8_t out[QC_AUTH_KEY])
{
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, key, QC_AUTH_KEY, QC_AUTH_KEY);
    (void)crypto_generichash_update(&st, label, 16);
    (void)crypto_generichash_update(&st, raw, crypto_kx_SESSIONKEYBYTES);
    (void)crypto_generichash_final(&st, out, QC_AUTH_KEY);
    sodium_memzero(&st, sizeof st);
}

void qc_auth_session_keys(const uint8_t key[QC_AUTH_KEY], const uint8_t shared[QC_AUTH_SHARED],
                          uint8_t key_d[QC_AUTH_KEY], uint8_t key_a[QC_AUTH_KEY])
{
    mix(key, label_d, shared, key_d);
    mix(key, label_a, shared + crypto_kx_SESSIONKEYBYTES, key_a);
}

/* The AEAD nonce of (dir, seq): unique per key, as each direction of each
 * connection has its own key and counts its frames. */
static void nonce_of(uint8_t dir, uint64_t seq,
                     uint8_t npub[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES])
{
    memset(npub, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    put_dir_seq(npub, dir, seq);
}

int qc_auth_seal(qc_buf *out, size_t start, size_t ad, const uint8_t key[QC_AUTH_KEY], uint8_t dir,
                 uint64_t seq)
{
    if (start > out->len || out->len - start < ad || ad < QC_WIRE_HEADER) return QC_EINVAL;
    int rc = qc_buf_reserve(out, QC_WIRE_MAC);
    if (rc) return rc;
    uint8_t *f = out->data + start;
    f[2] = QC_WIRE_VERSION_SEALED;
    memset(f + 8, 0, 4); /* a CRC of the plaintext would tell of it: the MAC checks instead */
    uint8_t npub[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    nonce_of(dir, seq, npub);
    size_t mlen = out->len - start - ad;
    (void)crypto_aead_xchacha20poly1305_ietf_encrypt_detached(f + ad, out->data + out->len, NULL,
                                                              f + ad, mlen, f, ad, NULL, npub, key);
    out->len += QC_WIRE_MAC;
    return QC_OK;
}

int qc_auth_open(const uint8_t key[QC_AUTH_KEY], uint8_t dir, uint64_t seq, size_t ad,
                 uint8_t *frame, size_t len, const uint8_t mac[QC_WIRE_MAC])
{
    if (len < ad) return QC_ECORRUPT;
    uint8_t npub[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    nonce_of(dir, seq, npub);
    /* libsodium checks the MAC before it decrypts: on failure frame is intact */
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
        frame + ad, NULL, frame + ad, len - ad, mac, frame, ad, npub, key);
    return rc ? QC_ECORRUPT : QC_OK;
}

void qc_auth_wipe(void *p, size_t n) { sodium_memzero(p, n); }
