/* Test-only Lua module over the wire codec (src/core/wire.c) and frame sealing
 * (src/net/auth.c): encode a message or hello table to a frame string, decode
 * frames or bare payloads back to tables (nil plus an error on malformed
 * input), derive keys, make key exchanges, and seal or open version-3
 * frames, so that specs can speak the encrypted protocol by hand. It must never be linked into the
 * agent, and holds no state between calls. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "base/common.h"
#include "core/wire.h"
#include "lua_fields.h"
#include "net/auth.h"

static lua_Integer field_int(lua_State *L, int idx, const char *name)
{
    lua_getfield(L, idx, name);
    lua_Integer v = luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);
    return v;
}

static int push_error(lua_State *L, const char *what, int rc)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, qc_strerror(rc));
    return 2;
}

static int push_buf(lua_State *L, qc_buf *b, int rc)
{
    if (rc) {
        qc_buf_free(b);
        return push_error(L, "encode", rc);
    }
    lua_pushlstring(L, (const char *)b->data, b->len);
    qc_buf_free(b);
    return 1;
}

static int encode_hello(lua_State *L)
{
    lua_getfield(L, 1, "identifier");
    lua_getfield(L, 1, "metadata");
    const char *id = luaL_checkstring(L, -2);
    const char *meta = luaL_optstring(L, -1, "{}");
    qc_buf b = {0};
    int rc = qc_wire_encode_hello(id, meta, &b);
    return push_buf(L, &b, rc);
}

/* Reads t.entries into entries[] (at most max); data points into Lua strings
 * that stay alive on the stack until the caller returns. */
static uint32_t read_entries(lua_State *L, qc_entry *entries, uint32_t max)
{
    lua_getfield(L, 1, "entries");
    if (lua_isnil(L, -1)) return 0;
    luaL_checktype(L, -1, LUA_TTABLE);
    int tidx = lua_gettop(L);
    uint32_t n = (uint32_t)luaL_len(L, tidx);
    if (n > max) luaL_error(L, "too many entries (max %d)", (int)max);
    luaL_checkstack(L, (int)n + 8, "entries");
    for (uint32_t i = 0; i < n; i++) {
        lua_rawgeti(L, tidx, (lua_Integer)i + 1);
        int e = lua_gettop(L);
        luaL_checktype(L, e, LUA_TTABLE);
        entries[i].term = (uint64_t)field_int(L, e, "term");
        entries[i].index = (uint64_t)field_int(L, e, "index");
        entries[i].type = (uint32_t)field_int(L, e, "type");
        size_t len = 0;
        lua_getfield(L, e, "data");
        const char *d = lua_isnil(L, -1) ? "" : luaL_checklstring(L, -1, &len);
        entries[i].data = (uint8_t *)d;
        entries[i].len = (uint32_t)len;
        /* keep the data string on the stack, drop the entry table below it */
        lua_remove(L, e);
    }
    return n;
}

static int encode_msg(lua_State *L)
{
    enum { MAX_ENTRIES = 256 };
    qc_entry entries[MAX_ENTRIES];
    qc_msg m = {0};
    m.type = (uint8_t)field_int(L, 1, "type");
    m.flags = (uint8_t)field_int(L, 1, "flags");
    m.reject = (uint8_t)field_int(L, 1, "reject");
    m.from = (uint64_t)field_int(L, 1, "from");
    m.to = (uint64_t)field_int(L, 1, "to");
    m.term = (uint64_t)field_int(L, 1, "term");
    m.ctx = (uint64_t)field_int(L, 1, "ctx");
    m.index = (uint64_t)field_int(L, 1, "index");
    m.log_term = (uint64_t)field_int(L, 1, "log_term");
    m.commit = (uint64_t)field_int(L, 1, "commit");
    m.n_entries = read_entries(L, entries, MAX_ENTRIES);
    m.entries = m.n_entries ? entries : NULL;
    qc_buf b = {0};
    int rc = qc_wire_encode_msg(&m, &b);
    return push_buf(L, &b, rc);
}

/* encode(t): t.kind == "hello" encodes a hello, anything else a message. */
static int l_encode(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kind");
    int hello = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "hello") == 0;
    lua_pop(L, 1);
    return hello ? encode_hello(L) : encode_msg(L);
}

static void push_msg(lua_State *L, const qc_msg *m)
{
    lua_createtable(L, 0, 12);
    lua_pushstring(L, "raft");
    lua_setfield(L, -2, "kind");
    set_int(L, "type", m->type);
    set_int(L, "flags", m->flags);
    set_int(L, "reject", m->reject);
    set_int(L, "from", m->from);
    set_int(L, "to", m->to);
    set_int(L, "term", m->term);
    set_int(L, "ctx", m->ctx);
    set_int(L, "index", m->index);
    set_int(L, "log_term", m->log_term);
    set_int(L, "commit", m->commit);
    lua_createtable(L, (int)m->n_entries, 0);
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const qc_entry *e = &m->entries[i];
        lua_createtable(L, 0, 4);
        set_int(L, "term", e->term);
        set_int(L, "index", e->index);
        set_int(L, "type", e->type);
        lua_pushlstring(L, e->data ? (const char *)e->data : "", e->len);
        lua_setfield(L, -2, "data");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "entries");
}

static int decode_payload(lua_State *L, int type, const uint8_t *p, size_t len)
{
    if (type == QC_FRAME_HELLO) {
        qc_hello h;
        int rc = qc_wire_decode_hello(p, (uint32_t)len, &h);
        if (rc) return push_error(L, "hello", rc);
        lua_createtable(L, 0, 3);
        lua_pushstring(L, "hello");
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, h.identifier);
        lua_setfield(L, -2, "identifier");
        lua_pushstring(L, h.metadata);
        lua_setfield(L, -2, "metadata");
        qc_wire_hello_free(&h);
        return 1;
    }
    qc_msg m;
    int rc = qc_wire_decode_msg(p, (uint32_t)len, &m);
    if (rc) return push_error(L, "message", rc);
    push_msg(L, &m);
    qc_wire_msg_free(&m);
    return 1;
}

/* decode(frame): exactly one whole frame, else nil and an error. */
static int l_decode(lua_State *L)
{
    size_t len;
    const uint8_t *s = (const uint8_t *)luaL_checklstring(L, 1, &len);
    if (len < QC_WIRE_HEADER) return push_error(L, "header", QC_EINVAL);
    uint8_t type;
    uint32_t plen;
    int rc = qc_wire_header(s, &type, &plen);
    if (rc) return push_error(L, "header", rc);
    if (len - QC_WIRE_HEADER != plen) return push_error(L, "length", QC_EINVAL);
    rc = qc_wire_check(s, s + QC_WIRE_HEADER, plen);
    if (rc) return push_error(L, "crc", rc);
    return decode_payload(L, type, s + QC_WIRE_HEADER, plen);
}

/* decode_payload(kind, payload): kind is "hello" or "raft". */
static int l_decode_payload(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    size_t len;
    const uint8_t *s = (const uint8_t *)luaL_checklstring(L, 2, &len);
    int type = strcmp(kind, "hello") == 0 ? QC_FRAME_HELLO : QC_FRAME_RAFT;
    return decode_payload(L, type, s, len);
}

/* health_encode{seq=, healthy=, checks={{name, passing}, ...}}: a HEALTH
 * payload, or nil and an error. */
static int l_health_encode(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    qc_wire_health h = {0};
    h.seq = (uint64_t)field_int(L, 1, "seq");
    h.healthy = (uint8_t)field_int(L, 1, "healthy");
    lua_getfield(L, 1, "checks");
    lua_Integer n = lua_istable(L, -1) ? luaL_len(L, -1) : 0;
    if (n > QC_WIRE_HEALTH_CHECKS) return push_error(L, "encode", QC_EINVAL);
    h.n_checks = (uint8_t)n;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -1, i);
        size_t len;
        lua_getfield(L, -1, "name");
        const char *name = luaL_checklstring(L, -1, &len);
        if (len > QC_WIRE_HEALTH_NAME) return push_error(L, "encode", QC_EINVAL);
        memcpy(h.checks[i - 1].name, name, len + 1);
        lua_pop(L, 1);
        h.checks[i - 1].passing = (uint8_t)field_int(L, -1, "passing");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    qc_buf b = {0};
    return push_buf(L, &b, qc_wire_encode_health(&h, &b));
}

/* health_decode(payload): {seq, healthy, checks = {{name, passing}}}, or
 * nil and an error. */
static int l_health_decode(lua_State *L)
{
    size_t len;
    const uint8_t *s = (const uint8_t *)luaL_checklstring(L, 1, &len);
    qc_wire_health h;
    int rc = qc_wire_decode_health(s, len, &h);
    if (rc) return push_error(L, "health", rc);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)h.seq);
    lua_setfield(L, -2, "seq");
    lua_pushinteger(L, h.healthy);
    lua_setfield(L, -2, "healthy");
    lua_createtable(L, h.n_checks, 0);
    for (int i = 0; i < h.n_checks; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, h.checks[i].name);
        lua_setfield(L, -2, "name");
        lua_pushinteger(L, h.checks[i].passing);
        lua_setfield(L, -2, "passing");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "checks");
    return 1;
}

/* frame(type, payload): wraps any payload in a header with a valid CRC. */
static int l_frame(lua_State *L)
{
    lua_Integer type = luaL_checkinteger(L, 1);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    uint32_t crc = qc_crc32c(0, p, len);
    uint8_t h[QC_WIRE_HEADER] = {QC_WIRE_MAGIC0, QC_WIRE_MAGIC1, QC_WIRE_VERSION, (uint8_t)type};
    for (int i = 0; i < 4; i++) {
        h[4 + i] = (uint8_t)((uint32_t)len >> (24 - 8 * i));
        h[8 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, (const char *)h, sizeof h);
    luaL_addlstring(&b, p, len);
    luaL_pushresult(&b);
    return 1;
}

/* header(s): type and payload length, or nil and an error. */
static int l_header(lua_State *L)
{
    size_t len;
    const uint8_t *s = (const uint8_t *)luaL_checklstring(L, 1, &len);
    if (len < QC_WIRE_HEADER) return push_error(L, "header", QC_EINVAL);
    uint8_t type;
    uint32_t plen;
    int rc = qc_wire_header(s, &type, &plen);
    if (rc) return push_error(L, "header", rc);
    lua_pushinteger(L, type);
    lua_pushinteger(L, plen);
    return 2;
}

/* header_v(s): version, type and payload length of either version, or nil
 * and an error. */
static int l_header_v(lua_State *L)
{
    size_t len;
    const uint8_t *s = (const uint8_t *)luaL_checklstring(L, 1, &len);
    if (len < QC_WIRE_HEADER) return push_error(L, "header", QC_EINVAL);
    uint8_t version, type;
    uint32_t plen;
    int rc = qc_wire_header_v(s, &version, &type, &plen);
    if (rc) return push_error(L, "header", rc);
    lua_pushinteger(L, version);
    lua_pushinteger(L, type);
    lua_pushinteger(L, plen);
    return 3;
}

static const uint8_t *check_key(lua_State *L, int idx)
{
    size_t len;
    const char *k = luaL_checklstring(L, idx, &len);
    if (len != QC_AUTH_KEY) luaL_error(L, "a key is %d bytes", QC_AUTH_KEY);
    return (const uint8_t *)k;
}

/* "C", "D" or "A" (auth.h's directions). */
static uint8_t check_dir(lua_State *L, int idx)
{
    const char *d = luaL_checkstring(L, idx);
    if (strlen(d) != 1 || !strchr("CDA", d[0])) luaL_error(L, "direction is C, D or A");
    return (uint8_t)d[0];
}

/* key(secret): the cluster key of a secret. */
static int l_key(lua_State *L)
{
    size_t len;
    const char *secret = luaL_checklstring(L, 1, &len);
    if (qc_auth_init()) return luaL_error(L, "sodium_init failed");
    uint8_t key[QC_AUTH_KEY];
    qc_auth_derive(secret, len, key);
    lua_pushlstring(L, (const char *)key, sizeof key);
    return 1;
}

/* tag(key, dir, seq, data): a CHALLENGE's tag of data. */
static int l_tag(lua_State *L)
{
    const uint8_t *key = check_key(L, 1);
    uint8_t dir = check_dir(L, 2);
    uint64_t seq = (uint64_t)luaL_checkinteger(L, 3);
    size_t len;
    const char *d = luaL_checklstring(L, 4, &len);
    uint8_t tag[QC_WIRE_TAG];
    qc_auth_tag(key, dir, seq, (const uint8_t *)d, len, tag);
    lua_pushlstring(L, (const char *)tag, sizeof tag);
    return 1;
}

/* kx_keypair(): a fresh ephemeral key pair, public then secret. */
static int l_kx_keypair(lua_State *L)
{
    if (qc_auth_init()) return luaL_error(L, "sodium_init failed");
    qc_auth_kx kx;
    qc_auth_kx_keypair(&kx);
    lua_pushlstring(L, (const char *)kx.pk, sizeof kx.pk);
    lua_pushlstring(L, (const char *)kx.sk, sizeof kx.sk);
    return 2;
}

/* session(key, dialer, pk, sk, peer_pk): the session keys of a connection,
 * the dialer's frames' then the acceptor's; nil and an error for a bad
 * public key. */
static int l_session(lua_State *L)
{
    const uint8_t *key = check_key(L, 1);
    int dialer = lua_toboolean(L, 2);
    qc_auth_kx kx;
    size_t lp, ls, lq;
    const char *pk = luaL_checklstring(L, 3, &lp), *sk = luaL_checklstring(L, 4, &ls);
    const char *peer = luaL_checklstring(L, 5, &lq);
    if (lp != QC_WIRE_KX || ls != QC_WIRE_KX || lq != QC_WIRE_KX)
        return luaL_error(L, "a kx key is %d bytes", QC_WIRE_KX);
    memcpy(kx.pk, pk, QC_WIRE_KX);
    memcpy(kx.sk, sk, QC_WIRE_KX);
    uint8_t shared[QC_AUTH_SHARED], kd[QC_AUTH_KEY], ka[QC_AUTH_KEY];
    int rc = qc_auth_kx_shared(dialer, &kx, (const uint8_t *)peer, shared);
    if (rc) return push_error(L, "kx", rc);
    qc_auth_session_keys(key, shared, kd, ka);
    lua_pushlstring(L, (const char *)kd, sizeof kd);
    lua_pushlstring(L, (const char *)ka, sizeof ka);
    return 2;
}

/* seal(frame, key, dir, seq [, ad]): the version-3 form of a whole version-1
 * frame (ad: the bytes in clear, the header by default). */
static int l_seal(lua_State *L)
{
    size_t len;
    const char *f = luaL_checklstring(L, 1, &len);
    const uint8_t *key = check_key(L, 2);
    uint8_t dir = check_dir(L, 3);
    uint64_t seq = (uint64_t)luaL_checkinteger(L, 4);
    size_t ad = (size_t)luaL_optinteger(L, 5, QC_WIRE_HEADER);
    qc_buf b = {0};
    int rc = qc_buf_append(&b, f, len);
    if (!rc) rc = qc_auth_seal(&b, 0, ad, key, dir, seq);
    return push_buf(L, &b, rc);
}

/* open(frame, key, dir, seq [, ad]): the header and decrypted payload of
 * one whole version-3 frame sealed for (dir, seq) under key; else nil and
 * an error. */
static int l_open(lua_State *L)
{
    size_t len;
    const uint8_t *f = (const uint8_t *)luaL_checklstring(L, 1, &len);
    const uint8_t *key = check_key(L, 2);
    uint8_t dir = check_dir(L, 3);
    uint64_t seq = (uint64_t)luaL_checkinteger(L, 4);
    size_t ad = (size_t)luaL_optinteger(L, 5, QC_WIRE_HEADER);
    if (len < QC_WIRE_HEADER + QC_WIRE_MAC) return push_error(L, "length", QC_EINVAL);
    uint8_t version, type;
    uint32_t plen;
    int rc = qc_wire_header_v(f, &version, &type, &plen);
    if (rc) return push_error(L, "header", rc);
    if (version != QC_WIRE_VERSION_SEALED) return push_error(L, "version", QC_EINVAL);
    if (len != QC_WIRE_HEADER + plen + QC_WIRE_MAC) return push_error(L, "length", QC_EINVAL);
    qc_buf b = {0};
    rc = qc_buf_append(&b, f, len);
    if (!rc)
        rc = qc_auth_open(key, dir, seq, ad, b.data, len - QC_WIRE_MAC, b.data + len - QC_WIRE_MAC);
    if (rc) {
        qc_buf_free(&b);
        return push_error(L, "mac", rc);
    }
    b.len -= QC_WIRE_MAC;
    return push_buf(L, &b, QC_OK);
}

static int l_crc32c(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, qc_crc32c(0, s, len));
    return 1;
}

static int l_hash_id(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)qc_hash_id(luaL_checkstring(L, 1)));
    return 1;
}

int luaopen_qcwire(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"encode", l_encode},
        {"decode", l_decode},
        {"decode_payload", l_decode_payload},
        {"frame", l_frame},
        {"header", l_header},
        {"crc32c", l_crc32c},
        {"hash_id", l_hash_id},
        {"header_v", l_header_v},
        {"key", l_key},
        {"session", l_session},
        {"tag", l_tag},
        {"kx_keypair", l_kx_keypair},
        {"seal", l_seal},
        {"open", l_open},
        {"health_encode", l_health_encode},
        {"health_decode", l_health_decode},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushinteger(L, QC_WIRE_MAX_PAYLOAD);
    lua_setfield(L, -2, "MAX_PAYLOAD");
    lua_pushinteger(L, QC_WIRE_HEADER);
    lua_setfield(L, -2, "HEADER");
    lua_pushinteger(L, QC_MSG_TYPE_MAX);
    lua_setfield(L, -2, "MSG_TYPE_MAX");
    lua_pushinteger(L, QC_WIRE_TAG);
    lua_setfield(L, -2, "TAG");
    lua_pushinteger(L, QC_WIRE_MAC);
    lua_setfield(L, -2, "MAC");
    lua_pushinteger(L, QC_WIRE_KX);
    lua_setfield(L, -2, "KX");
    lua_pushinteger(L, QC_WIRE_VERSION_AUTH);
    lua_setfield(L, -2, "VERSION_AUTH");
    lua_pushinteger(L, QC_WIRE_VERSION_SEALED);
    lua_setfield(L, -2, "VERSION_SEALED");
    return 1;
}
