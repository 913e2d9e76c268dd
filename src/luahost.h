/* The Lua host: owns the lua_State, registers the qcluster module, loads the
 * config and the hooks, and runs hooks one at a time in event order with a
 * time budget. A failing or runaway hook is stopped, logged and counted; it
 * can never stall the loop for longer than its budget, nor crash the agent. */
#ifndef QC_LUAHOST_H
#define QC_LUAHOST_H

#include <ev.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "view.h"

typedef struct qc_lua qc_lua;

/* One hook call. Strings and peers are copied when queued. */
typedef struct qc_hook_event {
    const char *hook;                    /* "on_elected", "on_peer_up", ... */
    uint64_t term;                       /* 0: no term field in the argument */
    const char *reason;                  /* NULL: none */
    const qc_peer_info *self;            /* NULL: none */
    const qc_peer_info *leader;          /* NULL: nil */
    const qc_peer_info *previous_leader; /* NULL: nil */
    /* on_peer_up/down, on_member_*: the argument is this Peer itself. */
    const qc_peer_info *peer;
} qc_hook_event;

/* Creates the state with the qcluster module (global and require-able).
 * view answers is_leader(), get_leader_info(), ...; metrics may be NULL. */
int qc_lua_new(struct ev_loop *loop, const qc_view *view, qc_metrics *metrics, qc_lua **out);
/* Stops timers and running commands (killing them), closes the state. */
void qc_lua_free(qc_lua *h);

/* Loads the config into this state (see qc_config_load), then the hooks:
 * inline on_* functions of a Lua config, then the hooks file if any. */
int qc_lua_load(qc_lua *h, const char *path, qc_config *cfg, char *err, size_t errlen);
/* Reloads the hooks file (SIGHUP); on error keeps the old hooks. */
int qc_lua_reload_hooks(qc_lua *h, char *err, size_t errlen);

/* Queues a hook call; hooks run from the loop, in queue order, one at a
 * time, and never inside this call. A hook that is not defined is skipped. */
int qc_lua_fire(qc_lua *h, const qc_hook_event *ev);
/* Runs every queued hook now (used at stop, so on_stop runs last). */
void qc_lua_drain(qc_lua *h);
/* Number of hooks waiting (tests). */
size_t qc_lua_pending(const qc_lua *h);

#endif
