#include "pubbatch.h"

#include "ids.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

static void unref(cp_pub_batch *b)
{
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        sem_destroy(&b->settled);
        free(b);
    }
}

static void settle(cp_pub_slot *s, int ok)
{
    cp_pub_batch *b = s->batch;
    /* A slot settles once: a second settle (cp_pub_batch_abandon over a
     * slot already settled) would count it twice and drop a reference the
     * batch does not have. */
    int expected = CP_PUB_PENDING;
    if (!atomic_compare_exchange_strong(&s->state, &expected, ok ? CP_PUB_OK : CP_PUB_FAILED))
        return;
    if (!ok)
        atomic_fetch_add(&b->failed, 1);
    int last = atomic_fetch_sub(&b->pending, 1) == 1;
    if (last) {
        sem_post(&b->settled);
        if (b->on_settled)
            b->on_settled(b);
    }
    unref(b);
}

static void slot_done(cp_bus_op *op, int ok, int code)
{
    (void)code; /* the batch only tells which publishes failed, not why */
    settle((cp_pub_slot *)op, ok);
}

cp_pub_batch *cp_pub_batch_new(size_t count, void (*on_settled)(cp_pub_batch *), void *ud)
{
    cp_pub_batch *b = calloc(1, sizeof *b + count * sizeof(cp_pub_slot));
    if (!b)
        return NULL;
    b->count = count;
    b->on_settled = on_settled;
    b->ud = ud;
    b->created_us = cp_mono_us();
    atomic_init(&b->pending, (int)count);
    atomic_init(&b->failed, 0);
    atomic_init(&b->refs, (int)count + 1);
    if (sem_init(&b->settled, 0, 0) != 0) {
        free(b);
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        b->slots[i].op.done = slot_done;
        b->slots[i].batch = b;
        atomic_init(&b->slots[i].state, CP_PUB_PENDING);
    }
    return b;
}

void cp_pub_batch_publish(cp_pub_batch *b, size_t i, cp_bus *bus, const char *topic,
                          const void *payload, size_t len)
{
    cp_pub_slot *s = &b->slots[i];
    int rc = cp_bus_publish(bus, topic, payload, len, 1, &s->op);
    if (rc != 0)
        settle(s, 0);
}

cp_bus_op *cp_pub_batch_slot_op(cp_pub_batch *b, size_t i) { return &b->slots[i].op; }

void cp_pub_batch_fail(cp_pub_batch *b, size_t i) { settle(&b->slots[i], 0); }

void cp_pub_batch_abandon(cp_pub_batch *b, size_t from)
{
    for (size_t i = from; i < b->count; i++)
        settle(&b->slots[i], 0);
}

size_t cp_pub_batch_wait(cp_pub_batch *b, int timeout_ms)
{
    if (atomic_load(&b->pending) > 0 && timeout_ms > 0) {
        struct timespec deadline;
        cp_realtime_after_ms(&deadline, timeout_ms);
        /* Posted once, when pending reached 0: a later wait sees 0 above. */
        while (sem_timedwait(&b->settled, &deadline) != 0 && errno == EINTR)
            ;
    }
    int left = atomic_load(&b->pending);
    return left > 0 ? (size_t)left : 0;
}

void cp_pub_batch_wake(cp_pub_batch *b) { sem_post(&b->settled); }

cp_pub_state cp_pub_batch_state(cp_pub_batch *b, size_t i)
{
    return (cp_pub_state)atomic_load(&b->slots[i].state);
}

void cp_pub_batch_release(cp_pub_batch *b) { unref(b); }
