/* Offset order for one stream: see order.h. */
#include "order.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

uint64_t order_epoch_hash(const char *epoch)
{
    if (!epoch || !*epoch)
        return 0;
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)epoch; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h ? h : 1;
}

static void set_epoch(order_stream *st, const char *epoch)
{
    snprintf(st->epoch, sizeof st->epoch, "%s", epoch ? epoch : "");
    st->epoch_h = order_epoch_hash(st->epoch);
}

static int epoch_left(const order_stream *st, uint64_t h)
{
    for (int i = 0; h && i < ORDER_EPOCHS_LEFT; i++)
        if (st->left[i] == h)
            return 1;
    return 0;
}

static void leave_hash(order_stream *st, uint64_t h)
{
    if (!h || epoch_left(st, h))
        return;
    memmove(st->left + 1, st->left, (ORDER_EPOCHS_LEFT - 1) * sizeof st->left[0]);
    st->left[0] = h;
}

static void leave_epoch(order_stream *st) { leave_hash(st, st->epoch_h); }

/* Drops the held messages of an epoch other than the stream's. */
static void drop_foreign(order_stream *st, const order_sink *sink)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < st->held_n; i++) {
        if (st->held[i].epoch_h && st->held[i].epoch_h != st->epoch_h) {
            /* Older than the position the history gave: never taken back. */
            leave_hash(st, st->held[i].epoch_h);
            sink->discard(sink->ud, st->held[i].item);
        } else
            st->held[keep++] = st->held[i];
    }
    st->held_n = keep;
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

/* Nothing held: what was spilled and never read back is reported lost. */
static void skip_spilled(order_stream *st, const order_sink *sink)
{
    if (st->held_n == 0 && st->spilled_to > st->last) {
        sink->gap(sink->ud, st->last + 1, st->spilled_to);
        st->last = st->spilled_to;
    }
}

/* Gives the first held message up waiting: the gap before it is reported
 * and skipped, or, when wider than max_jump, the message goes out as it is
 * and the stream stays (a bogus offset cannot move it that far). */
static void give_up_first(order_stream *st, const order_limits *lim, const order_sink *sink,
                          int64_t now_ms)
{
    if (lim->max_jump > 0 && st->held_n > 0 && st->held[0].offset - st->last - 1 > lim->max_jump) {
        order_slot x = st->held[0];
        st->held_n--;
        memmove(st->held, st->held + 1, st->held_n * sizeof *st->held);
        st->held_since_ms = now_ms;
        sink->beyond(sink->ud, x.item, x.offset);
        return;
    }
    skip_gap(st, sink, now_ms);
}

/* Delivers everything held in order (an epoch ends): what is missing
 * between them is reported. */
static void flush_all(order_stream *st, const order_sink *sink, int64_t now_ms)
{
    while (st->held_n > 0)
        skip_gap(st, sink, now_ms);
    skip_spilled(st, sink);
}

/* No position came from the history in time (or the buffer is full): the
 * lowest offset held starts the stream. */
static void start_unknown(order_stream *st, const order_sink *sink, int64_t now_ms)
{
    st->known = 1;
    st->fetching = 0; /* the position read, if one runs, comes too late */
    drop_foreign(st, sink);
    if (st->held_n == 0)
        return;
    st->last = st->held[0].offset - 1;
    release(st, sink, now_ms);
}

/* Full, with a history: the newest of the held ones and the new one is let
 * go (the history has it; order_missing reads up to it), so the buffer
 * keeps the oldest, which fill the gap first. */
static int spill(order_stream *st, const order_sink *sink, uint32_t pos, int64_t offset,
                 uint64_t epoch_h, void *item)
{
    if (pos == st->held_n) {
        if (offset > st->spilled_to)
            st->spilled_to = offset;
        sink->spill(sink->ud, item);
        return ORDER_SPILLED;
    }
    order_slot out = st->held[st->held_n - 1];
    if (out.offset > st->spilled_to)
        st->spilled_to = out.offset;
    sink->spill(sink->ud, out.item);
    memmove(st->held + pos + 1, st->held + pos, (st->held_n - 1 - pos) * sizeof *st->held);
    st->held[pos].offset = offset;
    st->held[pos].epoch_h = epoch_h;
    st->held[pos].item = item;
    return ORDER_HELD;
}

static int hold(order_stream *st, const order_limits *lim, const order_sink *sink,
                int64_t offset, uint64_t epoch_h, void *item, int64_t now_ms)
{
    uint32_t pos = st->held_n;
    while (pos > 0 && st->held[pos - 1].offset >= offset)
        pos--;
    if (pos < st->held_n && st->held[pos].offset == offset) {
        sink->discard(sink->ud, item); /* the same offset, held already */
        return ORDER_DUPLICATE;
    }
    if (!st->known && st->held_n >= lim->max_held) {
        /* Full while no position came: waiting ends here. */
        start_unknown(st, sink, now_ms);
        return order_offer(st, lim, sink, offset, NULL, item, now_ms);
    }
    if (st->held_n >= lim->max_held && lim->spill && st->held_n > 0 &&
        (lim->max_jump <= 0 || offset - st->last - 1 <= lim->max_jump))
        return spill(st, sink, pos, offset, epoch_h, item);
    if (st->held_n >= lim->max_held || st->held_n == UINT32_MAX) {
        /* Full: the oldest gap is given up now (reported), which delivers
         * at least the first held message and makes room. */
        give_up_first(st, lim, sink, now_ms);
        return order_offer(st, lim, sink, offset, NULL, item, now_ms);
    }
    if (st->held_n == st->held_cap) {
        uint32_t cap = st->held_cap ? st->held_cap * 2 : 8;
        if (cap > lim->max_held)
            cap = lim->max_held;
        order_slot *p = realloc(st->held, cap * sizeof *p);
        if (!p && !st->known) {
            start_unknown(st, sink, now_ms);
            if (st->held_n == 0)
                st->last = offset - 1;
            return order_offer(st, lim, sink, offset, NULL, item, now_ms);
        }
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
    st->held[pos].epoch_h = epoch_h;
    st->held[pos].item = item;
    st->held_n++;
    return ORDER_HELD;
}

/* The history was lost: what the old epoch still held goes out, and the
 * numbering starts again at 1. */
static void switch_epoch(order_stream *st, const order_sink *sink, const char *epoch,
                         int64_t now_ms)
{
    flush_all(st, sink, now_ms);
    st->gen++;
    leave_epoch(st);
    set_epoch(st, epoch);
    st->last = 0;
    st->fetched_to = 0;
    st->spilled_to = 0;
}

/* The messages of the new epoch are taken: the stream switches to it. */
static void switch_to_pending(order_stream *st, const order_limits *lim, const order_sink *sink,
                              int64_t now_ms)
{
    char epoch[ORDER_EPOCH_MAX + 1];
    snprintf(epoch, sizeof epoch, "%s", st->pend_epoch);
    uint32_t n = st->pend_n;
    st->pend_n = 0;
    st->pend_asked = 0;
    switch_epoch(st, sink, epoch, now_ms);
    for (uint32_t i = 0; i < n; i++)
        order_offer(st, lim, sink, st->pend[i].offset, epoch, st->pend[i].item, now_ms);
}

static void drop_pending(order_stream *st, const order_sink *sink)
{
    for (uint32_t i = 0; i < st->pend_n; i++)
        sink->discard(sink->ud, st->pend[i].item);
    st->pend_n = 0;
    st->pend_asked = 0;
}

static int pend_push(order_stream *st, const order_limits *lim, const order_sink *sink,
                     int64_t offset, const char *epoch, uint64_t h, void *item, int64_t now_ms)
{
    if (st->pend_n == 0) {
        st->pend_h = h;
        snprintf(st->pend_epoch, sizeof st->pend_epoch, "%s", epoch);
        st->pend_since_ms = now_ms;
        st->pend_asked = 0;
    }
    if (st->pend_n >= lim->max_held) {
        switch_to_pending(st, lim, sink, now_ms); /* no room to wait */
        return order_offer(st, lim, sink, offset, epoch, item, now_ms);
    }
    if (st->pend_n == st->pend_cap) {
        uint32_t cap = st->pend_cap ? st->pend_cap * 2 : 8;
        if (cap > lim->max_held)
            cap = lim->max_held;
        order_slot *p = realloc(st->pend, cap * sizeof *p);
        if (!p) {
            switch_to_pending(st, lim, sink, now_ms);
            return order_offer(st, lim, sink, offset, epoch, item, now_ms);
        }
        st->pend = p;
        st->pend_cap = cap;
    }
    st->pend[st->pend_n].offset = offset;
    st->pend[st->pend_n].epoch_h = h;
    st->pend[st->pend_n].item = item;
    st->pend_n++;
    return ORDER_PENDING;
}

int order_verify_wanted(const order_stream *st) { return st->pend_n > 0 && !st->pend_asked; }

void order_verify_started(order_stream *st) { st->pend_asked = 1; }

void order_epoch_verified(order_stream *st, const order_limits *lim, const order_sink *sink,
                          int ok, const char *epoch, int64_t now_ms)
{
    if (st->pend_n == 0)
        return;
    if (ok && order_epoch_hash(epoch) == st->epoch_h) {
        /* The history is still in the stream's epoch: a late message of
         * an older one. */
        leave_hash(st, st->pend_h);
        drop_pending(st, sink);
        return;
    }
    switch_to_pending(st, lim, sink, now_ms);
}

void order_adopt_epoch(order_stream *st, const order_limits *lim, const order_sink *sink,
                       const char *epoch, int64_t now_ms)
{
    uint64_t h = order_epoch_hash(epoch);
    if (!st->known || !h || h == st->epoch_h || epoch_left(st, h))
        return;
    if (st->pend_n > 0 && st->pend_h == h) {
        switch_to_pending(st, lim, sink, now_ms);
        return;
    }
    switch_epoch(st, sink, epoch, now_ms);
}

int order_offer(order_stream *st, const order_limits *lim, const order_sink *sink,
                int64_t offset, const char *epoch, void *item, int64_t now_ms)
{
    if (offset < 1) {
        sink->deliver(sink->ud, item, offset);
        return ORDER_UNSEQUENCED;
    }
    uint64_t h = order_epoch_hash(epoch);
    if (epoch_left(st, h)) {
        /* A late message of an epoch left behind: never back to it. */
        sink->discard(sink->ud, item);
        return ORDER_STALE;
    }
    if (!st->known) {
        if (lim->wait_for_base) {
            /* Held until the history says where the stream stands. */
            if (h)
                set_epoch(st, epoch);
            return hold(st, lim, sink, offset, h, item, now_ms);
        }
        /* No history: the first message seen says where the stream is. */
        st->known = 1;
        set_epoch(st, epoch);
        st->last = offset;
        sink->deliver(sink->ud, item, offset);
        return ORDER_RESET;
    }
    if (h && h != st->epoch_h) {
        if (lim->wait_for_base) {
            /* Newer, or a late one of an older history? The history says. */
            if (st->pend_n > 0 && st->pend_h != h)
                switch_to_pending(st, lim, sink, now_ms); /* a third: no time to ask */
            else
                return pend_push(st, lim, sink, offset, epoch, h, item, now_ms);
            return order_offer(st, lim, sink, offset, epoch, item, now_ms);
        }
        switch_epoch(st, sink, epoch, now_ms);
        int r = order_offer(st, lim, sink, offset, epoch, item, now_ms);
        return r == ORDER_DELIVERED ? ORDER_RESET : r;
    }
    if (offset <= st->last) {
        sink->discard(sink->ud, item);
        return ORDER_DUPLICATE;
    }
    if (offset > st->last + 1)
        return hold(st, lim, sink, offset, h, item, now_ms);
    st->last = offset;
    sink->deliver(sink->ud, item, offset);
    release(st, sink, now_ms);
    return ORDER_DELIVERED;
}

static int holds(const order_stream *st, int64_t offset)
{
    uint32_t lo = 0, hi = st->held_n;
    while (lo < hi) { /* held is sorted by offset */
        uint32_t mid = lo + (hi - lo) / 2;
        if (st->held[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->held_n && st->held[lo].offset == offset;
}

int order_read_has(const order_stream *st, int64_t last_before, int64_t offset)
{
    return holds(st, offset) || (offset > last_before && offset <= st->last);
}

int order_missing(const order_stream *st, int64_t *since, int64_t *to)
{
    if (!st->known || st->fetching)
        return 0;
    int64_t end = st->held_n > 0 ? st->held[0].offset - 1 : st->last;
    if (st->spilled_to > end)
        end = st->spilled_to; /* one read: the gap, the held ones, the spilled */
    if (end <= st->last || end <= st->fetched_to)
        return 0;
    *since = st->last;
    *to = end;
    return 1;
}

void order_fetch_started(order_stream *st, int64_t to, int running)
{
    st->fetched_to = to;
    st->fetch_next_held = st->held_n > 0 && st->held[0].offset == to + 1;
    st->fetching = running;
}

void order_fetch_done(order_stream *st, const order_sink *sink, int ok, int64_t covered_to,
                      int64_t now_ms)
{
    st->fetching = 0;
    if (!ok || !st->known)
        return;
    /* The history is written before the bus: what it did not have up to
     * where it was read will not come. */
    while (st->held_n > 0 && st->held[0].offset - 1 <= covered_to)
        skip_gap(st, sink, now_ms);
    if (st->spilled_to <= covered_to)
        skip_spilled(st, sink);
}

int order_tick(order_stream *st, const order_limits *lim, const order_sink *sink,
               int64_t now_ms)
{
    if (st->pend_n > 0 && now_ms - st->pend_since_ms >= lim->window_ms + lim->fetch_wait_ms)
        switch_to_pending(st, lim, sink, now_ms); /* no answer: as without a history */
    if (st->held_n == 0 && st->spilled_to <= st->last)
        return st->pend_n > 0;
    int64_t open_for = now_ms - st->held_since_ms;
    if (open_for < lim->window_ms + (st->fetching ? lim->fetch_wait_ms : 0))
        return 1;
    if (st->known && st->held_n == 0)
        skip_spilled(st, sink);
    else if (st->known)
        give_up_first(st, lim, sink, now_ms);
    else
        start_unknown(st, sink, now_ms); /* nothing before it is this bridge's to report */
    return order_waiting(st);
}

void order_set_base(order_stream *st, const order_sink *sink, int64_t last, const char *epoch,
                    int64_t now_ms)
{
    if (st->known || epoch_left(st, order_epoch_hash(epoch)))
        return;
    st->known = 1;
    st->fetching = 0;
    st->last = last;
    /* No epoch: the stream was never written; it starts at 0 in the epoch
     * its first messages carry. */
    if (epoch && *epoch)
        set_epoch(st, epoch);
    drop_foreign(st, sink);
    if (st->held_n > 0 && st->held[0].offset <= last + 1)
        release(st, sink, now_ms);
}

void *order_take(order_stream *st, int64_t offset)
{
    for (uint32_t i = 0; i < st->held_n; i++) {
        if (st->held[i].offset != offset)
            continue;
        void *item = st->held[i].item;
        st->held_n--;
        memmove(st->held + i, st->held + i + 1, (st->held_n - i) * sizeof *st->held);
        return item;
    }
    return NULL;
}

void order_clear(order_stream *st, const order_sink *sink)
{
    drop_pending(st, sink);
    free(st->pend);
    st->pend = NULL;
    st->pend_cap = 0;
    for (uint32_t i = 0; i < st->held_n; i++)
        sink->discard(sink->ud, st->held[i].item);
    free(st->held);
    st->held = NULL;
    st->held_n = st->held_cap = 0;
    st->fetching = 0;
    st->spilled_to = 0;
}
