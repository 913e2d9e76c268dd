/* yajl helpers: Peers and raw JSON metadata emitted as values, and a few
 * tree lookups. Nothing here keeps state or does I/O; callers own every
 * yajl_gen and yajl_val they pass in. */
#include "base/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"

#define QC_JSON_MAX_DEPTH 64

/* ---------- UTF-8: one strict decoder behind every check ---------- */

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

/* What utf8_scan refuses beyond what RFC 3629 does. */
enum { SCAN_UTF8 = 0, SCAN_NO_NUL = 1, SCAN_PRINTABLE = 2 };

static int utf8_scan(const uint8_t *p, size_t n, int mode)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = utf8_next(p + i, n - i, &cp);
        if (l == 0 || (mode != SCAN_UTF8 && cp == 0)) return 0;
        if (mode == SCAN_PRINTABLE && (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))) return 0;
        i += l;
    }
    return 1;
}

int qc_json_is_utf8(const uint8_t *p, size_t n) { return utf8_scan(p, n, SCAN_UTF8); }

int qc_json_is_text(const uint8_t *p, size_t n) { return utf8_scan(p, n, SCAN_NO_NUL); }

int qc_json_is_printable(const uint8_t *p, size_t n) { return utf8_scan(p, n, SCAN_PRINTABLE); }

/* s[0..n) with each byte that does not start a valid sequence replaced by
 * U+FFFD: malloc'd and NUL-terminated, its length in *len; NULL when out
 * of memory. */
static char *utf8_repair(const uint8_t *s, size_t n, size_t *len)
{
    static const char fffd[] = "\xEF\xBF\xBD";
    char *d = n < SIZE_MAX / 3 ? malloc(n * 3 + 1) : NULL;
    if (!d) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_next(s + i, n - i, &cp);
        if (l == 0) {
            memcpy(d + o, fffd, 3);
            o += 3;
            i++;
        } else {
            memcpy(d + o, s + i, l);
            o += l;
            i += l;
        }
    }
    d[o] = '\0';
    *len = o;
    return d;
}

/* ---------- checking JSON text before a parser decodes it ----------
 * yajl checks only the shape of multi-byte sequences (overlong forms,
 * surrogates and code points past U+10FFFF pass) and decodes a lone
 * surrogate escape into CESU bytes (\udc00) or "?" (\ud800): both must be
 * refused on the raw text, with the place of the string for the message. */

#define SCAN_PATH_DEPTH 64 /* containers whose key or index a message names */

typedef struct scan_frame {
    int object;      /* 1: an object, 0: an array */
    int want_key;    /* object: the next string is a key */
    size_t index;    /* array: the element's place */
    const char *key; /* object: the current key as written (escapes kept) */
    size_t klen;
} scan_frame;

typedef struct scan {
    const uint8_t *p;
    size_t n, i;
    size_t depth; /* may pass SCAN_PATH_DEPTH; deeper frames are not kept */
    scan_frame f[SCAN_PATH_DEPTH];
} scan;

/* 1 when p[0..n) starts with four hex digits, their value in *v. */
static int hex4(const uint8_t *p, size_t n, uint32_t *v)
{
    *v = 0;
    if (n < 4) return 0;
    for (size_t i = 0; i < 4; i++) {
        uint8_t c = p[i];
        uint32_t d = c >= '0' && c <= '9'   ? (uint32_t)(c - '0')
                     : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (uint32_t)(c - 'A' + 10)
                                            : 16u;
        if (d > 15) return 0;
        *v = *v << 4 | d;
    }
    return 1;
}

/* Length of the escape at p[i] == '\\' (n bytes in all); *ok cleared for a
 * \u surrogate that is not a high one followed at once by a low one.
 * Anything else malformed is the parser's to refuse. */
static size_t escape_len(const uint8_t *p, size_t n, size_t i, int *ok)
{
    uint32_t hi, lo;
    if (n - i < 2) return 1;
    if (p[i + 1] != 'u' || !hex4(p + i + 2, n - i - 2, &hi)) return 2;
    if (hi < 0xD800 || hi > 0xDFFF) return 6;
    if (hi <= 0xDBFF && n - i >= 12 && p[i + 6] == '\\' && p[i + 7] == 'u' &&
        hex4(p + i + 8, n - i - 8, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
        return 12;
    *ok = 0;
    return 6;
}

/* Walks the string whose opening quote is at s->i and leaves s->i past its
 * closing quote (or at the end); *end is where its text ends. 1 when the
 * text is UTF-8 and its escapes decode to UTF-8. */
static int scan_string(scan *s, size_t *end)
{
    int ok = 1;
    size_t i = s->i + 1;
    while (i < s->n && s->p[i] != '"') {
        uint32_t cp;
        size_t l =
            s->p[i] == '\\' ? escape_len(s->p, s->n, i, &ok) : utf8_next(s->p + i, s->n - i, &cp);
        if (l == 0) ok = 0, l = 1;
        i += l;
    }
    *end = i < s->n ? i : s->n;
    s->i = i < s->n ? i + 1 : s->n;
    return ok;
}

/* Appends s[0..n) to buf (cap bytes, *len used), as much as fits without
 * cutting a UTF-8 sequence; control characters become '?'. */
static void path_put(char *buf, size_t cap, size_t *len, const char *s, size_t n)
{
    size_t room = cap - 1 - *len;
    if (n > room) {
        n = room;
        while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80) n--;
    }
    for (size_t i = 0; i < n; i++) buf[*len + i] = (uint8_t)s[i] < 0x20 ? '?' : s[i];
    *len += n;
    buf[*len] = '\0';
}

/* Writes "PATH: what" into why for the string just refused. A bad key is
 * named by the object that holds it: the innermost key is stale then. */
static void scan_fail(const scan *s, const char *prefix, int first, int key, char *why, size_t cap)
{
    char path[200] = "", idx[32];
    size_t len = 0, kept = s->depth < SCAN_PATH_DEPTH ? s->depth : SCAN_PATH_DEPTH;
    path_put(path, sizeof path, &len, prefix ? prefix : "", prefix ? strlen(prefix) : 0);
    for (size_t d = 0; d < kept; d++) {
        const scan_frame *f = &s->f[d];
        if (f->object && f->key && !(key && d + 1 == s->depth)) {
            if (len) path_put(path, sizeof path, &len, ".", 1);
            path_put(path, sizeof path, &len, f->key, f->klen);
        } else if (!f->object) {
            int m = snprintf(idx, sizeof idx, "[%zu]", f->index + (size_t)first);
            path_put(path, sizeof path, &len, idx, (size_t)m);
        }
    }
    if (s->depth > kept) path_put(path, sizeof path, &len, "...", 3);
    snprintf(why, cap, "%s%s%s", path, len ? ": " : "",
             key ? "a key is not valid UTF-8" : "text is not valid UTF-8");
}

/* Skips the comment at s->i ('/' then '/' or '*': yajl_tree allows them). */
static void skip_comment(scan *s)
{
    if (s->i + 1 >= s->n || (s->p[s->i + 1] != '/' && s->p[s->i + 1] != '*')) {
        s->i++;
        return;
    }
    int line = s->p[s->i + 1] == '/';
    size_t i = s->i + 2;
    while (i < s->n &&
           !(line ? s->p[i] == '\n' : s->p[i] == '*' && i + 1 < s->n && s->p[i + 1] == '/'))
        i++;
    s->i = i >= s->n ? s->n : line ? i + 1 : i + 2;
}

static scan_frame *scan_top(scan *s)
{
    return s->depth && s->depth <= SCAN_PATH_DEPTH ? &s->f[s->depth - 1] : NULL;
}

static void scan_open(scan *s, int object)
{
    if (s->depth < SCAN_PATH_DEPTH)
        s->f[s->depth] = (scan_frame){.object = object, .want_key = object};
    s->depth++;
}

/* One structural byte (or any other) outside strings. */
static void scan_byte(scan *s)
{
    scan_frame *f = scan_top(s);
    switch (s->p[s->i]) {
    case '{': scan_open(s, 1); break;
    case '[': scan_open(s, 0); break;
    case '}':
    case ']': s->depth -= s->depth > 0; break;
    case ',':
        if (f && f->object) f->want_key = 1;
        if (f && !f->object) f->index++;
        break;
    default: break;
    }
    s->i++;
}

int qc_json_check_utf8(const char *p, size_t n, const char *prefix, int first, char *why,
                       size_t cap)
{
    scan s = {.p = (const uint8_t *)p, .n = p ? n : 0};
    while (s.i < s.n) {
        if (s.p[s.i] == '/') {
            skip_comment(&s);
            continue;
        }
        if (s.p[s.i] != '"') {
            scan_byte(&s);
            continue;
        }
        scan_frame *f = scan_top(&s);
        int key = f && f->object && f->want_key;
        size_t start = s.i + 1, end;
        if (!scan_string(&s, &end)) {
            if (why && cap) scan_fail(&s, prefix, first, key, why, cap);
            return QC_EINVAL;
        }
        if (key)
            *f = (scan_frame){.object = 1, .key = (const char *)s.p + start, .klen = end - start};
    }
    return QC_OK;
}

int qc_json_parse(const char *p, size_t n, const char *prefix, yajl_val *out, char *why, size_t cap)
{
    *out = NULL;
    if (why && cap) why[0] = '\0';
    /* yajl_tree reads a C string: a NUL byte would hide the rest. */
    if ((!p && n) || (n && memchr(p, '\0', n))) return QC_EINVAL;
    int rc = qc_json_check_utf8(p, n, prefix, 0, why, cap);
    return rc ? rc : qc_json_tree(p, n, out);
}

int qc_json_tree(const char *p, size_t n, yajl_val *out)
{
    char *text = malloc(n + 1);
    if (!text) return QC_ENOMEM;
    if (n) memcpy(text, p, n);
    text[n] = '\0';
    *out = yajl_tree_parse(text, NULL, 0);
    free(text);
    return *out ? QC_OK : QC_EINVAL;
}

int qc_json_gen_rc(yajl_gen_status st)
{
    if (st == yajl_gen_status_ok) return QC_OK;
    return st == yajl_gen_invalid_string ? QC_EINVAL : QC_ENOMEM;
}

/* Text that is not UTF-8 (a legacy record, a message quoting input) goes
 * out repaired: a reader must never get bytes that are not UTF-8. */
int qc_json_str(yajl_gen g, const char *s)
{
    if (!s) return qc_json_gen_rc(yajl_gen_null(g));
    size_t n = strlen(s), len;
    if (qc_json_is_utf8((const uint8_t *)s, n))
        return qc_json_gen_rc(yajl_gen_string(g, (const unsigned char *)s, n));
    char *fixed = utf8_repair((const uint8_t *)s, n, &len);
    if (!fixed) return QC_ENOMEM;
    int rc = qc_json_gen_rc(yajl_gen_string(g, (const unsigned char *)fixed, len));
    free(fixed);
    return rc;
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
    return rc ? rc : qc_json_gen_rc(yajl_gen_integer(g, value));
}

int qc_json_key_bool(yajl_gen g, const char *key, int value)
{
    int rc = qc_json_key(g, key);
    return rc ? rc : qc_json_gen_rc(yajl_gen_bool(g, value != 0));
}

static int emit_val(yajl_gen g, yajl_val v, int depth);

static int emit_object(yajl_gen g, yajl_val v, int depth)
{
    int rc = qc_json_gen_rc(yajl_gen_map_open(g));
    for (size_t i = 0; !rc && i < v->u.object.len; i++) {
        rc = qc_json_str(g, v->u.object.keys[i]);
        if (!rc) rc = emit_val(g, v->u.object.values[i], depth + 1);
    }
    return rc ? rc : qc_json_gen_rc(yajl_gen_map_close(g));
}

static int emit_array(yajl_gen g, yajl_val v, int depth)
{
    int rc = qc_json_gen_rc(yajl_gen_array_open(g));
    for (size_t i = 0; !rc && i < v->u.array.len; i++)
        rc = emit_val(g, v->u.array.values[i], depth + 1);
    return rc ? rc : qc_json_gen_rc(yajl_gen_array_close(g));
}

static int emit_val(yajl_gen g, yajl_val v, int depth)
{
    if (depth > QC_JSON_MAX_DEPTH) return QC_ETOOBIG;
    if (!v) return qc_json_gen_rc(yajl_gen_null(g));
    switch (v->type) {
    case yajl_t_string: return qc_json_str(g, v->u.string);
    case yajl_t_number:
        return qc_json_gen_rc(yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r)));
    case yajl_t_object: return emit_object(g, v, depth);
    case yajl_t_array: return emit_array(g, v, depth);
    case yajl_t_true: return qc_json_gen_rc(yajl_gen_bool(g, 1));
    case yajl_t_false: return qc_json_gen_rc(yajl_gen_bool(g, 0));
    default: return qc_json_gen_rc(yajl_gen_null(g));
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
        rc = qc_json_gen_rc(yajl_gen_map_open(g));
        if (!rc) rc = qc_json_gen_rc(yajl_gen_map_close(g));
    }
    yajl_tree_free(v);
    return rc;
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

/* ---------- base64, for KV keys and values ---------- */

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
    if (!b64) return qc_json_gen_rc(yajl_gen_string(g, n ? p : (const uint8_t *)"", n));
    char *s;
    size_t len;
    int rc = qc_json_b64_encode(p, n, &s, &len);
    if (rc) return rc;
    rc = qc_json_gen_rc(yajl_gen_string(g, (const unsigned char *)s, len));
    free(s);
    return rc;
}

int qc_json_kv(yajl_gen g, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
               uint64_t revision)
{
    int b64 = !qc_json_is_text(key, klen) || !qc_json_is_text(value, vlen);
    int rc = qc_json_gen_rc(yajl_gen_map_open(g));
    if (!rc) rc = qc_json_key(g, "key");
    if (!rc) rc = gen_bytes(g, key, klen, b64);
    if (!rc) rc = qc_json_key(g, "value");
    if (!rc) rc = gen_bytes(g, value, vlen, b64);
    if (!rc) rc = qc_json_key_int(g, "revision", (long long)revision);
    if (!rc && b64) rc = qc_json_key_str(g, "encoding", "base64");
    return rc ? rc : qc_json_gen_rc(yajl_gen_map_close(g));
}
