/* yajl helpers shared by the API and the CLI: emitting Peers, strings that
 * may be NULL, raw JSON text (metadata) re-emitted as a real value, and KV
 * entries with base64 for bytes that are not text. Pure functions over a
 * yajl_gen or yajl_val; no I/O, no global state. */
#ifndef QC_JSON_H
#define QC_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "view.h"

/* Each emitter returns 0 or a QC_E... code (QC_ENOMEM, QC_EINVAL). */

/* A string, or null when s is NULL. */
int qc_json_str(yajl_gen g, const char *s);
/* "key": value pairs inside an open map. */
int qc_json_key_str(yajl_gen g, const char *key, const char *value);
int qc_json_key_int(yajl_gen g, const char *key, long long value);
int qc_json_key_bool(yajl_gen g, const char *key, int value);
/* Emits the key only; the caller emits the value next. */
int qc_json_key(yajl_gen g, const char *key);
/* Emits a parsed tree value as it is (numbers keep their text). */
int qc_json_val(yajl_gen g, yajl_val v);
/* Parses text and emits it; text that is not a JSON object becomes {}. */
int qc_json_raw_object(yajl_gen g, const char *text);
/* A Peer {identifier, host, port, metadata}; with_state adds role, up, voter
 * and priority. */
int qc_json_peer(yajl_gen g, const qc_peer_info *p, int with_state);

/* A KV entry {"key", "value", "revision"}. When the key or the value is not
 * text (qc_json_is_text), both are sent base64 and "encoding": "base64" is
 * added, so a reader decodes the two fields or neither. */
int qc_json_kv(yajl_gen g, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
               uint64_t revision);

/* 1 when p[0..n) is valid UTF-8 (no overlong forms, surrogates or code points
 * past U+10FFFF) without NUL, so it survives JSON and C strings alike. */
int qc_json_is_text(const uint8_t *p, size_t n);
/* 1 when p[0..n) is text without control characters (C0, DEL, C1): safe to
 * print on one line of a terminal or a tab-separated listing. */
int qc_json_is_printable(const uint8_t *p, size_t n);

/* Standard base64 with padding. *out is malloc'd and NUL-terminated (the
 * caller frees it), *olen its length. 0 or QC_ENOMEM. */
int qc_json_b64_encode(const uint8_t *p, size_t n, char **out, size_t *olen);
/* Decodes base64 (padding optional). *out is malloc'd (the caller frees it)
 * and NUL-terminated past *olen. 0, QC_EINVAL (not base64) or QC_ENOMEM. */
int qc_json_b64_decode(const char *s, size_t n, uint8_t **out, size_t *olen);

/* Compact JSON text of a tree value; *out is malloc'd, owned by the caller. */
int qc_json_val_text(yajl_val v, char **out);
/* What g has generated, as a malloc'd NUL-terminated string (its length in
 * *len when len is set), or NULL when out of memory. */
char *qc_json_gen_text(yajl_gen g, size_t *len);

/* Tree lookups of one key in an object; NULL when absent or of another type. */
const char *qc_json_get_str(yajl_val obj, const char *key);
yajl_val qc_json_get(yajl_val obj, const char *key);

#endif
