/* The bounded history of leader transitions and events (history.h): two
 * rings, merged by their recording order when listed. No allocation, so
 * recording never fails. */
#include "core/history.h"

#include <stdio.h>

static void copy_name(char *dst, const char *src)
{
    snprintf(dst, QC_HISTORY_NAME + 1, "%s", src ? src : "");
}

void qc_history_add(qc_history *h, const qc_history_entry *e)
{
    qc_history_ring *r = e->event ? &h->events : &h->transitions;
    qc_history_entry *slot = &r->v[r->next];
    slot->time = e->time;
    slot->term = e->term;
    copy_name(slot->leader, e->leader);
    copy_name(slot->previous_leader, e->previous_leader);
    copy_name(slot->peer, e->peer);
    slot->reason = e->reason;
    slot->event = e->event;
    slot->seq = ++h->seq;
    r->next = (r->next + 1) % QC_HISTORY_MAX;
    if (r->n < QC_HISTORY_MAX) r->n++;
}

/* The i-th oldest entry of r (i < r->n). */
static const qc_history_entry *ring_at(const qc_history_ring *r, size_t i)
{
    return &r->v[(r->next + QC_HISTORY_MAX - r->n + i) % QC_HISTORY_MAX];
}

size_t qc_history_list(const qc_history *h, int with_events, qc_history_entry *out, size_t max)
{
    const qc_history_ring *t = &h->transitions, *ev = &h->events;
    size_t i = 0, j = 0, n = 0, nev = with_events ? ev->n : 0;
    while (n < max && (i < t->n || j < nev)) {
        const qc_history_entry *a = i < t->n ? ring_at(t, i) : NULL;
        const qc_history_entry *b = j < nev ? ring_at(ev, j) : NULL;
        if (a && (!b || a->seq < b->seq)) {
            out[n++] = *a;
            i++;
        } else {
            out[n++] = *b;
            j++;
        }
    }
    return n;
}
