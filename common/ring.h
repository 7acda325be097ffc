/* A FIFO of fixed-size elements that grows when full (doubling, up to a
 * limit) and returns to its base size when emptied. For the hand-overs
 * from Paho's receive thread (the bridge's inbox, the sequencer's queue):
 * refusing a message there does not hold the broker back, Paho has
 * acknowledged it already and keeps it and every later one in a list it
 * re-offers one message per received packet, so a refused backlog drains
 * only as fast as new traffic arrives. Taking a burst and working it off
 * at the consumer's pace is the better bound. No lock: the caller's. */
#ifndef CP_RING_H
#define CP_RING_H

#include <stddef.h>

typedef struct {
    unsigned char *slots;
    size_t elem;     /* bytes per element */
    size_t cap;      /* elements the slots hold now */
    size_t base_cap; /* the size it starts with and returns to */
    size_t max_cap;  /* it does not grow past this */
    size_t head, count;
} cp_ring;

/* Returns 0, or -1 when out of memory. max_cap < cap is taken as cap. */
int cp_ring_init(cp_ring *r, size_t elem, size_t cap, size_t max_cap);

/* The slot for one more element at the tail, to be filled by the caller;
 * the ring doubles first when full. NULL at max_cap (or out of memory):
 * nothing was added. *grew (may be NULL) is set when it doubled. */
void *cp_ring_push(cp_ring *r, int *grew);

/* The i-th element from the head (i < count). */
void *cp_ring_at(const cp_ring *r, size_t i);

/* Moves up to max elements from the head into out (an array of them);
 * an emptied ring returns to its base size. Returns how many. */
size_t cp_ring_take(cp_ring *r, void *out, size_t max);

void cp_ring_free(cp_ring *r);

#endif
