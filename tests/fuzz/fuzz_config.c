/* libFuzzer target: qc_config_load on a config file written from the input,
 * built twice (mk/fuzz.mk): FUZZ_CONFIG_EXT ".json" (yajl through luajson.c,
 * then lua/config.lua's checks) and ".lua" (a Lua chunk, then the checks).
 * Each input gets a fresh lua_State with a 64 MiB allocation cap and, as
 * luahost.c does for configs, a count hook with a deadline (here 250 ms) so
 * a chunk that loops ends with an error. The state is a sandbox: no os
 * functions but time/clock/date/getenv, io.open reads only inside the
 * scratch directory, no require/package/debug/dofile/loadfile, load takes
 * text only, print is silent. Properties: the Lua stack is balanced, and a
 * loaded config has every string the struct promises. Test-only. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/common.h"
#include "base/log.h"
#include "fuzz.h"
#include "lua/config.h"

#ifndef FUZZ_CONFIG_EXT
#define FUZZ_CONFIG_EXT ".json"
#endif
#define MEM_CAP (64u << 20)
#define BUDGET_MS 250
#define COUNT 1000

static size_t mem_used;
static uint64_t deadline_ms;

static void *cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        mem_used -= old;
        return NULL;
    }
    if (nsize > old && mem_used + (nsize - old) > MEM_CAP) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) mem_used = mem_used - old + nsize;
    return p;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* As luahost.c's budget_hook: past the deadline, fire on every instruction
 * so that a pcall that swallows the error meets it again. */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (now_ms() < deadline_ms) return;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "time budget of %d ms exceeded", BUDGET_MS);
}

static int quiet_print(lua_State *L)
{
    (void)L;
    return 0;
}

/* io.open(path [, mode]): read modes only, paths inside the scratch dir. */
static int sandbox_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *mode = luaL_optstring(L, 2, "r");
    const char *dir = fuzz_scratch_dir();
    size_t dl = strlen(dir);
    if (mode[0] != 'r' || strchr(mode, '+') || strncmp(path, dir, dl) != 0 || path[dl] != '/' ||
        strstr(path, "..")) {
        lua_pushnil(L);
        lua_pushstring(L, "outside the fuzz sandbox");
        return 2;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* load(chunk [, name [, mode [, env]]]) with mode "t" always: a binary
 * chunk can crash Lua by design, and configs are trusted code; the file
 * itself is loaded text-only by config.c. */
static int text_load(lua_State *L)
{
    lua_settop(L, 4);
    lua_pushstring(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    int envs = lua_isnone(L, 5) || lua_isnil(L, 5) ? 3 : 4;
    lua_call(L, envs, LUA_MULTRET);
    return lua_gettop(L);
}

static void keep_only(lua_State *L, const char *lib, const char *const *names)
{
    lua_newtable(L);
    lua_getglobal(L, lib);
    for (; *names; names++) {
        lua_getfield(L, -1, *names);
        lua_setfield(L, -3, *names);
    }
    lua_pop(L, 1);
    lua_setglobal(L, lib);
}

static void sandbox(lua_State *L)
{
    static const char *const os_keep[] = {"time", "clock", "date", "getenv", "difftime", NULL};
    static const char *const gone[] = {"require", "package", "debug", "dofile", "loadfile", NULL};
    keep_only(L, "os", os_keep);
    for (const char *const *g = gone; *g; g++) {
        lua_pushnil(L);
        lua_setglobal(L, *g);
    }
    lua_newtable(L);
    lua_getglobal(L, "io");
    lua_getfield(L, -1, "open");
    lua_pushcclosure(L, sandbox_open, 1);
    lua_setfield(L, -3, "open");
    lua_pop(L, 1);
    lua_setglobal(L, "io");
    lua_pushcfunction(L, quiet_print);
    lua_setglobal(L, "print");
    lua_getglobal(L, "load");
    lua_pushcclosure(L, text_load, 1);
    lua_setglobal(L, "load");
}

static void check_config(const qc_config *c)
{
    FUZZ_CHECK(c->path && c->dir && c->identifier && c->listen_host && c->metadata);
    FUZZ_CHECK(c->api_host && c->data_dir);
    FUZZ_CHECK(c->listen_port >= 1 && c->listen_port <= 65535);
    FUZZ_CHECK(c->api_port >= 0 && c->api_port <= 65535);
    FUZZ_CHECK(c->heartbeat_ms > 0 && c->election_timeout_ms >= 3 * c->heartbeat_ms);
    for (size_t i = 0; i < c->n_peers; i++) {
        const qc_peer_conf *p = &c->peers[i];
        FUZZ_CHECK(p->identifier && p->host && p->metadata);
        FUZZ_CHECK(p->port >= 1 && p->port <= 65535);
        FUZZ_CHECK(strcmp(p->identifier, c->identifier) != 0);
    }
    for (size_t i = 0; i < c->n_join; i++) FUZZ_CHECK(c->join[i] != NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    qc_log_set_level(QC_LOG_ERROR + 1); /* quiet */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_scratch_dir();
    if (!dir) return 0;
    char path[256];
    snprintf(path, sizeof path, "%s/node%s", dir, FUZZ_CONFIG_EXT);
    FUZZ_CHECK(fuzz_write_file(path, data, size) == 0);
    mem_used = 0;
    lua_State *L = lua_newstate(cap_alloc, NULL);
    if (!L) return 0;
    luaL_openlibs(L);
    sandbox(L);
    deadline_ms = now_ms() + BUDGET_MS;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, COUNT);
    int top = lua_gettop(L);
    qc_config cfg;
    char err[512] = "";
    int rc = qc_config_load(L, path, &cfg, err, sizeof err);
    lua_sethook(L, NULL, 0, 0);
    FUZZ_CHECK(lua_gettop(L) == top);
    if (rc == QC_OK) {
        check_config(&cfg);
        lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.config");
        FUZZ_CHECK(lua_istable(L, -1));
        lua_pop(L, 1);
        qc_config_free(&cfg);
    } else {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(rc == QC_EINVAL || rc == QC_EIO || rc == QC_ENOMEM);
    }
    lua_close(L);
    FUZZ_CHECK(mem_used == 0);
    return 0;
}
