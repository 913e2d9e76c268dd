/* JSON text <-> Lua values with yajl. Parsing goes through yajl_tree; a
 * failed parse is re-run through a bare yajl handle only to find the line of
 * the error. Lua work runs under lua_pcall so a memory error cannot leak the
 * yajl tree or generator. Depth is limited; no global state. */
#include "lua/luajson.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "base/common.h"
#include "base/json.h"

#define QC_JSON_MAX_DEPTH 64

/* ---- decoding ---------------------------------------------------------- */

static void push_tree(lua_State *L, yajl_val v, int depth);

static void push_number(lua_State *L, yajl_val v)
{
    if (YAJL_IS_INTEGER(v)) {
        lua_pushinteger(L, (lua_Integer)YAJL_GET_INTEGER(v));
    } else if (YAJL_IS_DOUBLE(v)) {
        lua_pushnumber(L, YAJL_GET_DOUBLE(v));
    } else {
        /* Out of range for both: let Lua read the text (it saturates). */
        lua_pushnumber(L, strtod(YAJL_GET_NUMBER(v), NULL));
    }
}

static void push_object(lua_State *L, yajl_val v, int depth)
{
    size_t n = v->u.object.len;
    lua_createtable(L, 0, n > INT32_MAX ? 0 : (int)n);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, v->u.object.keys[i]);
        push_tree(L, v->u.object.values[i], depth + 1);
        lua_rawset(L, -3);
    }
}

static void push_array(lua_State *L, yajl_val v, int depth)
{
    size_t n = v->u.array.len;
    lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_tree(L, v->u.array.values[i], depth + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static void push_tree(lua_State *L, yajl_val v, int depth)
{
    if (depth > QC_JSON_MAX_DEPTH) luaL_error(L, "JSON nested too deeply");
    luaL_checkstack(L, 4, "JSON nested too deeply");
    if (YAJL_IS_STRING(v))
        lua_pushstring(L, YAJL_GET_STRING(v));
    else if (YAJL_IS_NUMBER(v))
        push_number(L, v);
    else if (YAJL_IS_OBJECT(v))
        push_object(L, v, depth);
    else if (YAJL_IS_ARRAY(v))
        push_array(L, v, depth);
    else if (YAJL_IS_TRUE(v))
        lua_pushboolean(L, 1);
    else if (YAJL_IS_FALSE(v))
        lua_pushboolean(L, 0);
    else
        lua_pushlightuserdata(L, NULL);
}

static int push_tree_protected(lua_State *L)
{
    yajl_val v = lua_touserdata(L, 1);
    push_tree(L, v, 0);
    return 1;
}

static int line_at(const char *text, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off; i++)
        if (text[i] == '\n') line++;
    return line;
}

/* Copies the first line of a yajl message, without its "parse error: ". */
static void copy_first_line(char *err, size_t errlen, const char *msg)
{
    static const char prefix[] = "parse error: ";
    if (strncmp(msg, prefix, sizeof prefix - 1) == 0) msg += sizeof prefix - 1;
    size_t n = strcspn(msg, "\n");
    while (n > 0 && (msg[n - 1] == ' ' || msg[n - 1] == '\r')) n--;
    snprintf(err, errlen, "%.*s", (int)n, msg);
}

/* Re-parses text with a bare handle to learn where the error is. */
static void locate_error(const char *text, size_t len, int *line, char *err, size_t errlen)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    if (!h) return;
    yajl_config(h, yajl_allow_comments, 1); /* as yajl_tree_parse does */
    const unsigned char *u = (const unsigned char *)text;
    size_t off = len;
    yajl_status st = yajl_parse(h, u, len);
    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
        while (off > 0 && (text[off - 1] == '\n' || text[off - 1] == ' ' || text[off - 1] == '\t' ||
                           text[off - 1] == '\r'))
            off--;
    } else {
        off = yajl_get_bytes_consumed(h);
    }
    if (st != yajl_status_ok) {
        unsigned char *msg = yajl_get_error(h, 0, u, len);
        if (msg) {
            copy_first_line(err, errlen, (const char *)msg);
            yajl_free_error(h, msg);
        }
        if (line) *line = line_at(text, off);
    }
    yajl_free(h);
}

int qc_luajson_decode(lua_State *L, const char *text, size_t len, int *line, char *err,
                      size_t errlen)
{
    if (line) *line = 1;
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        if (line) *line = line_at(text, (size_t)(nul - text));
        snprintf(err, errlen, "NUL byte in JSON text");
        return QC_EINVAL;
    }
    /* Before yajl: it passes overlong forms and surrogates, and decodes a
     * lone surrogate escape into bytes that are not UTF-8. The message
     * names the key, so no line. */
    if (qc_json_check_utf8(text, len, NULL, 1, err, errlen) != QC_OK) {
        if (line) *line = 0;
        return QC_EINVAL;
    }
    char *buf = malloc(len + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return QC_ENOMEM;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    char ebuf[256] = "";
    yajl_val v = yajl_tree_parse(buf, ebuf, sizeof ebuf);
    if (!v) {
        copy_first_line(err, errlen, ebuf[0] ? ebuf : "invalid JSON");
        locate_error(buf, len, line, err, errlen);
        free(buf);
        return QC_EINVAL;
    }
    int rc = QC_OK;
    if (!lua_checkstack(L, 3)) {
        snprintf(err, errlen, "out of memory");
        rc = QC_ENOMEM;
    } else {
        lua_pushcfunction(L, push_tree_protected);
        lua_pushlightuserdata(L, v);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            const char *m = lua_tostring(L, -1);
            snprintf(err, errlen, "%s", m ? m : "cannot decode JSON");
            lua_pop(L, 1);
            rc = QC_EINVAL;
        }
    }
    yajl_tree_free(v);
    free(buf);
    return rc;
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct enc {
    yajl_gen g;
    char path[256];
    size_t plen;
} enc;

typedef struct key_ref {
    const char *s;
    size_t len;
} key_ref;

static void enc_value(lua_State *L, enc *e, int idx, int depth);

static int enc_fail(lua_State *L, enc *e, const char *what)
{
    if (e->plen) return luaL_error(L, "%s: %s", e->path, what);
    return luaL_error(L, "%s", what);
}

/* yajl_gen's own check lets overlong forms and surrogates through. */
static void enc_string(lua_State *L, enc *e, const char *s, size_t len, int key)
{
    if (!qc_json_is_utf8((const unsigned char *)s, len))
        enc_fail(L, e, key ? "a key is not valid UTF-8" : "text is not valid UTF-8");
    if (yajl_gen_string(e->g, (const unsigned char *)s, len) != yajl_gen_status_ok)
        enc_fail(L, e, "cannot write JSON");
}

static void enc_check(lua_State *L, enc *e, yajl_gen_status st)
{
    if (st == yajl_gen_status_ok) return;
    if (st == yajl_gen_invalid_string)
        enc_fail(L, e, "text is not valid UTF-8");
    else
        enc_fail(L, e, "cannot write JSON");
}

static size_t path_set(enc *e, size_t old, int n)
{
    size_t room = sizeof e->path - old;
    e->plen = n < 0 ? old : (size_t)n >= room ? sizeof e->path - 1 : old + (size_t)n;
    return old;
}

static size_t path_key(enc *e, const char *s, size_t len)
{
    size_t old = e->plen;
    const char *dot = old ? "." : "";
    return path_set(e, old,
                    snprintf(e->path + old, sizeof e->path - old, "%s%.*s", dot, (int)len, s));
}

static size_t path_index(enc *e, lua_Integer i)
{
    size_t old = e->plen;
    return path_set(e, old, snprintf(e->path + old, sizeof e->path - old, "[%lld]", (long long)i));
}

static int key_cmp(const void *a, const void *b)
{
    const key_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static void enc_array(lua_State *L, enc *e, int idx, lua_Integer n, int depth)
{
    enc_check(L, e, yajl_gen_array_open(e->g));
    for (lua_Integer i = 1; i <= n; i++) {
        size_t old = path_index(e, i);
        lua_rawgeti(L, idx, i);
        enc_value(L, e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        e->path[e->plen = old] = '\0';
    }
    enc_check(L, e, yajl_gen_array_close(e->g));
}

static void enc_object(lua_State *L, enc *e, int idx, size_t n, int depth)
{
    /* A userdata, so a Lua error on the way cannot leak it. */
    key_ref *keys = lua_newuserdatauv(L, (n ? n : 1) * sizeof *keys, 0);
    size_t k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        keys[k].s = lua_tolstring(L, -2, &keys[k].len); /* string keys only */
        k++;
        lua_pop(L, 1);
    }
    qsort(keys, k, sizeof *keys, key_cmp);
    enc_check(L, e, yajl_gen_map_open(e->g));
    for (size_t i = 0; i < k; i++) {
        enc_string(L, e, keys[i].s, keys[i].len, 1);
        size_t old = path_key(e, keys[i].s, keys[i].len);
        lua_pushlstring(L, keys[i].s, keys[i].len);
        lua_rawget(L, idx);
        enc_value(L, e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        e->path[e->plen = old] = '\0';
    }
    enc_check(L, e, yajl_gen_map_close(e->g));
    lua_pop(L, 1);
}

static void enc_table(lua_State *L, enc *e, int idx, int depth)
{
    if (depth > QC_JSON_MAX_DEPTH) enc_fail(L, e, "nested too deeply (a cycle?)");
    luaL_checkstack(L, 6, "nested too deeply");
    size_t n = 0, n_str = 0;
    lua_Integer max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        n++;
        if (lua_type(L, -2) == LUA_TSTRING) {
            n_str++;
        } else if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
            lua_Integer i = lua_tointeger(L, -2);
            if (i > max) max = i;
        } else {
            lua_pop(L, 2);
            enc_fail(L, e, "expected string keys or a list 1..n, got a key of another kind");
        }
        lua_pop(L, 1);
    }
    if (n_str == n) {
        enc_object(L, e, idx, n, depth);
    } else if (n_str == 0 && (size_t)max == n) {
        enc_array(L, e, idx, max, depth);
    } else {
        enc_fail(L, e,
                 n_str ? "expected string keys or a list 1..n, got both"
                       : "expected a list 1..n, got one with holes");
    }
}

static void enc_number(lua_State *L, enc *e, int idx)
{
    if (lua_isinteger(L, idx)) {
        enc_check(L, e, yajl_gen_integer(e->g, (long long)lua_tointeger(L, idx)));
        return;
    }
    double d = lua_tonumber(L, idx);
    if (!isfinite(d)) enc_fail(L, e, "expected a finite number, got inf or nan");
    char buf[40];
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, d);
        if (strtod(buf, NULL) == d) break;
    }
    enc_check(L, e, yajl_gen_number(e->g, buf, strlen(buf)));
}

static void enc_value(lua_State *L, enc *e, int idx, int depth)
{
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: enc_check(L, e, yajl_gen_null(e->g)); break;
    case LUA_TBOOLEAN: enc_check(L, e, yajl_gen_bool(e->g, lua_toboolean(L, idx))); break;
    case LUA_TNUMBER: enc_number(L, e, idx); break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        enc_string(L, e, s, len, 0);
        break;
    case LUA_TTABLE: enc_table(L, e, idx, depth); break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            enc_check(L, e, yajl_gen_null(e->g));
            break;
        }
        /* fall through */
    default:
        lua_pushfstring(L, "expected a JSON value, got a %s", luaL_typename(L, idx));
        enc_fail(L, e, lua_tostring(L, -1));
    }
}

static int enc_protected(lua_State *L)
{
    enc *e = lua_touserdata(L, 1);
    enc_value(L, e, 2, 0);
    return 0;
}

int qc_luajson_encode(lua_State *L, int idx, char **out, size_t *len, char *err, size_t errlen)
{
    return qc_luajson_encode_at(L, idx, NULL, out, len, err, errlen);
}

int qc_luajson_encode_at(lua_State *L, int idx, const char *path, char **out, size_t *len,
                         char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    idx = lua_absindex(L, idx);
    enc e = {.g = yajl_gen_alloc(NULL), .plen = 0};
    if (!e.g || !lua_checkstack(L, 4)) {
        if (e.g) yajl_gen_free(e.g);
        snprintf(err, errlen, "out of memory");
        return QC_ENOMEM;
    }
    e.path[0] = '\0';
    if (path) path_set(&e, 0, snprintf(e.path, sizeof e.path, "%s", path));
    yajl_gen_config(e.g, yajl_gen_validate_utf8, 1);
    lua_pushcfunction(L, enc_protected);
    lua_pushlightuserdata(L, &e);
    lua_pushvalue(L, idx);
    int rc = QC_OK;
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", m ? m : "cannot encode JSON");
        lua_pop(L, 1);
        rc = QC_EINVAL;
    } else {
        const unsigned char *buf;
        size_t n;
        yajl_gen_get_buf(e.g, &buf, &n);
        *out = malloc(n + 1);
        if (!*out) {
            snprintf(err, errlen, "out of memory");
            rc = QC_ENOMEM;
        } else {
            memcpy(*out, buf, n);
            (*out)[n] = '\0';
            *len = n;
        }
    }
    yajl_gen_free(e.g);
    return rc;
}

/* ---- Lua functions ----------------------------------------------------- */

static int push_text(lua_State *L)
{
    lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
    return 1;
}

static int l_encode(lua_State *L)
{
    char err[256];
    char *out;
    size_t len;
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    if (qc_luajson_encode(L, 1, &out, &len, err, sizeof err) != QC_OK) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    /* Copy into Lua under pcall so a memory error cannot leak out. */
    lua_pushcfunction(L, push_text);
    lua_pushlightuserdata(L, out);
    lua_pushinteger(L, (lua_Integer)len);
    int rc = lua_pcall(L, 2, 1, 0);
    free(out);
    if (rc != LUA_OK) return lua_error(L);
    return 1;
}

static int l_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    char err[256];
    int line;
    if (qc_luajson_decode(L, text, len, &line, err, sizeof err) != QC_OK) {
        luaL_pushfail(L);
        if (line > 0)
            lua_pushfstring(L, "line %d: %s", line, err);
        else
            lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

void qc_luajson_register(lua_State *L)
{
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
}
