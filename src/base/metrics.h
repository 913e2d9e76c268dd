/* Prometheus metrics: counters, gauges and histograms with at most one
 * label, rendered in text exposition format 0.0.4. Owned by the agent;
 * never touches the network itself. */
#ifndef QC_METRICS_H
#define QC_METRICS_H

#include <stddef.h>

typedef struct qc_metrics qc_metrics;

enum { QC_METRIC_COUNTER = 1, QC_METRIC_GAUGE, QC_METRIC_HISTOGRAM };

/* Returns NULL when out of memory. */
qc_metrics *qc_metrics_new(void);
void qc_metrics_free(qc_metrics *m);

/* Declares a family (name, type, help). Declaring twice is harmless. A family
 * used before it is declared is declared as a counter/gauge on first use. */
int qc_metrics_declare(qc_metrics *m, const char *name, int type, const char *help);

/* label_name/label_value may both be NULL for an unlabelled series. All
 * strings are copied. m may be NULL (then these do nothing). */
void qc_metrics_add(qc_metrics *m, const char *name, const char *label_name,
                    const char *label_value, double by);
void qc_metrics_set(qc_metrics *m, const char *name, const char *label_name,
                    const char *label_value, double value);
/* Histograms use fixed buckets from 0.1 ms to 10 s. */
void qc_metrics_observe(qc_metrics *m, const char *name, double seconds);
/* Current value of a counter or gauge series (tests, status); 0 if absent. */
double qc_metrics_get(const qc_metrics *m, const char *name, const char *label_name,
                      const char *label_value);

/* Renders everything; *out is malloc'd and owned by the caller. */
int qc_metrics_render(const qc_metrics *m, char **out, size_t *len);

#endif
