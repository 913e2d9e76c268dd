/* The Lua host: owns the lua_State, registers the qcluster module, loads the
 * config and the hooks, and runs hooks one at a time in event order with a
 * time budget. A failing or runaway hook is stopped, logged and counted; it
 * can never stall the loop for longer than its budget, nor crash the agent.
 *
 * qcluster.kv (through the view's kv_* functions; "kv: not available" when
 * the view has none):
 * - get(key) -> value, revision | nil and list([prefix]) -> {{key, value,
 *   revision}, ...} are LOCAL reads (stale=1): a hook must never block, and
 *   a linearizable read needs the leader. The view must answer them before
 *   its call returns, else they raise "kv.get: no local answer".
 * - put(key, value [, opts] [, cb]) and delete(key [, opts] [, cb]), with
 *   opts.cas (0: only if absent, N: only at revision N), never block; cb
 *   runs later through the hook queue (label "kv", hook budget) as
 *   cb(true, revision), cb(false, "revision mismatch", current_revision) or
 *   cb(false, message) ("no leader", "not found", ...).
 * - watch(prefix, fn) -> handle with :cancel(): fn(ev) runs (label
 *   "kv_watch", each under its own budget) after on_kv_change for every
 *   change whose key starts with prefix, in registration order. Watches made
 *   by hooks and callbacks live until cancelled, across reloads; those the
 *   hooks file makes while it loads are replaced by the next successful
 *   reload's (so a reload never doubles them).
 * Keys and values are Lua strings, binary safe.
 *
 * qcluster.set_metadata(t [, cb]) replaces this node's metadata through the
 * view's set_metadata ("set_metadata: membership is not available" when the
 * view has none). t must make a JSON object (a table with string keys; {}
 * clears): anything else raises a bad-argument error naming the path, and
 * nothing is sent. It never blocks; cb runs later through the hook queue
 * (label "set_metadata", hook budget), on the same path as kv.put's, as
 * cb(true) once committed or cb(false, message); a failure with no cb is
 * logged.
 *
 * Peers that carry state (peers(), self(), on_peer_*, on_member_*) have up,
 * role, voter and priority besides {identifier, host, port, metadata}. */
#ifndef QC_LUAHOST_H
#define QC_LUAHOST_H

#include <ev.h>
#include <stdint.h>

#include "base/metrics.h"
#include "core/view.h"
#include "lua/config.h"

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
    /* on_kv_change: key set (non-NULL) makes the argument {key, value,
     * revision}; value is nil unless has_value (a delete). Binary safe. The
     * same event also runs every matching qcluster.kv.watch function. */
    const uint8_t *key;
    size_t klen;
    const uint8_t *value;
    size_t vlen;
    int has_value;
    uint64_t revision;
    /* on_health_change: has_health set makes the argument carry {healthy,
     * check, status, output} (the check whose change made the node's
     * health change, its status "passing"/"failing" and its output). */
    int has_health, healthy;
    const char *check, *status, *output;
} qc_hook_event;

/* Creates the state with the qcluster module (global and require-able).
 * view answers is_leader(), get_leader_info(), ...; metrics may be NULL. */
int qc_lua_new(struct ev_loop *loop, const qc_view *view, qc_metrics *metrics, qc_lua **out);
/* Binds a host created without a loop to loop (once): until then hooks
 * queue, qcluster.after timers wait (counting from here), and qcluster.exec
 * raises "needs an event loop". */
void qc_lua_attach(qc_lua *h, struct ev_loop *loop);
/* Stops timers and running commands (killing them), closes the state.
 * KV writes and set_metadata requests still in flight stay owned by the
 * view: their done may come later (it then only frees a small request
 * record), and must still come exactly once. */
void qc_lua_free(qc_lua *h);

/* Loads the config into this state (see qc_config_load), then the hooks:
 * inline on_* functions of a Lua config, then the hooks file if any. */
int qc_lua_load(qc_lua *h, const char *path, qc_config *cfg, char *err, size_t errlen);
/* The same for a config given as JSON text (see qc_config_load_json). */
int qc_lua_load_json(qc_lua *h, const char *name, const char *dir, const char *json, size_t len,
                     qc_config *cfg, char *err, size_t errlen);
/* Reloads the hooks file (SIGHUP); on error keeps the old hooks. */
int qc_lua_reload_hooks(qc_lua *h, char *err, size_t errlen);

/* Queues a hook call; hooks run from the loop, in queue order, one at a
 * time, and never inside this call. A hook that is not defined is skipped. */
int qc_lua_fire(qc_lua *h, const qc_hook_event *ev);
/* A C function that sees every hook event (libqcluster's callbacks): called
 * from the queue right after the event's Lua hook (defined or not), in the
 * same order, outside the time budget; ev is valid during the call only. */
typedef void qc_lua_observer_fn(void *ud, const qc_hook_event *ev);
void qc_lua_set_observer(qc_lua *h, qc_lua_observer_fn *fn, void *ud);
/* Called on the loop thread when a hook (label hook) has run past
 * hook_stuck_ms (stuck 1), and again when it returns (stuck 0). */
typedef void qc_lua_stuck_fn(void *ud, int stuck, const char *hook);
void qc_lua_set_stuck(qc_lua *h, qc_lua_stuck_fn *fn, void *ud);
/* Lua health checks: qc_lua_run_check queues a call of check index's
 * function (the config's checks[index + 1].lua, or the hooks file's
 * checks[NAME] it names) with a done(ok [, output]) callback, through the
 * hook queue under the hook budget (label "check"). Every done call, and a
 * failure of the function (raised, out of time, missing) as ok = 0 with
 * the message, goes to the fn set here with the index and run given; the
 * receiver ignores all but the first. */
typedef void qc_lua_check_done_fn(void *ud, size_t index, uint64_t run, int ok, const char *output,
                                  size_t len);
void qc_lua_set_check_done(qc_lua *h, qc_lua_check_done_fn *fn, void *ud);
int qc_lua_run_check(qc_lua *h, size_t index, uint64_t run);
/* Runs every queued hook now (used at stop, so on_stop runs last). */
void qc_lua_drain(qc_lua *h);
/* Number of hooks waiting (tests). */
size_t qc_lua_pending(const qc_lua *h);

#endif
