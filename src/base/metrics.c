/* Prometheus metrics in memory: families of counters, gauges and one
 * unlabelled histogram each, rendered as text exposition format 0.0.4.
 * Plain arrays, linear lookups: there are a few dozen series at most.
 * It must never do I/O nor know what the metrics mean. */
#include "base/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"

/* Upper bounds in seconds, 0.1 ms to 10 s; +Inf is implicit. */
static const double qc_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
#define QC_NBUCKETS (sizeof qc_buckets / sizeof qc_buckets[0])

typedef struct qc_series {
    char *label_name;  /* NULL: unlabelled */
    char *label_value; /* NULL: unlabelled */
    double value;
} qc_series;

typedef struct qc_family {
    char *name;
    char *help; /* NULL until declared */
    int type;
    qc_series *series;
    size_t nseries, cap;
    uint64_t counts[QC_NBUCKETS + 1]; /* histograms: per bucket, last is +Inf */
    double sum;
    uint64_t count;
} qc_family;

struct qc_metrics {
    qc_family *fams;
    size_t nfams, cap;
};

qc_metrics *qc_metrics_new(void) { return calloc(1, sizeof(qc_metrics)); }

static void family_clear(qc_family *f)
{
    for (size_t i = 0; i < f->nseries; i++) {
        free(f->series[i].label_name);
        free(f->series[i].label_value);
    }
    free(f->series);
    free(f->name);
    free(f->help);
}

void qc_metrics_free(qc_metrics *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->nfams; i++) family_clear(&m->fams[i]);
    free(m->fams);
    free(m);
}

static qc_family *family_find(const qc_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nfams; i++)
        if (strcmp(m->fams[i].name, name) == 0) return &m->fams[i];
    return NULL;
}

/* Finds or adds the family; NULL when out of memory. */
static qc_family *family_get(qc_metrics *m, const char *name, int type)
{
    qc_family *f = family_find(m, name);
    if (f) return f;
    if (m->nfams == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        qc_family *n = realloc(m->fams, cap * sizeof *n);
        if (!n) return NULL;
        m->fams = n;
        m->cap = cap;
    }
    f = &m->fams[m->nfams];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    if (!f->name) return NULL;
    f->type = type;
    m->nfams++;
    return f;
}

int qc_metrics_declare(qc_metrics *m, const char *name, int type, const char *help)
{
    if (!m || !name || type < QC_METRIC_COUNTER || type > QC_METRIC_HISTOGRAM) return QC_EINVAL;
    qc_family *f = family_get(m, name, type);
    if (!f) return QC_ENOMEM;
    if (f->type != type && f->nseries == 0 && f->count == 0) f->type = type;
    if (help && !f->help) {
        f->help = strdup(help);
        if (!f->help) return QC_ENOMEM;
    }
    return QC_OK;
}

static int str_eq(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static qc_series *series_find(const qc_family *f, const char *ln, const char *lv)
{
    for (size_t i = 0; i < f->nseries; i++)
        if (str_eq(f->series[i].label_name, ln) && str_eq(f->series[i].label_value, lv))
            return &f->series[i];
    return NULL;
}

static qc_series *series_get(qc_family *f, const char *ln, const char *lv)
{
    if (!ln || !lv) ln = lv = NULL;
    qc_series *s = series_find(f, ln, lv);
    if (s) return s;
    if (f->nseries == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        qc_series *n = realloc(f->series, cap * sizeof *n);
        if (!n) return NULL;
        f->series = n;
        f->cap = cap;
    }
    s = &f->series[f->nseries];
    memset(s, 0, sizeof *s);
    if (ln) {
        s->label_name = strdup(ln);
        s->label_value = strdup(lv);
        if (!s->label_name || !s->label_value) {
            free(s->label_name);
            free(s->label_value);
            return NULL;
        }
    }
    f->nseries++;
    return s;
}

static qc_series *lookup(qc_metrics *m, const char *name, int type, const char *ln, const char *lv)
{
    if (!m || !name) return NULL;
    qc_family *f = family_get(m, name, type);
    if (!f || f->type == QC_METRIC_HISTOGRAM) return NULL;
    return series_get(f, ln, lv);
}

void qc_metrics_add(qc_metrics *m, const char *name, const char *label_name,
                    const char *label_value, double by)
{
    qc_series *s = lookup(m, name, QC_METRIC_COUNTER, label_name, label_value);
    if (s) s->value += by;
}

void qc_metrics_set(qc_metrics *m, const char *name, const char *label_name,
                    const char *label_value, double value)
{
    qc_series *s = lookup(m, name, QC_METRIC_GAUGE, label_name, label_value);
    if (s) s->value = value;
}

void qc_metrics_observe(qc_metrics *m, const char *name, double seconds)
{
    if (!m || !name) return;
    qc_family *f = family_get(m, name, QC_METRIC_HISTOGRAM);
    if (!f || f->type != QC_METRIC_HISTOGRAM) return;
    size_t i = 0;
    while (i < QC_NBUCKETS && seconds > qc_buckets[i]) i++;
    f->counts[i]++;
    f->sum += seconds;
    f->count++;
}

double qc_metrics_get(const qc_metrics *m, const char *name, const char *label_name,
                      const char *label_value)
{
    if (!m || !name) return 0;
    const qc_family *f = family_find(m, name);
    if (!f) return 0;
    if (!label_name || !label_value) label_name = label_value = NULL;
    const qc_series *s = series_find(f, label_name, label_value);
    return s ? s->value : 0;
}

/* A growing text buffer; err latches the first failure. */
typedef struct text_buf {
    char *p;
    size_t len, cap;
    int err;
} text_buf;

static void buf_reserve(text_buf *b, size_t more)
{
    if (b->err || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more + 1) cap *= 2;
    char *n = realloc(b->p, cap);
    if (!n) {
        b->err = QC_ENOMEM;
        return;
    }
    b->p = n;
    b->cap = cap;
}

static void buf_putc(text_buf *b, char ch)
{
    buf_reserve(b, 1);
    if (b->err) return;
    b->p[b->len++] = ch;
    b->p[b->len] = '\0';
}

static void buf_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(text_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = QC_EINVAL;
        return;
    }
    buf_reserve(b, (size_t)n);
    if (b->err) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* HELP text escapes \ and newline; label values also escape ". */
static void buf_escaped(text_buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_printf(b, "\\\\");
        else if (*s == '\n')
            buf_printf(b, "\\n");
        else if (quote && *s == '"')
            buf_printf(b, "\\\"");
        else
            buf_putc(b, *s);
    }
}

static void buf_number(text_buf *b, double v)
{
    if (isnan(v))
        buf_printf(b, "NaN");
    else if (isinf(v))
        buf_printf(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        buf_printf(b, "%.0f", v);
    else {
        char tmp[40];
        snprintf(tmp, sizeof tmp, "%.15g", v); /* shortest form that reads back */
        if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
        buf_printf(b, "%s", tmp);
    }
}

static const char *type_name(int type)
{
    switch (type) {
    case QC_METRIC_COUNTER: return "counter";
    case QC_METRIC_GAUGE: return "gauge";
    default: return "histogram";
    }
}

static void render_series(text_buf *b, const qc_family *f, const qc_series *s)
{
    buf_printf(b, "%s", f->name);
    if (s->label_name) {
        buf_printf(b, "{%s=\"", s->label_name);
        buf_escaped(b, s->label_value, 1);
        buf_printf(b, "\"}");
    }
    buf_putc(b, ' ');
    buf_number(b, s->value);
    buf_putc(b, '\n');
}

static void render_histogram(text_buf *b, const qc_family *f)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= QC_NBUCKETS; i++) {
        cum += f->counts[i];
        buf_printf(b, "%s_bucket{le=\"", f->name);
        if (i < QC_NBUCKETS)
            buf_printf(b, "%g", qc_buckets[i]);
        else
            buf_printf(b, "+Inf");
        buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
    }
    buf_printf(b, "%s_sum ", f->name);
    buf_number(b, f->sum);
    buf_printf(b, "\n%s_count %llu\n", f->name, (unsigned long long)f->count);
}

static void render_family(text_buf *b, const qc_family *f)
{
    buf_printf(b, "# HELP %s ", f->name);
    buf_escaped(b, f->help ? f->help : f->name, 0);
    buf_printf(b, "\n# TYPE %s %s\n", f->name, type_name(f->type));
    if (f->type == QC_METRIC_HISTOGRAM) {
        render_histogram(b, f);
        return;
    }
    for (size_t i = 0; i < f->nseries; i++) render_series(b, f, &f->series[i]);
}

int qc_metrics_render(const qc_metrics *m, char **out, size_t *len)
{
    text_buf b = {0};
    buf_reserve(&b, 0);
    if (m)
        for (size_t i = 0; i < m->nfams; i++) render_family(&b, &m->fams[i]);
    if (b.err) {
        free(b.p);
        return b.err;
    }
    *out = b.p;
    *len = b.len;
    return QC_OK;
}
