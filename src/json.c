/* yajl helpers: Peers and raw JSON metadata emitted as values, and a few
 * tree lookups. Nothing here keeps state or does I/O; callers own every
 * yajl_gen and yajl_val they pass in. */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

#define QC_JSON_MAX_DEPTH 64

static int gen_rc(yajl_gen_status st)
{
    if (st == yajl_gen_status_ok) return QC_OK;
    return st == yajl_gen_invalid_string ? QC_EINVAL : QC_ENOMEM;
}

int qc_json_str(yajl_gen g, const char *s)
{
    if (!s) return gen_rc(yajl_gen_null(g));
    return gen_rc(yajl_gen_string(g, (const unsigned char *)s, strlen(s)));
}

int qc_json_key(yajl_gen g, const char *key) { return qc_json_str(g, key); }

int qc_json_key_str(yajl_gen g, const char *key, const char *value)
{
    int rc = qc_json_key(g, key);
    return rc ? rc : qc_json_str(g, value);
}

int qc_json_key_int(yajl_gen g, const char *key, long long value)
{
    int rc = qc_json_key(g, key);
    return rc ? rc : gen_rc(yajl_gen_integer(g, value));
}

int qc_json_key_bool(yajl_gen g, const char *key, int value)
{
    int rc = qc_json_key(g, key);
    return rc ? rc : gen_rc(yajl_gen_bool(g, value != 0));
}

static int emit_val(yajl_gen g, yajl_val v, int depth);

static int emit_object(yajl_gen g, yajl_val v, int depth)
{
    int rc = gen_rc(yajl_gen_map_open(g));
    for (size_t i = 0; !rc && i < v->u.object.len; i++) {
        rc = qc_json_str(g, v->u.object.keys[i]);
        if (!rc) rc = emit_val(g, v->u.object.values[i], depth + 1);
    }
    return rc ? rc : gen_rc(yajl_gen_map_close(g));
}

static int emit_array(yajl_gen g, yajl_val v, int depth)
{
    int rc = gen_rc(yajl_gen_array_open(g));
    for (size_t i = 0; !rc && i < v->u.array.len; i++)
        rc = emit_val(g, v->u.array.values[i], depth + 1);
    return rc ? rc : gen_rc(yajl_gen_array_close(g));
}

static int emit_val(yajl_gen g, yajl_val v, int depth)
{
    if (depth > QC_JSON_MAX_DEPTH) return QC_ETOOBIG;
    if (!v) return gen_rc(yajl_gen_null(g));
    switch (v->type) {
    case yajl_t_string: return qc_json_str(g, v->u.string);
    case yajl_t_number: return gen_rc(yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r)));
    case yajl_t_object: return emit_object(g, v, depth);
    case yajl_t_array: return emit_array(g, v, depth);
    case yajl_t_true: return gen_rc(yajl_gen_bool(g, 1));
    case yajl_t_false: return gen_rc(yajl_gen_bool(g, 0));
    default: return gen_rc(yajl_gen_null(g));
    }
}

int qc_json_val(yajl_gen g, yajl_val v) { return emit_val(g, v, 0); }

/* 1 when v nests no deeper than QC_JSON_MAX_DEPTH, so emitting cannot fail
 * half-way and leave broken JSON behind. */
static int depth_ok(yajl_val v, int depth)
{
    if (depth > QC_JSON_MAX_DEPTH) return 0;
    if (v && YAJL_IS_OBJECT(v)) {
        for (size_t i = 0; i < v->u.object.len; i++)
            if (!depth_ok(v->u.object.values[i], depth + 1)) return 0;
    } else if (v && YAJL_IS_ARRAY(v)) {
        for (size_t i = 0; i < v->u.array.len; i++)
            if (!depth_ok(v->u.array.values[i], depth + 1)) return 0;
    }
    return 1;
}

int qc_json_raw_object(yajl_gen g, const char *text)
{
    yajl_val v = text ? yajl_tree_parse(text, NULL, 0) : NULL;
    int rc;
    if (v && YAJL_IS_OBJECT(v) && depth_ok(v, 0))
        rc = qc_json_val(g, v);
    else {
        rc = gen_rc(yajl_gen_map_open(g));
        if (!rc) rc = gen_rc(yajl_gen_map_close(g));
    }
    yajl_tree_free(v);
    return rc;
}

int qc_json_peer(yajl_gen g, const qc_peer_info *p, int with_state)
{
    int rc = gen_rc(yajl_gen_map_open(g));
    if (!rc) rc = qc_json_key_str(g, "identifier", p->identifier);
    if (!rc) rc = qc_json_key_str(g, "host", p->host);
    if (!rc) rc = qc_json_key_int(g, "port", p->port);
    if (!rc) rc = qc_json_key(g, "metadata");
    if (!rc) rc = qc_json_raw_object(g, p->metadata);
    if (!rc && with_state) {
        rc = qc_json_key_str(g, "role", p->role);
        if (!rc) rc = qc_json_key_bool(g, "up", p->up);
        if (!rc) rc = qc_json_key_bool(g, "voter", p->voter);
        if (!rc) rc = qc_json_key_int(g, "priority", p->priority);
    }
    return rc ? rc : gen_rc(yajl_gen_map_close(g));
}

char *qc_json_gen_text(yajl_gen g, size_t *len)
{
    const unsigned char *buf;
    size_t n;
    if (yajl_gen_get_buf(g, &buf, &n) != yajl_gen_status_ok) return NULL;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, buf, n);
    s[n] = '\0';
    if (len) *len = n;
    return s;
}

int qc_json_val_text(yajl_val v, char **out)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return QC_ENOMEM;
    int rc = qc_json_val(g, v);
    if (!rc && !(*out = qc_json_gen_text(g, NULL))) rc = QC_ENOMEM;
    yajl_gen_free(g);
    return rc;
}

yajl_val qc_json_get(yajl_val obj, const char *key)
{
    if (!obj || !YAJL_IS_OBJECT(obj)) return NULL;
    for (size_t i = 0; i < obj->u.object.len; i++)
        if (strcmp(obj->u.object.keys[i], key) == 0) return obj->u.object.values[i];
    return NULL;
}

const char *qc_json_get_str(yajl_val obj, const char *key)
{
    yajl_val v = qc_json_get(obj, key);
    return v && YAJL_IS_STRING(v) ? v->u.string : NULL;
}

/* ---------- text and base64, for KV keys and values ---------- */

/* Decodes the code point at p (n > 0 bytes left): its length, 0 if invalid. */
static size_t utf8_next(const uint8_t *p, size_t n, uint32_t *cp)
{
    uint8_t b = p[0];
    size_t len;
    uint32_t c, min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b >= 0xC2 && b <= 0xDF) {
        len = 2, c = b & 0x1Fu, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
        len = 3, c = b & 0x0Fu, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4, c = b & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (p[i] & 0x3Fu);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

static int utf8_scan(const uint8_t *p, size_t n, int printable)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = utf8_next(p + i, n - i, &cp);
        if (l == 0 || cp == 0) return 0;
        if (printable && (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))) return 0;
        i += l;
    }
    return 1;
}

int qc_json_is_text(const uint8_t *p, size_t n) { return utf8_scan(p, n, 0); }

int qc_json_is_printable(const uint8_t *p, size_t n) { return utf8_scan(p, n, 1); }

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int qc_json_b64_encode(const uint8_t *p, size_t n, char **out, size_t *olen)
{
    size_t len = (n + 2) / 3 * 4;
    char *s = malloc(len + 1), *o = s;
    if (!s) return QC_ENOMEM;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        *o++ = b64_chars[(v >> 18) & 63];
        *o++ = b64_chars[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? b64_chars[v & 63] : '=';
    }
    *o = '\0';
    *out = s;
    *olen = len;
    return QC_OK;
}

static int b64_value(char ch)
{
    const char *at = ch ? strchr(b64_chars, ch) : NULL;
    return at ? (int)(at - b64_chars) : -1;
}

int qc_json_b64_decode(const char *s, size_t n, uint8_t **out, size_t *olen)
{
    while (n > 0 && s[n - 1] == '=') n--;
    if (n % 4 == 1) return QC_EINVAL;
    uint8_t *d = malloc(n / 4 * 3 + 3), *o = d;
    if (!d) return QC_ENOMEM;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(s[i]);
        if (v < 0) {
            free(d);
            return QC_EINVAL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (uint8_t)(acc >> bits);
        }
    }
    *o = '\0';
    *olen = (size_t)(o - d);
    *out = d;
    return QC_OK;
}

static int gen_bytes(yajl_gen g, const uint8_t *p, size_t n, int b64)
{
    if (!b64) return gen_rc(yajl_gen_string(g, n ? p : (const uint8_t *)"", n));
    char *s;
    size_t len;
    int rc = qc_json_b64_encode(p, n, &s, &len);
    if (rc) return rc;
    rc = gen_rc(yajl_gen_string(g, (const unsigned char *)s, len));
    free(s);
    return rc;
}

int qc_json_kv(yajl_gen g, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
               uint64_t revision)
{
    int b64 = !qc_json_is_text(key, klen) || !qc_json_is_text(value, vlen);
    int rc = gen_rc(yajl_gen_map_open(g));
    if (!rc) rc = qc_json_key(g, "key");
    if (!rc) rc = gen_bytes(g, key, klen, b64);
    if (!rc) rc = qc_json_key(g, "value");
    if (!rc) rc = gen_bytes(g, value, vlen, b64);
    if (!rc) rc = qc_json_key_int(g, "revision", (long long)revision);
    if (!rc && b64) rc = qc_json_key_str(g, "encoding", "base64");
    return rc ? rc : gen_rc(yajl_gen_map_close(g));
}
