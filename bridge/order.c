/* Offset order for one stream: see order.h. */
#include "order.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static int epoch_differs(const order_stream *st, const char *epoch)
{
    return epoch && *epoch && strcmp(st->epoch, epoch) != 0;
}

/* Delivers the held messages that now follow last, drops those at or
 * below it. */
static void release(order_stream *st, const order_sink *sink, int64_t now_ms)
{
    uint32_t i = 0;
    while (i < st->held_n && st->held[i].offset <= st->last + 1) {
        if (st->held[i].offset == st->last + 1) {
            st->last++;
            sink->deliver(sink->ud, st->held[i].item, st->held[i].offset);
        } else {
            sink->discard(sink->ud, st->held[i].item);
        }
        i++;
    }
    if (i == 0)
        return;
    st->held_n -= i;
    memmove(st->held, st->held + i, st->held_n * sizeof *st->held);
    /* The next gap's window starts now. */
    st->held_since_ms = now_ms;
}

/* Reports the open gap (last+1 .. first held - 1) and moves past it. */
static void skip_gap(order_stream *st, const order_sink *sink, int64_t now_ms)
{
    if (st->held_n == 0)
        return;
    int64_t to = st->held[0].offset - 1;
    if (to > st->last)
        sink->gap(sink->ud, st->last + 1, to);
    st->last = to;
    release(st, sink, now_ms);
}

/* Delivers everything held in order (an epoch ends): what is missing
 * between them is reported. */
static void flush_all(order_stream *st, const order_sink *sink, int64_t now_ms)
{
    while (st->held_n > 0)
        skip_gap(st, sink, now_ms);
}

static int hold(order_stream *st, const order_limits *lim, const order_sink *sink,
                int64_t offset, void *item, int64_t now_ms)
{
    uint32_t pos = st->held_n;
    while (pos > 0 && st->held[pos - 1].offset >= offset)
        pos--;
    if (pos < st->held_n && st->held[pos].offset == offset) {
        sink->discard(sink->ud, item); /* the same offset, held already */
        return ORDER_DUPLICATE;
    }
    if (st->held_n >= lim->max_held || st->held_n == UINT32_MAX) {
        /* Full: the oldest gap is given up now (reported), which delivers
         * at least the first held message and makes room. */
        skip_gap(st, sink, now_ms);
        return order_offer(st, lim, sink, offset, NULL, item, now_ms);
    }
    if (st->held_n == st->held_cap) {
        uint32_t cap = st->held_cap ? st->held_cap * 2 : 8;
        if (cap > lim->max_held)
            cap = lim->max_held;
        order_slot *p = realloc(st->held, cap * sizeof *p);
        if (!p) {
            /* No memory to wait: give the gap up, as when full. */
            skip_gap(st, sink, now_ms);
            if (offset == st->last + 1) {
                st->last = offset;
                sink->deliver(sink->ud, item, offset);
                release(st, sink, now_ms);
                return ORDER_DELIVERED;
            }
            if (st->held_n == 0) {
                sink->gap(sink->ud, st->last + 1, offset - 1);
                st->last = offset;
                sink->deliver(sink->ud, item, offset);
                return ORDER_DELIVERED;
            }
            sink->discard(sink->ud, item);
            return ORDER_DUPLICATE;
        }
        st->held = p;
        st->held_cap = cap;
    }
    if (st->held_n == 0)
        st->held_since_ms = now_ms;
    memmove(st->held + pos + 1, st->held + pos, (st->held_n - pos) * sizeof *st->held);
    st->held[pos].offset = offset;
    st->held[pos].item = item;
    st->held_n++;
    return ORDER_HELD;
}

int order_offer(order_stream *st, const order_limits *lim, const order_sink *sink,
                int64_t offset, const char *epoch, void *item, int64_t now_ms)
{
    if (offset < 1) {
        sink->deliver(sink->ud, item, offset);
        return ORDER_UNSEQUENCED;
    }
    if (!st->known) {
        /* The first message seen: the stream is where it says. */
        st->known = 1;
        if (epoch)
            snprintf(st->epoch, sizeof st->epoch, "%s", epoch);
        st->last = offset;
        sink->deliver(sink->ud, item, offset);
        return ORDER_RESET;
    }
    if (epoch_differs(st, epoch)) {
        /* The history was lost: what the old epoch still held goes out,
         * and the numbering starts again at 1. */
        flush_all(st, sink, now_ms);
        st->gen++;
        snprintf(st->epoch, sizeof st->epoch, "%s", epoch);
        st->last = 0;
        st->fetched_to = 0;
        int r = order_offer(st, lim, sink, offset, epoch, item, now_ms);
        return r == ORDER_DELIVERED ? ORDER_RESET : r;
    }
    if (offset <= st->last) {
        sink->discard(sink->ud, item);
        return ORDER_DUPLICATE;
    }
    if (offset > st->last + 1)
        return hold(st, lim, sink, offset, item, now_ms);
    st->last = offset;
    sink->deliver(sink->ud, item, offset);
    release(st, sink, now_ms);
    return ORDER_DELIVERED;
}

int order_missing(const order_stream *st, int64_t *since, int64_t *to)
{
    if (st->held_n == 0 || st->fetching || st->held[0].offset - 1 <= st->fetched_to)
        return 0;
    *since = st->last;
    *to = st->held[0].offset - 1;
    return 1;
}

void order_fetch_started(order_stream *st, int64_t to, int running)
{
    st->fetched_to = to;
    st->fetching = running;
}

void order_fetch_done(order_stream *st, const order_sink *sink, int ok, int64_t covered_to,
                      int64_t now_ms)
{
    st->fetching = 0;
    /* The history is written before the bus: what it did not have up to
     * where it was read will not come. */
    if (ok && st->held_n > 0 && st->held[0].offset - 1 <= covered_to)
        skip_gap(st, sink, now_ms);
}

int order_tick(order_stream *st, const order_limits *lim, const order_sink *sink,
               int64_t now_ms)
{
    if (st->held_n == 0)
        return 0;
    int64_t open_for = now_ms - st->held_since_ms;
    if (open_for >= lim->window_ms + (st->fetching ? lim->fetch_wait_ms : 0))
        skip_gap(st, sink, now_ms);
    return st->held_n > 0;
}

void order_set_base(order_stream *st, int64_t last, const char *epoch)
{
    if (st->known || !epoch || !*epoch)
        return;
    st->known = 1;
    st->last = last;
    snprintf(st->epoch, sizeof st->epoch, "%s", epoch);
}

void order_clear(order_stream *st, const order_sink *sink)
{
    for (uint32_t i = 0; i < st->held_n; i++)
        sink->discard(sink->ud, st->held[i].item);
    free(st->held);
    st->held = NULL;
    st->held_n = st->held_cap = 0;
    st->fetching = 0;
}
