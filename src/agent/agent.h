/* The agent: owns its libev loop's watchers and wires the consensus core to
 * the transport, the store, the Lua hooks, the API and the metrics. Glue
 * only: every decision about leadership is the core's. One thread: every
 * function here runs on the loop's thread (libqcluster's node.c adds the
 * modes and the thread-safe snapshot on top). */
#ifndef QC_AGENT_H
#define QC_AGENT_H

#include <ev.h>
#include <stddef.h>

#include "core/view.h"
#include "lua/luahost.h"

typedef struct qc_agent qc_agent;

/* Told (on the loop thread, inside the agent's processing) that the agent
 * wants to stop: a signal, a disk failure, removal from the cluster. The
 * owner must call qc_agent_stop later, from outside that processing. */
typedef void qc_agent_stop_fn(void *ud);

/* Creates an agent on loop (NULL: bound by qc_agent_start; until then the
 * config's Lua cannot use after() or exec()); nothing runs yet. The caller
 * frees it with qc_agent_free. */
int qc_agent_new(struct ev_loop *loop, qc_agent **out);
/* Stops it if it runs (as qc_agent_stop) and frees it; NULL is allowed. */
void qc_agent_free(qc_agent *a);

/* fn NULL (the default): a wish to stop breaks every ev_run of the loop. */
void qc_agent_set_stop_fn(qc_agent *a, qc_agent_stop_fn *fn, void *ud);
/* Called on the loop thread after each processing turn (the core's outputs
 * carried out): when leadership may have changed. fn must not call back
 * into the agent's processing (it may read qc_agent_is_leader/leader). */
typedef void qc_agent_turn_fn(void *ud);
void qc_agent_set_turn_fn(qc_agent *a, qc_agent_turn_fn *fn, void *ud);
/* Before the start; on (the default): the WAL is written and fsynced on a
 * writer thread; off: on the loop's thread, inside its turns (walq.h). */
void qc_agent_set_wal_thread(qc_agent *a, int on);
/* Every hook event goes to fn too (see qc_lua_set_observer). */
void qc_agent_set_observer(qc_agent *a, qc_lua_observer_fn *fn, void *ud);

/* Loads the config at path (Lua or JSON) and its hooks, or a config given
 * as JSON text (name for messages, dir where relative paths start). Once
 * only. QC_EINVAL or QC_EIO with "FILE:LINE: message" in err. */
int qc_agent_load(qc_agent *a, const char *path, char *err, size_t errlen);
int qc_agent_load_json(qc_agent *a, const char *name, const char *dir, const char *json, size_t len,
                       char *err, size_t errlen);

/* Binds it to loop (NULL: the one it was created on, else libev's default
 * loop), opens the store, starts the transport, the API and the timers, and
 * queues on_start; signals: SIGTERM and SIGINT want a stop, SIGHUP reloads
 * the hooks, SIGPIPE is ignored. Logs why it could not start. Once only. */
int qc_agent_start(qc_agent *a, struct ev_loop *loop, int signals);

/* Stops cleanly: leave_on_stop, a leader hands over (running the loop
 * meanwhile), on_stop runs last; then everything is closed and the agent
 * is inert. reason: for on_stop when the agent has none of its own.
 * Returns the process exit code (0 clean, 1 after a failure), QC_EBUSY
 * when called from inside its own stop. */
int qc_agent_stop(qc_agent *a, const char *reason);
/* 1 once stopped (or never started and closed). */
int qc_agent_stopped(const qc_agent *a);

/* As the API's view: this node leads and its lease holds; the leader it
 * knows (QC_ENOLEADER when none; strings valid until the loop turns). */
int qc_agent_is_leader(qc_agent *a);
int qc_agent_leader(qc_agent *a, qc_peer_info *out);
/* While it leads: when its lease ends (ms of qc_now_ms) unless renewed;
 * else 0. What another thread may trust a copy of is_leader until. */
uint64_t qc_agent_lease_until(qc_agent *a);

/* Checks the config at path (and its hooks) without starting anything.
 * Returns 0 when valid, 2 (with the message on stderr) when not. */
int qc_agent_check(const char *path);

#endif
