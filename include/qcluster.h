/* libqcluster: a QCluster node inside a program (the agent on the
 * program's libev loop, or on a thread of its own), and a client of an
 * agent's HTTP API for programs that run beside one. The qcluster binary is
 * this same library behind a main(). Link with `pkg-config --libs qcluster`. */

#ifndef QCLUSTER_H
#define QCLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "qcluster_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A member of the cluster, as in the original QCluster SDK (host, port,
 * identifier, metadata) with what QCluster adds. Every string is owned by
 * the qc_peer; free the whole with qc_peer_free(). */
typedef struct qc_peer {
    char *identifier;
    char *host; /* where it takes cluster traffic */
    int port;
    char *metadata; /* a JSON object as text, never NULL */
    char *role;     /* "leader", "follower", "candidate", "witness", "learner" */
    int up;         /* reachable now */
    int voter;
    int priority; /* 0 never leads */
    int healthy;  /* its health checks pass, as the node asked knows it
                     (README "Health checks"); unknown counts as not */
} qc_peer;

/* Frees p and its strings; NULL is allowed. */
void qc_peer_free(qc_peer *p);

/* ---- an in-process node ---------------------------------------------- */

struct ev_loop;
typedef struct qc_node qc_node;

/* Config values set in C instead of a file: the keys of a config file
 * (README "Configuration"). Checked when the node is created from them;
 * text (strings, and the strings in JSON) that is not UTF-8 is refused
 * at once with QC_EINVAL. */
typedef struct qc_settings qc_settings;

qc_settings *qc_settings_new(void); /* NULL when out of memory */
void qc_settings_free(qc_settings *s);
int qc_settings_set_string(qc_settings *s, const char *key, const char *value);
int qc_settings_set_int(qc_settings *s, const char *key, int64_t value);
int qc_settings_set_bool(qc_settings *s, const char *key, int value);
/* Any key, its value as JSON text ("{\"server_port\": 8002}" for metadata). */
int qc_settings_set_json(qc_settings *s, const char *key, const char *json);
/* Appends one entry to peers; metadata_json may be NULL. Entries added so
 * replace a peers key set with qc_settings_set_json. */
int qc_settings_add_peer(qc_settings *s, const char *identifier, const char *host, int port,
                         const char *metadata_json);

/* Creates a node from a config file (Lua or JSON, hooks included) or from
 * settings; nothing runs yet. On failure returns QC_EINVAL (bad config) or
 * another code, with a message in err ("FILE: key: message"; "settings: key:
 * message" for settings, whose relative paths start at the working
 * directory). The caller frees with qc_node_free. */
int qc_node_new(const char *config_path, qc_node **out, char *err, size_t errlen);
int qc_node_new_settings(const qc_settings *s, qc_node **out, char *err, size_t errlen);

/* One event, with the same name and fields as the Lua hook's argument
 * (README "Hooks"). Valid only during the callback. */
typedef struct qc_event {
    const char *name;               /* "on_elected", "on_leader_change", ... */
    uint64_t term;                  /* 0 when the hook has no term */
    const char *reason;             /* NULL when none */
    const qc_peer *self;            /* NULL when none */
    const qc_peer *leader;          /* NULL: none */
    const qc_peer *previous_leader; /* NULL: none */
    const qc_peer *peer;            /* on_peer_up/down, on_member_join/leave */
    const uint8_t *key;             /* on_kv_change */
    size_t klen;
    const uint8_t *value; /* NULL for a delete */
    size_t vlen;
    uint64_t revision;
    /* on_health_change: this node's health now, and the check whose change
     * did it (its status, "passing" or "failing", and its output). */
    int healthy;
    const char *check; /* NULL for other events */
    const char *status;
    const char *output;
} qc_event;
typedef void qc_event_fn(qc_node *node, const qc_event *ev, void *arg);

/* Calls fn for the event named name ("on_elected", ...; NULL: every event),
 * on the node's loop thread, in the order the events happened, after they
 * are durable, never inside the node's own processing: fn may call any
 * qc_ function, qc_node_stop included. Register before starting. */
int qc_node_on(qc_node *n, const char *name, qc_event_fn *fn, void *arg);

/* Before starting: on (the default), the node writes and fsyncs its log on
 * a writer thread of its own; off, on its loop's thread, inside the loop's
 * turns (the loop waits for each fsync), so that a node on the program's
 * loop starts no thread for it (README "Lua module"). QC_EBUSY once
 * started. */
int qc_node_set_wal_thread(qc_node *n, int on);

/* Starts the node on the program's loop (NULL: libev's default loop); the
 * program then runs that loop, on the thread that called this. Installs no
 * signal handler. */
int qc_node_start(qc_node *n, struct ev_loop *loop);
/* Starts the node on a thread of its own, with a libev loop of its own
 * (libev's default loop stays the program's); callbacks run on that thread.
 * Installs no signal handler. */
int qc_node_start_thread(qc_node *n);
/* Runs the node as the qcluster binary does: the default loop, SIGTERM and
 * SIGINT stop it, SIGHUP reloads hooks. Returns the exit code. */
int qc_node_run(qc_node *n);
/* Why a start above failed, as the node's log said it ("net: cannot listen
 * on 127.0.0.1:7001: Address already in use"; the error code's text when
 * the log said nothing); "" when none failed. Valid until n is freed. */
const char *qc_node_error(const qc_node *n);

/* 1 when this node leads and its lease holds, else 0. Safe from any thread. */
int qc_is_leader(qc_node *n);
/* The leader as this node knows it: QC_OK and *out (free with
 * qc_peer_free), or QC_ENOLEADER and *out NULL. Safe from any thread. */
int qc_get_leader_info(qc_node *n, qc_peer **out);

/* Stops cleanly (a leader hands over first, on_stop runs last) and returns
 * once stopped. From a loop-mode program it runs the loop meanwhile; from
 * another thread in thread mode it wakes the node's loop and joins its
 * thread. From a callback, or on a loop another caller runs, it only asks:
 * the node stops at its loop's next turn. */
int qc_node_stop(qc_node *n);
/* Stops the node if running and frees it; NULL is allowed. In loop mode,
 * from the loop's thread. Called from a callback, or while a stop runs on
 * the loop's thread (another watcher of the program's loop during a
 * qc_node_stop), it only asks: the node is freed when that stop completes
 * (one is asked for, at the loop's next turn, when none runs yet). */
void qc_node_free(qc_node *n);

/* ---- a client of an agent's HTTP API --------------------------------- */

typedef struct qc_client qc_client;

/* api: "HOST:PORT", or "https://HOST:PORT" for an agent with api_tls_cert
 * (NULL: $QCLUSTER_API, else 127.0.0.1:8001); token: the agent's api_token
 * for writes (NULL: none). The TLS files start as $QCLUSTER_CACERT,
 * $QCLUSTER_CERT and $QCLUSTER_KEY say (see qc_client_set_tls). */
int qc_client_new(const char *api, const char *token, qc_client **out);
/* For https:// addresses: cacert, the PEM CA file the agent's certificate
 * must chain to (NULL: the system's CAs); cert and key, this client's PEM
 * certificate and key for an agent with api_tls_client_ca (both or
 * neither; NULL: none). The agent's certificate and name (or address) are
 * always verified. QC_OK; QC_EINVAL (cert without key); QC_ENOMEM. A file
 * that cannot be used makes the calls fail (QC_EIO). */
int qc_client_set_tls(qc_client *c, const char *cacert, const char *cert, const char *key);
void qc_client_free(qc_client *c);
/* 1 when the agent leads, 0 when not; < 0 when it cannot be asked. */
int qc_client_is_leader(qc_client *c);
/* As qc_get_leader_info, through the agent; QC_EIO when unreachable. */
int qc_client_get_leader_info(qc_client *c, qc_peer **out);
/* Waits up to timeout seconds for the leader or the term to differ from
 * what this client's last leader answer said (get_leader_info or a wait;
 * on the first call, the leader now), on the API's long-poll (300 s at
 * most); then answers as qc_client_get_leader_info. A loop of calls never
 * misses a change: after QC_ENOLEADER the next call returns a leader
 * elected meanwhile at once. */
int qc_client_wait_for_leader_change(qc_client *c, double timeout, qc_peer **out);

/* One of the agent's health checks (GET /v1/checks). */
typedef struct qc_check {
    char *name;
    char *kind; /* "exec", "http", "tcp", "ttl", "lua" */
    int passing;
    char *output; /* its last run's output (capped) */
    double since; /* wall-clock seconds of its last change of status */
} qc_check;
/* The agent's checks: *out, *n of them (free with qc_client_checks_free).
 * QC_EIO when it cannot be asked, QC_EINVAL for an answer that is not a
 * list of checks. */
int qc_client_checks(qc_client *c, qc_check **out, size_t *n);
void qc_client_checks_free(qc_check *list, size_t n);
/* A ttl check's report (PUT /v1/checks/NAME/pass|fail), output kept as
 * its output (NULL: none). QC_ENOTFOUND no such check; QC_EINVAL not a ttl
 * check, or a name the config could not have; QC_EIO otherwise (refused,
 * unreachable). */
int qc_client_check_pass(qc_client *c, const char *name, const char *output);
int qc_client_check_fail(qc_client *c, const char *name, const char *output);

#ifdef __cplusplus
}
#endif

#endif /* QCLUSTER_H */
