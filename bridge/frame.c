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
    memcpy(f->data, json, len);
    return f;
}

void frame_unref(out_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
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
