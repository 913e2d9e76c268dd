/* One-line log records on stderr: timestamp, level, component, message.
 * The level threshold is process-wide; logging never fails the caller. */
#ifndef QC_LOG_H
#define QC_LOG_H

enum { QC_LOG_DEBUG = 0, QC_LOG_INFO, QC_LOG_WARN, QC_LOG_ERROR };

/* Sets the lowest level that is printed. */
void qc_log_set_level(int level);
/* Parses "debug", "info", "warn", "error"; -1 when unknown. */
int qc_log_parse_level(const char *name);
const char *qc_log_level_name(int level);
void qc_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
