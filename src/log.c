/* Log lines: "2026-11-26T09:46:21.123Z INFO  raft: message". */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Atomic: nodes of libqcluster on threads of their own log concurrently. */
static _Atomic int threshold = QC_LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

void qc_log_set_level(int level) { threshold = level; }

int qc_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

const char *qc_log_level_name(int level) { return level >= 0 && level < 4 ? names[level] : "?"; }

void qc_log(int level, const char *component, const char *fmt, ...)
{
    if (level < threshold) return;
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    static const char *const upper[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    fprintf(stderr, "%s.%03ldZ %s %s: %s\n", stamp, ts.tv_nsec / 1000000L, upper[level & 3],
            component, msg);
}
