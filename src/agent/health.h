/* This node's health checks (README "Health checks"): exec, http, tcp, ttl
 * and lua checks run on the agent's loop without ever blocking it, each
 * with its rise/fall state machine; the node is healthy when every check
 * passes. It decides nothing about leadership: it tells the agent when the
 * node's health changes, and the agent hands that to the core. */
#ifndef QC_HEALTH_H
#define QC_HEALTH_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "base/metrics.h"
#include "core/view.h"
#include "lua/config.h"

typedef struct qc_health qc_health;

/* Output kept per check (the rest of a command's output is drained). */
#define QC_HEALTH_MAX_OUTPUT 4096

/* The node's health changed (healthy 0 or 1); check is the check whose
 * change did it (valid during the call). Runs on the loop, never inside a
 * call into qc_health other than a report or a lua answer. */
typedef void qc_health_change_fn(void *ud, int healthy, const qc_check_info *check);
/* Starts run run of lua check index: the host must answer once through
 * qc_health_lua_done (a late or second answer is ignored). Non-zero when
 * it cannot be started (the run then fails at once). */
typedef int qc_health_lua_fn(void *ud, size_t index, uint64_t run);

/* A check's status changed (the node's health maybe not: then before
 * on_change). Same rules as qc_health_change_fn. */
typedef void qc_health_check_fn(void *ud);

typedef struct qc_health_callbacks {
    void *ud;
    qc_health_change_fn *on_change;
    qc_health_check_fn *on_check; /* NULL: not told */
    qc_health_lua_fn *run_lua;    /* NULL: lua checks fail */
} qc_health_callbacks;

/* Creates the runner for n checks (the array and its strings must outlive
 * it); nothing runs before qc_health_start. metrics may be NULL. */
int qc_health_new(struct ev_loop *loop, const qc_check_conf *checks, size_t n,
                  const qc_health_callbacks *cb, qc_metrics *metrics, qc_health **out);
/* Starts every check: the first run at once, then every interval_ms. */
void qc_health_start(qc_health *h);
/* Stops every check (killing commands still running) and frees h. */
void qc_health_free(qc_health *h);

/* 1 when every check passes (and with no checks). */
int qc_health_healthy(const qc_health *h);
/* Fills out with up to max checks; returns how many there are. */
size_t qc_health_list(const qc_health *h, qc_check_info *out, size_t max);
/* A ttl check's report: the check passes while its last report was a pass
 * less than ttl_ms ago. 0; QC_ENOTFOUND (no such check); QC_EINVAL (not a
 * ttl check). output (len bytes) is kept as the check's output. */
int qc_health_report(qc_health *h, const char *name, int pass, const char *output, size_t len);
/* A lua check's answer to run run (see qc_health_lua_fn). */
void qc_health_lua_done(qc_health *h, size_t index, uint64_t run, int pass, const char *output,
                        size_t len);

#endif
