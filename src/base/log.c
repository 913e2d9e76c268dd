/* Log lines: "2026-11-26T09:46:21.123Z INFO  raft: message", or with
 * log_format = "json" {"ts":"2026-11-26T09:46:21.123Z","level":"info",
 * "node":"a","component":"raft","msg":"message","term":3}. Each record is
 * written with one call, so threads never interleave within a line. */
#include "base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <yajl/yajl_gen.h>

#include "base/json.h"

/* Atomic: nodes of libqcluster on threads of their own log concurrently. */
static _Atomic int threshold = QC_LOG_INFO;
static _Atomic int format = QC_LOG_TEXT;
static _Atomic int journal = -1; /* unknown until the first record */
static const char *const names[] = {"debug", "info", "warn", "error"};
/* syslog(3) priorities: LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR. */
static const int priorities[] = {7, 6, 4, 3};

#define NODE_NAME 65 /* identifiers are at most 64 bytes (lua/config.lua) */
static _Thread_local char node_here[NODE_NAME];
static char node_first[NODE_NAME];
static _Atomic int node_first_state;       /* 0 unset, 1 being written, 2 set */
static _Thread_local char last_error[256]; /* qc_log_last_error */

void qc_log_set_level(int level) { threshold = level; }

int qc_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

const char *qc_log_level_name(int level) { return level >= 0 && level < 4 ? names[level] : "?"; }

void qc_log_set_format(int f) { format = f == QC_LOG_JSON ? QC_LOG_JSON : QC_LOG_TEXT; }

int qc_log_parse_format(const char *name)
{
    if (strcmp(name, "text") == 0) return QC_LOG_TEXT;
    if (strcmp(name, "json") == 0) return QC_LOG_JSON;
    return -1;
}

void qc_log_set_node(const char *identifier)
{
    snprintf(node_here, sizeof node_here, "%s", identifier ? identifier : "");
    int unset = 0;
    if (identifier && atomic_compare_exchange_strong(&node_first_state, &unset, 1)) {
        snprintf(node_first, sizeof node_first, "%s", identifier);
        node_first_state = 2;
    }
}

const char *qc_log_node(void) { return node_here; }

static const char *node_name(void)
{
    if (node_here[0]) return node_here;
    return node_first_state == 2 ? node_first : NULL;
}

int qc_log_to_journal(void)
{
    int j = journal;
    if (j >= 0) return j;
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char end;
    j = env && sscanf(env, "%llu:%llu%c", &dev, &ino, &end) == 2 && fstat(2, &st) == 0 &&
        (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    journal = j;
    return j;
}

/* The JSON record into out (cap bytes); 0 when it could not be built. */
static size_t json_line(char *out, size_t cap, const char *stamp, int level, const char *component,
                        const qc_log_fields *f, const char *msg)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return 0;
    int rc = yajl_gen_map_open(g) != yajl_gen_status_ok;
    rc |= qc_json_key_str(g, "ts", stamp);
    rc |= qc_json_key_str(g, "level", names[level & 3]);
    rc |= qc_json_key_str(g, "node", node_name());
    rc |= qc_json_key_str(g, "component", component);
    rc |= qc_json_key_str(g, "msg", msg);
    if (f && f->has_term) rc |= qc_json_key_int(g, "term", (long long)f->term);
    if (f && f->leader) rc |= qc_json_key_str(g, "leader", *f->leader ? f->leader : NULL);
    if (f && f->peer) rc |= qc_json_key_str(g, "peer", f->peer);
    if (f && f->hook) rc |= qc_json_key_str(g, "hook", f->hook);
    rc |= yajl_gen_map_close(g) != yajl_gen_status_ok;
    const unsigned char *buf;
    size_t len = 0;
    if (!rc && yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok && len < cap) {
        memcpy(out, buf, len);
    } else {
        len = 0;
    }
    yajl_gen_free(g);
    return len;
}

const char *qc_log_last_error(void) { return last_error; }

void qc_log_clear_error(void) { last_error[0] = '\0'; }

static void keep_error(const char *component, const char *fmt, va_list ap)
{
    int w = snprintf(last_error, sizeof last_error, "%s: ", component);
    if (w < 0 || (size_t)w >= sizeof last_error) return;
    va_list cp;
    va_copy(cp, ap);
    vsnprintf(last_error + w, sizeof last_error - (size_t)w, fmt, cp);
    va_end(cp);
}

static void vlog(int level, const char *component, const qc_log_fields *f, const char *fmt,
                 va_list ap)
{
    if (level >= QC_LOG_ERROR) keep_error(component, fmt, ap);
    if (level < threshold) return;
    struct timespec ts;
    struct tm tm;
    char stamp[40], secs[24];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(secs, sizeof secs, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp, sizeof stamp, "%s.%03ldZ", secs, ts.tv_nsec / 1000000L);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* "<N>" makes journald store the record at priority N (sd-daemon(3));
     * it takes the prefix off, so a JSON record stays JSON in MESSAGE. */
    char line[8192]; /* a message of 1023 control bytes escaped fits */
    size_t n = 0;
    if (qc_log_to_journal()) n = (size_t)snprintf(line, sizeof line, "<%d>", priorities[level & 3]);
    size_t body = 0;
    if (format == QC_LOG_JSON)
        body = json_line(line + n, sizeof line - n - 1, stamp, level, component, f, msg);
    if (!body) { /* text, or JSON that could not be built (out of memory) */
        static const char *const upper[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
        int w = snprintf(line + n, sizeof line - n - 1, "%s %s %s: %s", stamp, upper[level & 3],
                         component, msg);
        body = w < 0 ? 0 : (size_t)w < sizeof line - n - 1 ? (size_t)w : sizeof line - n - 2;
    }
    n += body;
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}

void qc_log(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, NULL, fmt, ap);
    va_end(ap);
}

void qc_logf(int level, const char *component, const qc_log_fields *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, fields, fmt, ap);
    va_end(ap);
}
