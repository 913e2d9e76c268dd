/* One-line log records on stderr: text ("timestamp LEVEL component: message")
 * or one JSON object a line (log_format = "json"), with a syslog priority
 * prefix when stderr is the journal. Level and format are process-wide, the
 * node's name per thread; logging never fails the caller. */
#ifndef QC_LOG_H
#define QC_LOG_H

#include <stdint.h>

enum { QC_LOG_DEBUG = 0, QC_LOG_INFO, QC_LOG_WARN, QC_LOG_ERROR };
enum { QC_LOG_TEXT = 0, QC_LOG_JSON };

/* What a record is about, for the JSON format's own fields (the text format
 * has them in its message already). Unset strings (NULL) and has_term 0
 * leave the field out; leader "" (no leader) is written null. */
typedef struct qc_log_fields {
    int has_term;
    uint64_t term;
    const char *leader;
    const char *peer;
    const char *hook;
} qc_log_fields;

/* Sets the lowest level that is printed. */
void qc_log_set_level(int level);
/* Parses "debug", "info", "warn", "error"; -1 when unknown. */
int qc_log_parse_level(const char *name);
const char *qc_log_level_name(int level);
/* Sets the format of every record after it (QC_LOG_TEXT or QC_LOG_JSON). */
void qc_log_set_format(int format);
/* Parses "text", "json"; -1 when unknown. */
int qc_log_parse_format(const char *name);
/* The node named in this thread's records (copied; NULL: none). The first
 * name set in the process also serves threads that set none. */
void qc_log_set_node(const char *identifier);
/* This thread's node name ("" when none was set here), for a thread it
 * starts to take on with qc_log_set_node. */
const char *qc_log_node(void);
/* Whether stderr is the journal: JOURNAL_STREAM names stderr's device and
 * inode (sd_journal_stream_fd(3)). Looked at once, on the first record. */
int qc_log_to_journal(void);
/* This thread's last error record since qc_log_clear_error, printed or
 * not ("component: message"; "" when none): for a caller that must say why
 * a call that logs its failures failed. */
const char *qc_log_last_error(void);
void qc_log_clear_error(void);
void qc_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with fields (NULL: none). */
void qc_logf(int level, const char *component, const qc_log_fields *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
