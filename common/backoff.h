/* Reconnect backoff: 200 ms, doubling, capped at 5 s; back to 200 ms after
 * a success. One rule for every client that reconnects (Redis, MQTT). */
#ifndef CP_BACKOFF_H
#define CP_BACKOFF_H

#define CP_BACKOFF_FIRST_MS 200
#define CP_BACKOFF_MAX_MS 5000

typedef struct {
    int next_ms; /* 0 before the first failure: means CP_BACKOFF_FIRST_MS */
} cp_backoff;

static inline void cp_backoff_reset(cp_backoff *b) { b->next_ms = CP_BACKOFF_FIRST_MS; }

/* The delay to wait after a failure; the one after it doubles. */
static inline int cp_backoff_next(cp_backoff *b)
{
    int delay = b->next_ms > 0 ? b->next_ms : CP_BACKOFF_FIRST_MS;
    b->next_ms = delay * 2 > CP_BACKOFF_MAX_MS ? CP_BACKOFF_MAX_MS : delay * 2;
    return delay;
}

#endif
