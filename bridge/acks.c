/* Acknowledged delivery for ack=1 sessions (docs/protocol.md, "Acks and
 * retransmit"). Service thread only. */
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "bridge.h"
#include "ids.h"
#include "log.h"

/* The ring starts this small and doubles up to --ack-window. */
#define ACK_RING_MIN 8

static uint32_t id_hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: ids are short */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static ack_entry *entry_at(ack_window *w, uint32_t seq) { return &w->ring[seq & (w->cap - 1)]; }

static uint32_t index_mask(const ack_window *w) { return 2 * w->cap - 1; }

static int entry_has_id(ack_entry *e, const char *id, size_t len)
{
    size_t elen;
    const char *eid = frame_message_id(e->f, &elen);
    return eid && elen == len && memcmp(eid, id, len) == 0;
}

/* The entry an index slot points to (slots hold ring position + 1: the
 * window never spans more than the ring, so a position names one entry,
 * and sequence numbers may wrap). */
static ack_entry *indexed(ack_window *w, uint32_t i) { return &w->ring[w->index[i] - 1]; }

static void index_insert(ack_window *w, uint32_t seq)
{
    uint32_t mask = index_mask(w);
    uint32_t i = entry_at(w, seq)->hash & mask;
    while (w->index[i])
        i = (i + 1) & mask;
    w->index[i] = (seq & (w->cap - 1)) + 1;
}

/* The index slot holding the entry with this id, or -1. */
static long index_find(ack_window *w, const char *id, size_t len, uint32_t hash)
{
    if (!w->cap)
        return -1;
    uint32_t mask = index_mask(w);
    for (uint32_t i = hash & mask; w->index[i]; i = (i + 1) & mask) {
        ack_entry *e = indexed(w, i);
        if (e->hash == hash && e->f && entry_has_id(e, id, len))
            return (long)i;
    }
    return -1;
}

/* Linear-probing removal without tombstones: later entries of the same
 * probe run move up into the gap when their home slot allows it. */
static void index_remove(ack_window *w, uint32_t i)
{
    uint32_t mask = index_mask(w);
    uint32_t j = i;
    for (;;) {
        w->index[i] = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (!w->index[j])
                return;
            uint32_t k = indexed(w, j)->hash & mask;
            /* Stays when its home k lies cyclically in (i, j]. */
            if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
                continue;
            break;
        }
        w->index[i] = w->index[j];
        i = j;
    }
}

/* Doubles the ring and rebuilds the index (at most log2(--ack-window)
 * times in a session's life). */
static int grow(ack_window *w, uint32_t want)
{
    uint32_t ncap = w->cap ? w->cap * 2 : ACK_RING_MIN;
    while (ncap < want)
        ncap *= 2;
    ack_entry *ring = calloc(ncap, sizeof *ring);
    uint32_t *index = calloc(2 * (size_t)ncap, sizeof *index);
    if (!ring || !index) {
        free(ring);
        free(index);
        return -1;
    }
    for (uint32_t seq = w->head; seq != w->tail; seq++)
        ring[seq & (ncap - 1)] = *entry_at(w, seq);
    free(w->ring);
    free(w->index);
    w->ring = ring;
    w->index = index;
    w->cap = ncap;
    for (uint32_t seq = w->head; seq != w->tail; seq++)
        if (entry_at(w, seq)->f)
            index_insert(w, seq);
    return 0;
}

/* Moves the head past confirmed entries; a window left empty leaves the
 * bridge's list of windows to check. */
static void advance_head(bridge *b, ack_window *w)
{
    while (w->head != w->tail && !entry_at(w, w->head)->f)
        w->head++;
    if (w->head == w->tail && w->listed) {
        w->listed = 0;
        DL_DELETE(b->ack_pending, w);
    }
}

int acks_enable(bridge *b, session *s)
{
    ack_window *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->owner = s;
    s->acks = w;
    b->ack_sessions++;
    return 0;
}

void acks_disable(bridge *b, session *s)
{
    ack_window *w = s->acks;
    if (!w)
        return;
    for (uint32_t seq = w->head; seq != w->tail; seq++)
        frame_unref(entry_at(w, seq)->f);
    b->ack_outstanding -= w->live;
    if (w->listed)
        DL_DELETE(b->ack_pending, w);
    free(w->ring);
    free(w->index);
    free(w);
    s->acks = NULL;
    b->ack_sessions--;
}

int acks_track(bridge *b, session *s, out_frame *f)
{
    ack_window *w = s->acks;
    size_t len;
    const char *id = frame_message_id(f, &len);
    if (!id)
        return 0; /* nothing the client could confirm */
    uint32_t hash = id_hash(id, len);
    /* The same message again (a duplicate from the bus, a recovery that
     * overlaps live delivery): one entry is enough. */
    if (index_find(w, id, len, hash) >= 0)
        return 0;
    uint32_t span = w->tail - w->head;
    if (span >= (uint32_t)b->cfg.ack_window)
        return -1;
    if (span == w->cap && grow(w, span + 1) != 0)
        return -1;
    ack_entry *e = entry_at(w, w->tail);
    frame_ref(f);
    e->f = f;
    e->first_sent_ms = cp_mono_ms();
    e->hash = hash;
    e->resends = 0;
    index_insert(w, w->tail);
    w->tail++;
    w->live++;
    b->ack_outstanding++;
    if (!w->listed) {
        w->listed = 1;
        DL_APPEND(b->ack_pending, w);
    }
    return 0;
}

void acks_confirm(bridge *b, session *s, const char *message_id)
{
    ack_window *w = s->acks;
    if (!w || !w->live)
        return;
    /* The window keys on the id as written in the frame (JSON-escaped):
     * escape the client's the same way. */
    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    cp_buf_json_string(sb, message_id, strlen(message_id));
    if (sb->failed || sb->len < 2)
        return;
    const char *id = sb->data + 1;
    size_t len = sb->len - 2;
    long i = index_find(w, id, len, id_hash(id, len));
    if (i < 0)
        return;
    ack_entry *e = indexed(w, (uint32_t)i);
    index_remove(w, (uint32_t)i);
    frame_unref(e->f);
    e->f = NULL;
    w->live--;
    b->ack_outstanding--;
    advance_head(b, w);
}

/* Resends what is due in one window; returns -1 when the session was
 * closed. Entries sit in first-send order, and none is due before
 * --ack-timeout after its first send, so the walk stops at the first
 * younger one: only messages already late are looked at. */
static int check_window(bridge *b, ack_window *w, int64_t now)
{
    session *s = w->owner;
    int64_t timeout = b->cfg.ack_timeout_s * 1000;
    for (uint32_t seq = w->head; seq != w->tail; seq++) {
        ack_entry *e = entry_at(w, seq);
        if (e->first_sent_ms + timeout > now)
            break;
        if (!e->f || e->first_sent_ms + timeout * (e->resends + 1) > now)
            continue;
        if (e->resends >= b->cfg.ack_retries) {
            size_t len;
            const char *id = frame_message_id(e->f, &len);
            log_info("session %.*s: message %.*s unacknowledged after %u resends: closing "
                     "(4006)",
                     (int)s->sid_len, s->recipient + SESSION_ID_OFFSET, (int)len, id,
                     e->resends);
            session_close(b, s, END_UNACKED, CLOSE_UNACKED);
            return -1;
        }
        e->resends++;
        b->n.ack_retransmits++;
        if (session_enqueue(b, s, e->f) != 0)
            return -1;
    }
    return 0;
}

void acks_check(bridge *b, int64_t now)
{
    ack_window *w, *next;
    DL_FOREACH_SAFE(b->ack_pending, w, next)
    {
        if (w->owner->state == SESSION_OPEN)
            check_window(b, w, now);
    }
}

void acks_render_metrics(bridge *b, cp_buf *out)
{
    cp_metric_simple(out, "cloudpush_bridge_ack_sessions", "gauge",
                     "Open sessions that confirm messages (ack=1).", b->ack_sessions);
    cp_metric_simple(out, "cloudpush_bridge_ack_unconfirmed", "gauge",
                     "Messages sent to ack=1 sessions and not confirmed yet (all windows).",
                     (double)b->ack_outstanding);
    cp_metric_simple(out, "cloudpush_bridge_ack_retransmits_total", "counter",
                     "Messages resent to ack=1 sessions after --ack-timeout.",
                     (double)b->n.ack_retransmits);
    cp_metric_simple(out, "cloudpush_bridge_ack_window_full_total", "counter",
                     "ack=1 sessions closed as slow consumers (4002) because --ack-window "
                     "messages were unconfirmed.",
                     (double)b->n.ack_window_full);
}
