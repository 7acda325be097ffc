/* Delivery in offset order for one stream (a channel's, or the broadcast
 * stream): pure bookkeeping, no I/O, unit tested (tests/unit/test_order.c).
 *
 * A message offered with offset == last + 1 is delivered; offset <= last is
 * a duplicate (a retry, a catch-up overlapping live delivery) and dropped;
 * offset > last + 1 is held, sorted, in a bounded buffer while the caller
 * fetches the missing range from the history. Whatever comes first (the bus
 * or the fetch) fills the gap; a gap still open when the reorder window ends
 * (and no fetch is running), or when the buffer is full, is reported through
 * the sink and skipped: never silent. With a history (lim->spill) a full
 * buffer instead lets its newest message go and the fetch reads it back. A new epoch resets the stream (its
 * numbering starts again at 1; what is missing before the first message
 * seen is a gap like any other); an epoch once left is never taken back (a
 * late message of it is dropped as stale). With a history, a live message
 * of an epoch not seen yet does not switch the stream at once (it may be a
 * late one of an older history, epochs are random): its messages wait
 * aside while the caller asks the history which epoch is current
 * (order_verify_wanted, order_epoch_verified); the window plus
 * fetch_wait_ms bounds the wait (then the stream switches, as without a
 * history). A message without offset (not
 * stored: Redis was down) bypasses the order.
 *
 * Where a stream starts: with a history (lim->wait_for_base), the first
 * live messages of a stream the bridge does not know yet are held, not
 * trusted, until its position was read from the history (order_set_base,
 * from a session's greeting): a lower offset arriving second must not be
 * taken for a duplicate. When no position comes within the window (Redis
 * down), the lowest held offset starts the stream. Without a history, the
 * first message does.
 *
 * Items are the caller's (frames): the sink delivers or discards them. */
#ifndef BRIDGE_ORDER_H
#define BRIDGE_ORDER_H

#include <stdint.h>

#define ORDER_EPOCH_MAX 64

/* Epochs left behind, remembered per stream (their late messages are
 * stale). */
#define ORDER_EPOCHS_LEFT 4

typedef struct {
    int64_t offset;
    uint64_t epoch_h; /* its epoch's hash (0: none given) */
    void *item;
} order_slot;

typedef struct {
    int known;       /* last and epoch are known */
    int64_t last;    /* the last offset delivered (or the base set) */
    uint32_t gen;    /* +1 at every epoch change */
    char epoch[ORDER_EPOCH_MAX + 1];
    uint64_t epoch_h; /* order_epoch_hash(epoch): sessions key their floor by it */
    uint64_t left[ORDER_EPOCHS_LEFT]; /* hashes of epochs left, newest first */
    order_slot *held; /* sorted by offset, all > last + 1 */
    /* Messages of an epoch not seen yet, while the history is asked. */
    order_slot *pend;
    uint32_t pend_n, pend_cap;
    uint64_t pend_h;
    char pend_epoch[ORDER_EPOCH_MAX + 1];
    int64_t pend_since_ms;
    int pend_asked;
    uint32_t held_n, held_cap;
    int64_t held_since_ms; /* when the oldest open gap was seen */
    int fetching;          /* the caller asked the history for the gap */
    /* Messages up to here arrived while the buffer was full and were let
     * go (lim->spill): the history has them, the next fetch reads them. */
    int64_t spilled_to;
    int64_t fetched_to;    /* the gaps up to here were asked for once already */
    /* The running fetch ends just before the first held message (which
     * was here before the read: the history must reach it). */
    int fetch_next_held;
} order_stream;

typedef struct {
    uint32_t max_held;  /* messages held per stream */
    int64_t window_ms;  /* how long a gap may stay open */
    int64_t fetch_wait_ms; /* how long past the window a running fetch is awaited */
    int wait_for_base;  /* a history tells where unknown streams stand */
    int64_t max_jump;   /* a gap wider than this is not given up for one message
                           (0: no bound); see order_tick */
    /* A history has every sequenced message: a full buffer lets the
     * newest one go (sink->spill) and the fetch reads it back, rather
     * than giving the oldest gap up. A burst of one stream larger than the
     * buffer (a delivery batch after a sequencer takeover) is then late,
     * not lost. */
    int spill;
} order_limits;

typedef struct {
    void (*deliver)(void *ud, void *item, int64_t offset);
    void (*discard)(void *ud, void *item); /* a duplicate (counted by the caller) */
    void (*gap)(void *ud, int64_t from, int64_t to);  /* offsets from..to were lost */
    /* A message whose offset is more than max_jump past the stream and
     * that nothing confirmed: delivered as it is, the stream stays where
     * it was (one bogus offset must not make every later one a duplicate). */
    void (*beyond)(void *ud, void *item, int64_t offset);
    void (*spill)(void *ud, void *item); /* let go for room; the history has it */
    void *ud;
} order_sink;

enum {
    ORDER_DELIVERED = 0, /* delivered (and possibly held ones after it) */
    ORDER_DUPLICATE,     /* discarded */
    ORDER_HELD,          /* waits for the gap before it */
    ORDER_UNSEQUENCED,   /* no offset: delivered as is */
    ORDER_RESET,         /* a new epoch (or the first message): delivered */
    ORDER_STALE,         /* of an epoch the stream left: discarded */
    ORDER_PENDING,       /* of a new epoch: waits for its verification */
    ORDER_SPILLED,       /* the buffer was full: the history gives it back */
};

/* A hash of an epoch string (0 for NULL or ""), for cheap comparisons. */
uint64_t order_epoch_hash(const char *epoch);

/* Offers one message (offset < 0: none; epoch NULL or "": unknown).
 * Returns ORDER_*. */
int order_offer(order_stream *st, const order_limits *lim, const order_sink *sink,
                int64_t offset, const char *epoch, void *item, int64_t now_ms);

/* 1 when an entry of a history read is here already: held behind the
 * gap, or delivered by the same read's earlier entries (last_before: the
 * stream's last offset when the read's entries began). A read after a
 * spill spans the gap and the held messages; those are passed over, not
 * offered again and counted as repeats. */
int order_read_has(const order_stream *st, int64_t last_before, int64_t offset);

/* The range a fetch should read (offsets > *since, up to *to), when a gap
 * is open that was not asked for yet and no fetch runs; returns 0
 * otherwise (also while the stream waits for its position). The caller then fetches and calls order_fetch_started (also
 * when it could not: a gap is asked for once, then its window decides). */
int order_missing(const order_stream *st, int64_t *since, int64_t *to);
void order_fetch_started(order_stream *st, int64_t to, int running);

/* A fetch answered (ok: it read the history up to covered_to): a gap up to
 * covered_to that the history did not fill is lost now. */
void order_fetch_done(order_stream *st, const order_sink *sink, int ok, int64_t covered_to,
                      int64_t now_ms);

/* Reports and skips a gap whose window ended (one wider than max_jump:
 * its message goes to sink->beyond instead). Returns 1 while messages are
 * still held. */
int order_tick(order_stream *st, const order_limits *lim, const order_sink *sink,
               int64_t now_ms);

/* The stream's position from the history (epoch NULL or "": a stream
 * never written, last 0), when nothing set it yet: the messages held
 * meanwhile are released from there (those of another epoch are stale).
 * The caller sets st->fetching while such a read runs: the wait then lasts
 * the window plus fetch_wait_ms. */
void order_set_base(order_stream *st, const order_sink *sink, int64_t last, const char *epoch,
                    int64_t now_ms);

/* 1 while messages wait (behind a gap, in the history after a spill, or
 * for an epoch's verification). */
static inline int order_waiting(const order_stream *st)
{
    return st->held_n > 0 || st->pend_n > 0 || st->spilled_to > st->last;
}

/* 1 when messages of a new epoch wait and the history was not asked yet;
 * the caller asks it and calls order_verify_started. */
int order_verify_wanted(const order_stream *st);
void order_verify_started(order_stream *st);
/* The history's current epoch (ok 0: it could not be read): the messages
 * of the new epoch are taken (the stream switches) unless the history is
 * still in the stream's epoch (then they are stale and dropped). */
void order_epoch_verified(order_stream *st, const order_limits *lim, const order_sink *sink,
                          int ok, const char *epoch, int64_t now_ms);
/* A read of the history says the stream is in epoch now: switch to it (if
 * it is not the stream's, nor one left) before offering its entries. */
void order_adopt_epoch(order_stream *st, const order_limits *lim, const order_sink *sink,
                       const char *epoch, int64_t now_ms);

/* Removes the held message at offset and returns its item (NULL: none
 * held there): the caller found it bogus (the history does not have it). */
void *order_take(order_stream *st, int64_t offset);

/* Discards everything held (the stream goes away). */
void order_clear(order_stream *st, const order_sink *sink);

#endif
