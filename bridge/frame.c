#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "frame.h"

#include <stdlib.h>
#include <string.h>

out_frame *frame_new(const char *json, size_t len, size_t split, int personalised, int msg_type)
{
    if (len > UINT32_MAX || split > len)
        return NULL;
    out_frame *f = malloc(sizeof *f + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    f->split = (uint32_t)split;
    f->personalised = (uint8_t)personalised;
    f->msg_type = (int8_t)msg_type;
    f->bus_arrived_us = 0;
    f->mid_off = 0;
    f->mid_len = 0;
    f->mid_state = FRAME_MID_UNKNOWN;
    f->offset_known = 0;
    f->stream_offset = -1;
    memcpy(f->data, json, len);
    return f;
}

/* Past the JSON string that starts at p (at its opening quote). */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end && *p != '"'; p += (*p == '\\') ? 2 : 1)
        ;
    return p < end ? p + 1 : end;
}

/* Past the JSON value that starts at p. The frame was written by
 * cp_envelope_write (valid JSON, no white space between tokens). */
static const char *skip_value(const char *p, const char *end)
{
    if (p < end && *p == '"')
        return skip_string(p, end);
    if (p < end && (*p == '{' || *p == '[')) {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return end;
    }
    while (p < end && *p != ',' && *p != '}') /* number, true, false, null */
        p++;
    return p;
}

static int key_is(const char *k, const char *kend, const char *name)
{
    size_t n = strlen(name);
    return (size_t)(kend - k) == n && memcmp(k, name, n) == 0;
}

int64_t frame_stream_offset(out_frame *f)
{
    if (f->offset_known)
        return f->stream_offset;
    f->offset_known = 1;
    f->stream_offset = -1;
    /* A personalised frame's recipient gap holds sessionId and to, which
     * sort after offset: data alone is the envelope without them. */
    const char *p = f->data, *end = f->data + f->len;
    if (p == end || *p != '{')
        return -1;
    p++;
    int64_t offset = -1;
    while (p < end && *p == '"') {
        const char *k = p + 1;
        p = skip_string(p, end);
        const char *kend = p - 1;
        if (p >= end || *p != ':')
            return -1;
        p++;
        if (key_is(k, kend, "broadcast") && p + 4 <= end && memcmp(p, "true", 4) == 0)
            return -1;
        if (key_is(k, kend, "offset")) {
            int64_t v = 0;
            int digits = 0;
            for (; p < end && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
                v = v * 10 + (*p - '0');
            if (digits > 0 && (p == end || *p == ',' || *p == '}'))
                offset = v;
            break; /* broadcast sorts before offset: nothing else to learn */
        }
        p = skip_value(p, end);
        if (p < end && *p == ',')
            p++;
        else
            break;
    }
    f->stream_offset = offset;
    return offset;
}

void frame_unref(out_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

const char *frame_message_id(out_frame *f, size_t *len)
{
    if (f->mid_state == FRAME_MID_UNKNOWN) {
        /* Envelope keys are written in alphabetical order and the ones
         * before messageId are scalars (activeTime, bepoch, boffset,
         * broadcast, epoch, from): the first match is the top-level key.
         * The pattern cannot occur inside a JSON string, where every quote
         * is escaped. */
        static const char key[] = "\"messageId\":\"";
        static const char msg[] = "\"msg\":";
        f->mid_state = FRAME_MID_NONE;
        /* Only before msg (which sorts after messageId): an envelope
         * without a messageId may carry one inside its payload. */
        const char *m = memmem(f->data, f->len, msg, sizeof msg - 1);
        size_t head = m ? (size_t)(m - f->data) : f->len;
        const char *p = memmem(f->data, head, key, sizeof key - 1);
        if (p) {
            const char *v = p + sizeof key - 1, *end = f->data + f->len;
            const char *q = v;
            while (q < end && *q != '"')
                q += (*q == '\\' && q + 1 < end) ? 2 : 1;
            if (q < end && q > v && q - v <= UINT16_MAX) {
                f->mid_off = (uint32_t)(v - f->data);
                f->mid_len = (uint16_t)(q - v);
                f->mid_state = FRAME_MID_FOUND;
            }
        }
    }
    if (f->mid_state != FRAME_MID_FOUND)
        return NULL;
    *len = f->mid_len;
    return f->data + f->mid_off;
}

int frame_queue_push(frame_queue *q, out_frame *f, size_t extra_bytes, uint32_t max_count,
                     size_t max_bytes)
{
    size_t cost = f->len + extra_bytes;
    /* max_bytes bounds a backlog: one message alone is always taken (its
     * size is bounded where it enters, by --max-message-bytes), so no
     * single message can make a reader a "slow consumer". */
    if (q->count >= max_count || (q->count > 0 && q->bytes + cost > max_bytes))
        return -1;
    if (q->count == q->cap) {
        uint32_t ncap = q->cap ? q->cap * 2 : 4;
        if (ncap > max_count)
            ncap = max_count;
        out_frame **ns = malloc(sizeof *ns * ncap);
        if (!ns)
            return -1;
        for (uint32_t i = 0; i < q->count; i++)
            ns[i] = q->slots[(q->head + i) % q->cap];
        free(q->slots);
        q->slots = ns;
        q->cap = ncap;
        q->head = 0;
    }
    q->slots[(q->head + q->count) % q->cap] = f;
    q->count++;
    q->bytes += cost;
    frame_ref(f);
    return 0;
}

out_frame *frame_queue_pop(frame_queue *q, size_t extra_bytes)
{
    if (q->count == 0)
        return NULL;
    out_frame *f = q->slots[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    q->bytes -= f->len + extra_bytes;
    if (q->count == 0)
        q->head = 0;
    return f;
}

void frame_queue_clear(frame_queue *q)
{
    for (uint32_t i = 0; i < q->count; i++)
        frame_unref(q->slots[(q->head + i) % q->cap]);
    free(q->slots);
    memset(q, 0, sizeof *q);
}
