/* A node's configuration: loaded from a Lua file returning a table or from a
 * JSON file (the original QCluster format), checked by lua/config.lua, with
 * every default filled in. Loading never starts anything. */
#ifndef QC_CONFIG_H
#define QC_CONFIG_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "core/members.h" /* QC_MROLE_... */

typedef struct qc_peer_conf {
    char *identifier;
    char *host;
    int port;
    char *metadata; /* JSON object text, "{}" when none */
    int role;       /* QC_MROLE_...; QC_MROLE_VOTER when not given */
    int priority;   /* 0 never leads; 1 when not given */
} qc_peer_conf;

/* A health check (README "Health checks"): the kinds of lua/config.lua. */
enum { QC_CHECK_EXEC = 1, QC_CHECK_HTTP, QC_CHECK_TCP, QC_CHECK_TTL, QC_CHECK_LUA };

typedef struct qc_check_conf {
    char *name;
    int kind;     /* QC_CHECK_... */
    char *target; /* exec: the command; http: the URL; tcp: "host:port"; ttl:
                     ttl_ms as text; lua: the function's name or "function" */
    char *host;   /* http, tcp: where to connect (NULL otherwise) */
    int port;
    char *path; /* http: the request target */
    int ttl_ms; /* ttl */
    int interval_ms, timeout_ms, rise, fall, retry_ms;
    /* lua: the function is the resolved config's checks[i].lua (registry
     * "qcluster.config"), or the hooks table's checks[target] when it names
     * one. */
} qc_check_conf;

typedef struct qc_config {
    char *path; /* the config file as given */
    char *dir;  /* its directory: relative paths start here */
    char *identifier;
    char *listen_host;
    int listen_port;
    qc_peer_conf *peers;
    size_t n_peers;
    char *metadata; /* JSON object text, "{}" when none */
    char *api_host;
    int api_port;   /* 0: no API */
    char *data_dir; /* absolute or relative to the working directory */
    int heartbeat_ms;
    int election_timeout_ms;
    int hook_timeout_ms;
    int exec_max;          /* qcluster.exec children running at once */
    int hook_stuck_ms;     /* a hook running this long makes the node unhealthy */
    int snapshot_entries;  /* applied entries between snapshots */
    int kv_max_key;        /* bytes */
    int kv_max_value;      /* bytes */
    char *hooks_path;      /* resolved against dir; NULL when none */
    int log_level;         /* QC_LOG_... */
    int log_format;        /* QC_LOG_TEXT or QC_LOG_JSON */
    char *secret;          /* NULL when none */
    char *secret_previous; /* NULL when none; never without secret */
    char *api_token;       /* NULL when none */
    /* TLS on the API: PEM files resolved against dir; NULL when none (cert
     * and key come together; client_ca only with them). */
    char *api_tls_cert, *api_tls_key, *api_tls_client_ca;
    /* Membership. */
    int role;             /* QC_MROLE_... this node asks to be */
    int priority;         /* 0 never leads; higher is preferred */
    int preempt;          /* preempt: a higher priority takes leadership over */
    int preempt_delay_ms; /* preempt_delay_ms: wait before preempting */
    int max_voters;       /* max_voters: voting members wanted at most */
    char **join;          /* "host:port" cluster addresses to join through */
    size_t n_join;
    int join_set;          /* join was given, maybe empty: this node joins, never forms a cluster */
    int64_t reap_after_ms; /* remove a member down this long; 0: never */
    int leave_on_stop;     /* leave the cluster on SIGTERM */
    qc_check_conf *checks; /* health checks, in config order */
    size_t n_checks;
} qc_config;

/* Default timings (documented in the README). */
#define QC_DEFAULT_HEARTBEAT_MS 50
#define QC_DEFAULT_ELECTION_TIMEOUT_MS 300
#define QC_DEFAULT_HOOK_TIMEOUT_MS 100 /* election_timeout_ms / 3 */
#define QC_DEFAULT_EXEC_MAX 64

/* Loads and checks path inside L (the caller's state; the Lua config may use
 * the qcluster module). On success fills *cfg (caller frees with
 * qc_config_free) and leaves the config table in the registry under
 * "qcluster.config" so inline hooks can be found. On failure writes a
 * message "FILE:LINE: message" or "FILE: key: message" into err and returns
 * QC_EINVAL (QC_EIO when the file cannot be read). */
int qc_config_load(lua_State *L, const char *path, qc_config *cfg, char *err, size_t errlen);
/* The same for a config given as JSON text (qc_settings): name stands for
 * the file in messages ("settings: listen_port: ..."), dir is where
 * relative paths (hooks, the default data_dir) start. */
int qc_config_load_json(lua_State *L, const char *name, const char *dir, const char *json,
                        size_t len, qc_config *cfg, char *err, size_t errlen);
void qc_config_free(qc_config *cfg);
/* luaL_loadfilex(L, path, "t") with the file opened close-on-exec (Lua's
 * own fopen is not, and a program embedding a node may fork in another
 * thread while it reads): pushes the chunk, named "@path", and returns
 * LUA_OK, or pushes "PATH: cannot open: reason" or the syntax error and
 * returns LUA_ERRFILE, LUA_ERRMEM or LUA_ERRSYNTAX. */
int qc_config_loadfile(lua_State *L, const char *path);

#endif
