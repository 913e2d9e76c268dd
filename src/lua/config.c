/* Loads a node's config from a Lua file returning a table or from a JSON
 * file, runs the embedded lua/config.lua checker over it and copies the
 * resolved values into a qc_config. Starts nothing; the only side effect is
 * the resolved table left in the registry under "qcluster.config". */
#include "lua/config.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/common.h"
#include "base/embedded.h"
#include "base/json.h"
#include "base/log.h"
#include "lua/luajson.h"

#define QC_CONFIG_MAX_BYTES (4u << 20)

static int ends_with_json(const char *path)
{
    size_t n = strlen(path);
    return n >= 5 && strncasecmp(path + n - 5, ".json", 5) == 0;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

/* Reads a whole file into a malloc'd, NUL-terminated buffer. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rbe"); /* e: close-on-exec, the program may fork */
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return QC_EIO;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? QC_OK : QC_ENOMEM;
    while (rc == QC_OK) {
        if (n + 1 >= cap) {
            char *nb = cap >= QC_CONFIG_MAX_BYTES ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                rc = cap >= QC_CONFIG_MAX_BYTES ? QC_ETOOBIG : QC_ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) rc = QC_EIO;
            break;
        }
    }
    fclose(f);
    if (rc != QC_OK) {
        free(buf);
        snprintf(err, errlen, "%s: %s", path,
                 rc == QC_EIO ? "cannot read the file" : qc_strerror(rc));
        return rc == QC_ENOMEM ? QC_ENOMEM : rc == QC_ETOOBIG ? QC_EINVAL : QC_EIO;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return QC_OK;
}

/* Pushes the value of JSON text; messages say "NAME:LINE: message", or
 * "NAME: key: message" when the decoder names the key (text that is not
 * UTF-8). */
static int decode_json(lua_State *L, const char *name, const char *text, size_t len, char *err,
                       size_t errlen)
{
    char msg[256];
    int line = 1;
    int rc = qc_luajson_decode(L, text, len, &line, msg, sizeof msg);
    if (rc != QC_OK && line > 0)
        snprintf(err, errlen, "%s:%d: %s", name, line, msg);
    else if (rc != QC_OK)
        snprintf(err, errlen, "%s: %s", name, msg);
    return rc == QC_ENOMEM ? QC_ENOMEM : rc;
}

/* Pushes the raw config value (whatever the file produced). */
static int load_json(lua_State *L, const char *path, char *err, size_t errlen)
{
    char *text;
    size_t len;
    int rc = read_file(path, &text, &len, err, errlen);
    if (rc != QC_OK) return rc;
    rc = decode_json(L, path, text, len, err, errlen);
    free(text);
    return rc;
}

/* What luaL_loadfilex skips before the chunk: a UTF-8 byte order mark,
 * then a first line starting with '#' (its newline stays: line numbers
 * do not move). */
static size_t chunk_start(const char *text, size_t len)
{
    size_t at = len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    if (at < len && text[at] == '#') {
        const char *nl = memchr(text + at, '\n', len - at);
        at = nl ? (size_t)(nl - text) : len;
    }
    return at;
}

int qc_config_loadfile(lua_State *L, const char *path)
{
    char err[512], *text;
    size_t len;
    int rc = read_file(path, &text, &len, err, sizeof err);
    if (rc != QC_OK) {
        lua_pushstring(L, err);
        return rc == QC_ENOMEM ? LUA_ERRMEM : LUA_ERRFILE;
    }
    size_t at = chunk_start(text, len);
    const char *name = lua_pushfstring(L, "@%s", path);
    /* Text only: Lua does not check binary chunks, a bad one crashes it. */
    int st = luaL_loadbufferx(L, text + at, len - at, name, "t");
    free(text);
    lua_remove(L, -2);
    return st;
}

static int load_lua(lua_State *L, const char *path, char *err, size_t errlen)
{
    int st = qc_config_loadfile(L, path);
    if (st == LUA_OK) st = lua_pcall(L, 0, 1, 0);
    if (st == LUA_OK) return QC_OK;
    const char *m = lua_tostring(L, -1);
    snprintf(err, errlen, "%s", m ? m : "cannot load the config");
    lua_pop(L, 1);
    return st == LUA_ERRFILE ? QC_EIO : st == LUA_ERRMEM ? QC_ENOMEM : QC_EINVAL;
}

/* Calls config.check(raw, opts) on the raw value at the top; replaces it
 * with the resolved table. */
static const char *msg_at(lua_State *L, int idx)
{
    const char *m = lua_tostring(L, idx);
    return m ? m : "(error object is not a string)";
}

static int run_checker(lua_State *L, const char *path, const char *dir, int json, char *err,
                       size_t errlen)
{
    size_t n;
    const char *src = qc_embedded_lookup("config", &n);
    if (!src) {
        snprintf(err, errlen, "%s: the config checker is missing from the build", path);
        return QC_EINVAL;
    }
    if (luaL_loadbuffer(L, src, n, "=lua/config.lua") != LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "%s: %s", path, msg_at(L, -1));
        lua_pop(L, 2);
        return QC_EINVAL;
    }
    lua_getfield(L, -1, "check");
    lua_pushvalue(L, -3);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "dir");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushboolean(L, json || ends_with_json(path));
    lua_setfield(L, -2, "json");
    if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
        snprintf(err, errlen, "%s: %s", path, msg_at(L, -1));
        lua_pop(L, 3);
        return QC_EINVAL;
    }
    if (lua_isnil(L, -2)) {
        snprintf(err, errlen, "%s: %s", path, msg_at(L, -1));
        lua_pop(L, 4);
        return QC_EINVAL;
    }
    lua_pop(L, 1);      /* message */
    lua_replace(L, -3); /* resolved over raw */
    lua_pop(L, 1);      /* module */
    return QC_OK;
}

/* ---- copying the resolved table into C --------------------------------- */

static int dup_field(lua_State *L, int t, const char *key, char **out)
{
    *out = NULL;
    lua_getfield(L, t, key);
    const char *s = lua_tostring(L, -1);
    if (s) *out = strdup(s);
    lua_pop(L, 1);
    return s && !*out ? QC_ENOMEM : QC_OK;
}

/* QC_EINVAL naming path when the value at idx is a string that is not
 * UTF-8: hosts and addresses go out in JSON (status, member records, the
 * record a joining node sends), and a Lua string may hold any bytes. */
static int utf8_value(lua_State *L, int idx, const char *path, char *err, size_t errlen)
{
    size_t n;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
    if (!s || qc_json_is_utf8((const uint8_t *)s, n)) return QC_OK;
    snprintf(err, errlen, "%s: text is not valid UTF-8", path);
    return QC_EINVAL;
}

static int utf8_field(lua_State *L, int t, const char *key, const char *path, char *err,
                      size_t errlen)
{
    lua_getfield(L, t, key);
    int rc = utf8_value(L, -1, path, err, errlen);
    lua_pop(L, 1);
    return rc;
}

static int int_field(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    int v = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The value of key as JSON text; a message names path (a Lua config's
 * strings may hold any bytes: metadata must be UTF-8). */
static int json_field(lua_State *L, int t, const char *key, const char *path, char **out, char *err,
                      size_t errlen)
{
    size_t len;
    lua_getfield(L, t, key);
    int rc = qc_luajson_encode_at(L, -1, path, out, &len, err, errlen);
    lua_pop(L, 1);
    return rc;
}

/* The checker allows only the known names; an absent role is a voter. */
static int role_field(lua_State *L, int t)
{
    lua_getfield(L, t, "role");
    int role = qc_member_role_parse(lua_tostring(L, -1));
    lua_pop(L, 1);
    return role < 0 ? QC_MROLE_VOTER : role;
}

static int copy_join(lua_State *L, int t, qc_config *cfg, char *err, size_t errlen)
{
    lua_getfield(L, t, "join");
    int jt = lua_gettop(L);
    size_t n = lua_istable(L, jt) ? (size_t)lua_rawlen(L, jt) : 0;
    cfg->join_set = lua_istable(L, jt);
    int rc = QC_OK;
    if (n && !(cfg->join = calloc(n, sizeof *cfg->join))) rc = QC_ENOMEM;
    for (size_t i = 0; rc == QC_OK && i < n; i++) {
        char path[32];
        snprintf(path, sizeof path, "join[%zu]", i + 1);
        lua_rawgeti(L, jt, (lua_Integer)i + 1);
        rc = utf8_value(L, -1, path, err, errlen);
        if (rc != QC_OK) {
            lua_pop(L, 1);
            break;
        }
        const char *s = lua_tostring(L, -1);
        cfg->join[i] = s ? strdup(s) : NULL;
        if (!cfg->join[i]) rc = QC_ENOMEM;
        cfg->n_join = i + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

/* reap_after is seconds, maybe fractional, or absent: milliseconds, 0 off.
 * The checker caps it at ten years; a positive value never rounds to 0. */
static int64_t reap_ms(lua_State *L, int t)
{
    lua_getfield(L, t, "reap_after");
    double s = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    if (!(s > 0)) return 0;
    double ms = s * 1000.0 + 0.5;
    return ms < 1 ? 1 : ms > 1e15 ? (int64_t)1e15 : (int64_t)ms;
}

static int bool_field(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int copy_peers(lua_State *L, int t, qc_config *cfg, char *err, size_t errlen)
{
    lua_getfield(L, t, "peers");
    int pt = lua_gettop(L);
    size_t n = (size_t)lua_rawlen(L, pt);
    int rc = QC_OK;
    if (n) {
        cfg->peers = calloc(n, sizeof *cfg->peers);
        if (!cfg->peers) rc = QC_ENOMEM;
    }
    for (size_t i = 0; rc == QC_OK && i < n; i++) {
        qc_peer_conf *p = &cfg->peers[i];
        lua_rawgeti(L, pt, (lua_Integer)i + 1);
        int e = lua_gettop(L);
        cfg->n_peers = i + 1;
        char path[48];
        snprintf(path, sizeof path, "peers[%zu].host", i + 1);
        rc = utf8_field(L, e, "host", path, err, errlen);
        if (rc == QC_OK) rc = dup_field(L, e, "identifier", &p->identifier);
        if (rc == QC_OK) rc = dup_field(L, e, "host", &p->host);
        snprintf(path, sizeof path, "peers[%zu].metadata", i + 1);
        if (rc == QC_OK) rc = json_field(L, e, "metadata", path, &p->metadata, err, errlen);
        p->port = int_field(L, e, "port");
        p->role = role_field(L, e);
        p->priority = int_field(L, e, "priority");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static int check_kind(const char *kind)
{
    static const char *const names[] = {"exec", "http", "tcp", "ttl", "lua"};
    for (size_t i = 0; kind && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(kind, names[i]) == 0) return (int)i + QC_CHECK_EXEC;
    return 0;
}

static int copy_check(lua_State *L, int e, qc_check_conf *k)
{
    lua_getfield(L, e, "kind");
    k->kind = check_kind(lua_tostring(L, -1));
    lua_pop(L, 1);
    int rc = dup_field(L, e, "name", &k->name);
    if (rc == QC_OK) rc = dup_field(L, e, "target", &k->target);
    if (rc == QC_OK) rc = dup_field(L, e, "host", &k->host);
    if (rc == QC_OK) rc = dup_field(L, e, "path", &k->path);
    k->port = int_field(L, e, "port");
    k->ttl_ms = int_field(L, e, "ttl_ms");
    k->interval_ms = int_field(L, e, "interval_ms");
    k->timeout_ms = int_field(L, e, "timeout_ms");
    k->rise = int_field(L, e, "rise");
    k->fall = int_field(L, e, "fall");
    k->retry_ms = int_field(L, e, "retry_ms");
    return rc == QC_OK && (!k->name || !k->target || !k->kind) ? QC_EINVAL : rc;
}

static int copy_checks(lua_State *L, int t, qc_config *cfg)
{
    lua_getfield(L, t, "checks");
    int ct = lua_gettop(L);
    size_t n = lua_istable(L, ct) ? (size_t)lua_rawlen(L, ct) : 0;
    int rc = QC_OK;
    if (n && !(cfg->checks = calloc(n, sizeof *cfg->checks))) rc = QC_ENOMEM;
    for (size_t i = 0; rc == QC_OK && i < n; i++) {
        lua_rawgeti(L, ct, (lua_Integer)i + 1);
        cfg->n_checks = i + 1;
        rc = copy_check(L, lua_gettop(L), &cfg->checks[i]);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static int copy_config(lua_State *L, int t, qc_config *cfg, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        size_t off;
    } strs[] = {
        {"identifier", offsetof(qc_config, identifier)},
        {"listen_host", offsetof(qc_config, listen_host)},
        {"api_host", offsetof(qc_config, api_host)},
        {"data_dir", offsetof(qc_config, data_dir)},
        {"hooks", offsetof(qc_config, hooks_path)},
        {"secret", offsetof(qc_config, secret)},
        {"secret_previous", offsetof(qc_config, secret_previous)},
        {"api_token", offsetof(qc_config, api_token)},
        {"api_tls_cert", offsetof(qc_config, api_tls_cert)},
        {"api_tls_key", offsetof(qc_config, api_tls_key)},
        {"api_tls_client_ca", offsetof(qc_config, api_tls_client_ca)},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        char **field = (char **)(void *)((char *)cfg + strs[i].off);
        if (dup_field(L, t, strs[i].key, field) != QC_OK) return QC_ENOMEM;
    }
    cfg->listen_port = int_field(L, t, "listen_port");
    cfg->api_port = int_field(L, t, "api_port");
    cfg->heartbeat_ms = int_field(L, t, "heartbeat_ms");
    cfg->election_timeout_ms = int_field(L, t, "election_timeout_ms");
    cfg->hook_timeout_ms = int_field(L, t, "hook_timeout_ms");
    cfg->exec_max = int_field(L, t, "exec_max");
    cfg->hook_stuck_ms = int_field(L, t, "hook_stuck_ms");
    cfg->snapshot_entries = int_field(L, t, "snapshot_entries");
    cfg->kv_max_key = int_field(L, t, "kv_max_key_bytes");
    cfg->kv_max_value = int_field(L, t, "kv_max_value_bytes");
    lua_getfield(L, t, "log_level");
    const char *level = lua_tostring(L, -1);
    cfg->log_level = level ? qc_log_parse_level(level) : QC_LOG_INFO;
    lua_pop(L, 1);
    lua_getfield(L, t, "log_format");
    const char *format = lua_tostring(L, -1);
    cfg->log_format = format ? qc_log_parse_format(format) : QC_LOG_TEXT;
    lua_pop(L, 1);
    cfg->role = role_field(L, t);
    cfg->priority = int_field(L, t, "priority");
    cfg->preempt = bool_field(L, t, "preempt");
    cfg->preempt_delay_ms = int_field(L, t, "preempt_delay_ms");
    cfg->max_voters = int_field(L, t, "max_voters");
    cfg->leave_on_stop = bool_field(L, t, "leave_on_stop");
    cfg->reap_after_ms = reap_ms(L, t);
    int rc = utf8_field(L, t, "listen_host", "listen_host", err, errlen);
    if (rc == QC_OK) rc = utf8_field(L, t, "api_host", "api_host", err, errlen);
    if (rc == QC_OK) rc = json_field(L, t, "metadata", "metadata", &cfg->metadata, err, errlen);
    if (rc == QC_OK) rc = copy_peers(L, t, cfg, err, errlen);
    if (rc == QC_OK) rc = copy_join(L, t, cfg, err, errlen);
    if (rc == QC_OK) {
        rc = copy_checks(L, t, cfg);
        if (rc == QC_EINVAL) snprintf(err, errlen, "checks: the checker left a check incomplete");
    }
    return rc;
}

/* Loads the raw value from path (json: text is the config's JSON instead of
 * the file's), checks it and copies it into cfg; dir resolves relative paths. */
static int load_checked(lua_State *L, const char *path, const char *dir, const char *text,
                        size_t len, qc_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    if (!lua_checkstack(L, 16)) {
        snprintf(err, errlen, "%s: out of memory", path);
        return QC_ENOMEM;
    }
    int top = lua_gettop(L);
    cfg->path = strdup(path);
    cfg->dir = dir ? strdup(dir) : dir_of(path);
    if (!cfg->path || !cfg->dir) {
        qc_config_free(cfg);
        snprintf(err, errlen, "%s: out of memory", path);
        return QC_ENOMEM;
    }
    int rc;
    if (text)
        rc = decode_json(L, path, text, len, err, errlen);
    else
        rc =
            ends_with_json(path) ? load_json(L, path, err, errlen) : load_lua(L, path, err, errlen);
    if (rc == QC_OK) rc = run_checker(L, path, cfg->dir, text != NULL, err, errlen);
    if (rc == QC_OK) {
        char msg[256];
        rc = copy_config(L, lua_gettop(L), cfg, msg, sizeof msg);
        if (rc != QC_OK)
            snprintf(err, errlen, "%s: %s", path, rc == QC_ENOMEM ? "out of memory" : msg);
    }
    if (rc == QC_OK) lua_setfield(L, LUA_REGISTRYINDEX, "qcluster.config");
    lua_settop(L, top);
    if (rc != QC_OK) qc_config_free(cfg);
    return rc;
}

int qc_config_load(lua_State *L, const char *path, qc_config *cfg, char *err, size_t errlen)
{
    return load_checked(L, path, NULL, NULL, 0, cfg, err, errlen);
}

int qc_config_load_json(lua_State *L, const char *name, const char *dir, const char *json,
                        size_t len, qc_config *cfg, char *err, size_t errlen)
{
    return load_checked(L, name, dir, json, len, cfg, err, errlen);
}

/* Zeroes a key's text before it is freed. */
static void wipe_free(char *key)
{
    if (!key) return;
    volatile char *s = key;
    while (*s) *s++ = '\0';
    free(key);
}

void qc_config_free(qc_config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        free(cfg->peers[i].identifier);
        free(cfg->peers[i].host);
        free(cfg->peers[i].metadata);
    }
    free(cfg->peers);
    free(cfg->path);
    free(cfg->dir);
    free(cfg->identifier);
    free(cfg->listen_host);
    free(cfg->metadata);
    free(cfg->api_host);
    free(cfg->data_dir);
    free(cfg->hooks_path);
    /* The keys should not linger in freed memory. */
    wipe_free(cfg->secret);
    wipe_free(cfg->secret_previous);
    free(cfg->api_token);
    free(cfg->api_tls_cert);
    free(cfg->api_tls_key);
    free(cfg->api_tls_client_ca);
    for (size_t i = 0; i < cfg->n_join; i++) free(cfg->join[i]);
    free(cfg->join);
    for (size_t i = 0; i < cfg->n_checks; i++) {
        free(cfg->checks[i].name);
        free(cfg->checks[i].target);
        free(cfg->checks[i].host);
        free(cfg->checks[i].path);
    }
    free(cfg->checks);
    memset(cfg, 0, sizeof *cfg);
}
