/* Config values set in C (qc_settings_*): each key's value kept as JSON
 * text, peers as a list of JSON objects; qc_settings_json joins them into
 * one config object for the loader. No key is interpreted here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "base/common.h"
#include "base/json.h"

#include "sdk/settings.h"

typedef struct item {
    char *key;
    char *json; /* the value, JSON text checked when set */
} item;

struct qc_settings {
    item *items;
    size_t n, cap;
    char **peers; /* JSON objects */
    size_t n_peers, cap_peers;
};

qc_settings *qc_settings_new(void) { return calloc(1, sizeof(qc_settings)); }

void qc_settings_free(qc_settings *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].key);
        free(s->items[i].json);
    }
    for (size_t i = 0; i < s->n_peers; i++) free(s->peers[i]);
    free(s->items);
    free(s->peers);
    free(s);
}

/* Takes json (malloc'd) as key's value, replacing an earlier one. */
static int put(qc_settings *s, const char *key, char *json)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->items[i].key, key) != 0) continue;
        free(s->items[i].json);
        s->items[i].json = json;
        return QC_OK;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        item *v = realloc(s->items, cap * sizeof *v);
        if (!v) goto nomem;
        s->items = v;
        s->cap = cap;
    }
    char *k = strdup(key);
    if (!k) goto nomem;
    s->items[s->n++] = (item){.key = k, .json = json};
    return QC_OK;
nomem:
    free(json);
    return QC_ENOMEM;
}

static int put_string(qc_settings *s, const char *key, const char *value)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return QC_ENOMEM;
    int rc = qc_json_str(g, value);
    char *json = rc == QC_OK ? qc_json_gen_text(g, NULL) : NULL;
    yajl_gen_free(g);
    if (rc != QC_OK) return rc;
    return json ? put(s, key, json) : QC_ENOMEM;
}

int qc_settings_set_string(qc_settings *s, const char *key, const char *value)
{
    if (!s || !key || !value) return QC_EINVAL;
    /* Refused here rather than repaired by qc_json_str on the way out. */
    if (!qc_json_is_utf8((const uint8_t *)value, strlen(value))) return QC_EINVAL;
    return put_string(s, key, value);
}

int qc_settings_set_int(qc_settings *s, const char *key, int64_t value)
{
    if (!s || !key) return QC_EINVAL;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)value);
    char *json = strdup(buf);
    return json ? put(s, key, json) : QC_ENOMEM;
}

int qc_settings_set_bool(qc_settings *s, const char *key, int value)
{
    if (!s || !key) return QC_EINVAL;
    char *json = strdup(value ? "true" : "false");
    return json ? put(s, key, json) : QC_ENOMEM;
}

/* QC_OK when text is JSON that qc_settings_json can emit: it parses, its
 * strings are UTF-8 (qc_json_parse) and it nests no deeper than json.c's
 * limit, checked by emitting it once with qc_json_val (so the limit lives
 * in one place). QC_EINVAL when not, QC_ENOMEM when out of memory. */
static int valid_json(const char *text)
{
    yajl_val v;
    int rc = qc_json_parse(text, strlen(text), NULL, &v, NULL, 0);
    if (rc != QC_OK) return rc;
    yajl_gen g = yajl_gen_alloc(NULL);
    rc = g ? qc_json_val(g, v) : QC_ENOMEM;
    if (g) yajl_gen_free(g);
    yajl_tree_free(v);
    return rc == QC_OK || rc == QC_ENOMEM ? rc : QC_EINVAL;
}

int qc_settings_set_json(qc_settings *s, const char *key, const char *json)
{
    if (!s || !key || !json) return QC_EINVAL;
    int rc = valid_json(json);
    if (rc != QC_OK) return rc;
    char *copy = strdup(json);
    return copy ? put(s, key, copy) : QC_ENOMEM;
}

static char *peer_json(const char *identifier, const char *host, int port, yajl_val meta)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return NULL;
    int err = yajl_gen_map_open(g) != yajl_gen_status_ok;
    err |= qc_json_key_str(g, "identifier", identifier) != QC_OK;
    err |= qc_json_key_str(g, "host", host) != QC_OK;
    err |= qc_json_key_int(g, "port", port) != QC_OK;
    if (meta) {
        err |= qc_json_key(g, "metadata") != QC_OK;
        err |= qc_json_val(g, meta) != QC_OK;
    }
    err |= yajl_gen_map_close(g) != yajl_gen_status_ok;
    char *out = err ? NULL : qc_json_gen_text(g, NULL);
    yajl_gen_free(g);
    return out;
}

int qc_settings_add_peer(qc_settings *s, const char *identifier, const char *host, int port,
                         const char *metadata_json)
{
    if (!s || !identifier || !host) return QC_EINVAL;
    if (!qc_json_is_utf8((const uint8_t *)identifier, strlen(identifier)) ||
        !qc_json_is_utf8((const uint8_t *)host, strlen(host)))
        return QC_EINVAL;
    yajl_val meta = NULL;
    if (metadata_json) {
        int rc = valid_json(metadata_json);
        if (rc != QC_OK) return rc;
        meta = yajl_tree_parse(metadata_json, NULL, 0);
        if (!YAJL_IS_OBJECT(meta)) {
            yajl_tree_free(meta);
            return QC_EINVAL;
        }
    }
    char *json = peer_json(identifier, host, port, meta);
    yajl_tree_free(meta);
    if (!json) return QC_ENOMEM;
    /* Metadata at the limit is one level too deep inside its peer. */
    int rc = valid_json(json);
    if (rc != QC_OK) {
        free(json);
        return rc;
    }
    if (s->n_peers == s->cap_peers) {
        size_t cap = s->cap_peers ? s->cap_peers * 2 : 8;
        char **v = realloc(s->peers, cap * sizeof *v);
        if (!v) {
            free(json);
            return QC_ENOMEM;
        }
        s->peers = v;
        s->cap_peers = cap;
    }
    s->peers[s->n_peers++] = json;
    return QC_OK;
}

/* Emits JSON text (checked when it was set, so a parse that fails now ran
 * out of memory) as a value. */
static int emit_text(yajl_gen g, const char *text)
{
    yajl_val v = yajl_tree_parse(text, NULL, 0);
    int rc = v ? qc_json_val(g, v) : QC_ENOMEM;
    yajl_tree_free(v);
    return rc;
}

/* Why the config could not be made: ENOMEM for allocation, otherwise a
 * JSON error, reported as QC_EINVAL naming the key it came from. */
static int json_fail(int rc, const char *key, char *err, size_t errlen)
{
    if (rc == QC_ENOMEM) {
        snprintf(err, errlen, "settings: out of memory");
        return QC_ENOMEM;
    }
    snprintf(err, errlen, "settings: %s: not JSON the loader takes (%s)", key, qc_strerror(rc));
    return QC_EINVAL;
}

int qc_settings_json(const qc_settings *s, char **json, size_t *len, char *err, size_t errlen)
{
    *json = NULL;
    *len = 0;
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return json_fail(QC_ENOMEM, "", err, errlen);
    int rc = yajl_gen_map_open(g) == yajl_gen_status_ok ? QC_OK : QC_ENOMEM;
    const char *key = "";
    for (size_t i = 0; i < s->n && rc == QC_OK; i++) {
        if (s->n_peers && strcmp(s->items[i].key, "peers") == 0) continue;
        key = s->items[i].key;
        rc = qc_json_key(g, key);
        if (rc == QC_OK) rc = emit_text(g, s->items[i].json);
    }
    if (s->n_peers && rc == QC_OK) {
        key = "peers";
        rc = qc_json_key(g, key);
        if (rc == QC_OK && yajl_gen_array_open(g) != yajl_gen_status_ok) rc = QC_ENOMEM;
        for (size_t i = 0; i < s->n_peers && rc == QC_OK; i++) rc = emit_text(g, s->peers[i]);
        if (rc == QC_OK && yajl_gen_array_close(g) != yajl_gen_status_ok) rc = QC_ENOMEM;
    }
    if (rc == QC_OK && yajl_gen_map_close(g) != yajl_gen_status_ok) rc = QC_ENOMEM;
    if (rc == QC_OK && !(*json = qc_json_gen_text(g, len))) rc = QC_ENOMEM;
    yajl_gen_free(g);
    return rc == QC_OK ? QC_OK : json_fail(rc, key, err, errlen);
}
