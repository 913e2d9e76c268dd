/* yajl helpers shared by the API and the CLI: emitting Peers, strings that
 * may be NULL, raw JSON text (metadata) re-emitted as a real value, and KV
 * entries with base64 for bytes that are not text; the one strict UTF-8
 * check, on bytes and on JSON text before it is parsed. Pure functions over
 * a yajl_gen or yajl_val; no I/O, no global state. */
#ifndef QC_JSON_H
#define QC_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/* Each emitter returns 0 or a QC_E... code (QC_ENOMEM, QC_EINVAL). */

/* A yajl_gen status as one of those. */
int qc_json_gen_rc(yajl_gen_status st);

/* A string, or null when s is NULL. Bytes that are not UTF-8 go out as
 * U+FFFD each, so nothing emitted here is ever invalid UTF-8. */
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

/* A KV entry {"key", "value", "revision"}. When the key or the value is not
 * text (qc_json_is_text), both are sent base64 and "encoding": "base64" is
 * added, so a reader decodes the two fields or neither. */
int qc_json_kv(yajl_gen g, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
               uint64_t revision);

/* 1 when p[0..n) is UTF-8 as RFC 3629 has it: no overlong forms, no
 * surrogates (U+D800..DFFF), nothing past U+10FFFF, no sequence cut short.
 * NUL is allowed (JSON writes it \u0000). Every check below is this one. */
int qc_json_is_utf8(const uint8_t *p, size_t n);
/* 1 when p[0..n) is UTF-8 (qc_json_is_utf8) without NUL, so it survives
 * JSON and C strings alike. */
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

/* 0 when every string of the JSON text p[0..n), object keys included, is
 * UTF-8 (qc_json_is_utf8) and each \u escape of a surrogate is the high half
 * of a pair followed by the low half (yajl would decode a lone one into
 * bytes that are not UTF-8, or into "?"). Else QC_EINVAL and, when why is
 * set and cap > 0, "PATH: text is not valid UTF-8" (or "PATH: a key is not
 * valid UTF-8") in why, PATH naming the string's place under prefix (NULL
 * or "" for none): "metadata.k", "peers[1].host", array elements counted
 * from first. Checks nothing else (the parser does); never reads past n. */
int qc_json_check_utf8(const char *p, size_t n, const char *prefix, int first, char *why,
                       size_t cap);
/* Parses the JSON text p[0..n) (no NUL needed after it) into *out, which
 * the caller frees with yajl_tree_free, once qc_json_check_utf8 (prefix and
 * why as there, elements from 0) passes. QC_EINVAL with why "" when it is
 * not JSON or holds a NUL byte, QC_EINVAL with why set when it is not
 * UTF-8, QC_ENOMEM. */
int qc_json_parse(const char *p, size_t n, const char *prefix, yajl_val *out, char *why,
                  size_t cap);
/* yajl's tree of the n bytes at p (no NUL among them; nothing else
 * checked) into *out, which the caller frees with yajl_tree_free.
 * QC_EINVAL when it is not JSON, QC_ENOMEM. */
int qc_json_tree(const char *p, size_t n, yajl_val *out);

/* Compact JSON text of a tree value; *out is malloc'd, owned by the caller. */
int qc_json_val_text(yajl_val v, char **out);
/* What g has generated, as a malloc'd NUL-terminated string (its length in
 * *len when len is set), or NULL when out of memory. */
char *qc_json_gen_text(yajl_gen g, size_t *len);

/* Tree lookups of one key in an object; NULL when absent or of another type. */
const char *qc_json_get_str(yajl_val obj, const char *key);
yajl_val qc_json_get(yajl_val obj, const char *key);

#endif
