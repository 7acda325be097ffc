/* A batch of QoS 1 publishes whose outcome is wanted as a whole: "did the
 * broker take every one of them?", and which ones it did not.
 *
 * Two ways to learn the outcome:
 * - blocking: cp_pub_batch_wait() on the caller's thread (HTTP workers);
 * - callback: on_settled runs once, on whichever thread settles the last
 *   publish (event loops hand it over to their own thread).
 * Publishes are settled by Paho's threads, possibly after a waiter timed
 * out, so the batch is reference counted and freed by the last user. */
#ifndef CP_PUBBATCH_H
#define CP_PUBBATCH_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"

typedef enum { CP_PUB_PENDING = 0, CP_PUB_OK = 1, CP_PUB_FAILED = 2 } cp_pub_state;

typedef struct cp_pub_batch cp_pub_batch;

typedef struct {
    cp_bus_op op; /* first: the bus hands this back */
    cp_pub_batch *batch;
    atomic_int state; /* cp_pub_state */
} cp_pub_slot;

struct cp_pub_batch {
    size_t count;
    atomic_int pending;  /* slots not settled yet */
    atomic_int failed;   /* slots settled as failed */
    atomic_int refs;     /* 1 per unsettled slot + 1 for the owner */
    void (*on_settled)(cp_pub_batch *batch); /* optional */
    void *ud;
    int64_t created_us; /* cp_mono_us() at cp_pub_batch_new */
    /* Posted once, by the last settle. A semaphore, not a condition
     * variable: the waiter wakes without a mutex to fight the settling
     * Paho thread for (a push paid two extra futex calls and a context
     * switch for that). */
    sem_t settled;
    cp_pub_slot slots[];
};

/* Allocates a batch of count slots; the caller holds one reference. */
cp_pub_batch *cp_pub_batch_new(size_t count, void (*on_settled)(cp_pub_batch *), void *ud);

/* Publishes slot i. A publish refused at once is settled as failed here. */
void cp_pub_batch_publish(cp_pub_batch *b, size_t i, cp_bus *bus, const char *topic,
                          const void *payload, size_t len);

/* The completion of slot i, for a publish made another way (the bridge's
 * in-process sequencer); settle it with cp_pub_batch_fail when that
 * refused at once. */
cp_bus_op *cp_pub_batch_slot_op(cp_pub_batch *b, size_t i);
void cp_pub_batch_fail(cp_pub_batch *b, size_t i);

/* Settles every slot that was never published (e.g. validation stopped
 * early) as failed, so pending can reach zero. */
void cp_pub_batch_abandon(cp_pub_batch *b, size_t from);

/* Waits until every slot settled or timeout_ms passed. Returns the number
 * of slots still pending (0 = all settled). */
size_t cp_pub_batch_wait(cp_pub_batch *b, int timeout_ms);

/* Ends a cp_pub_batch_wait early, before anything settled: the thread
 * that was to publish the batch leaves that to the waiter (which then
 * publishes and waits again). */
void cp_pub_batch_wake(cp_pub_batch *b);

cp_pub_state cp_pub_batch_state(cp_pub_batch *b, size_t i);

/* Drops the caller's reference. */
void cp_pub_batch_release(cp_pub_batch *b);

#endif
