#include "ratelimit.h"

void cp_bucket_init(cp_bucket *b, double burst, int64_t now_ms)
{
    b->tokens = burst;
    b->at_ms = now_ms;
}

void cp_bucket_refill(cp_bucket *b, double rate, double burst, int64_t now_ms)
{
    b->tokens += (double)(now_ms - b->at_ms) * rate / 1000.0;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at_ms = now_ms;
}

int cp_bucket_take(cp_bucket *b, double rate, double burst, int64_t now_ms)
{
    return cp_bucket_take_n(b, rate, burst, now_ms, 1.0);
}

int cp_bucket_take_n(cp_bucket *b, double rate, double burst, int64_t now_ms, double n)
{
    cp_bucket_refill(b, rate, burst, now_ms);
    if (b->tokens < n)
        return 0;
    b->tokens -= n;
    return 1;
}
