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
    }
    return rc ? rc : gen_rc(yajl_gen_map_close(g));
}

int qc_json_val_text(yajl_val v, char **out)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return QC_ENOMEM;
    int rc = qc_json_val(g, v);
    const unsigned char *buf = NULL;
    size_t len = 0;
    if (!rc) rc = gen_rc(yajl_gen_get_buf(g, &buf, &len));
    char *s = rc ? NULL : malloc(len + 1);
    if (!rc && !s) rc = QC_ENOMEM;
    if (!rc) {
        memcpy(s, buf, len);
        s[len] = '\0';
        *out = s;
    }
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
