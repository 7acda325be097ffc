/* A token bucket: `rate` tokens a second, at most `burst` saved up. The
 * rate and burst are the caller's (one setting covers many buckets), so a
 * bucket is 16 bytes. Not thread-safe: the caller serialises access. */
#ifndef CP_RATELIMIT_H
#define CP_RATELIMIT_H

#include <stdint.h>

typedef struct {
    double tokens;
    int64_t at_ms; /* monotonic time of the last refill */
} cp_bucket;

/* A full bucket. */
void cp_bucket_init(cp_bucket *b, double burst, int64_t now_ms);
/* Adds what accrued since the last refill, capped at burst. */
void cp_bucket_refill(cp_bucket *b, double rate, double burst, int64_t now_ms);
/* Refills, then takes one token: 1 when there was one, else 0. */
int cp_bucket_take(cp_bucket *b, double rate, double burst, int64_t now_ms);
/* The same for n tokens at once (all or none). */
int cp_bucket_take_n(cp_bucket *b, double rate, double burst, int64_t now_ms, double n);

#endif
